"""A physical drill of one postgres target: base backup + WAL, to a point, proven.

Flow of :func:`drill_physical_target`::

    the restorable window and the archive lag (actions/wal_check)
    resolve the plan's point (drill/points.py): latest, random second, time, LSN, or the
        exact LSN of a logical backup taken from a temporary logical slot (fingerprint)
    scratch directory <base_dir>/<drill id> (drill/physical_scratch.py), leftovers of
        crashed drills removed first
    restore_physical into it (no server yet): the restore check (base backup fetched,
        decrypted, extracted; a corrupted or missing object is named)
    recover: a server on a free port replays the WAL to the point; the recovery check says
        where it stopped (the missing segment and the second, when it stopped early)
    per database of the restored cluster: foreign keys, sequences, assertions, amcheck;
        with a fingerprint point, also schema and tables against the logical backup, and
        the point check
    heartbeat (targets with heartbeat: true), rto by phase, rpo (archive lag)
    stop the server and remove the scratch (also on failure, Ctrl-C, SIGTERM)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from drbackup.actions.backup_postgres import PgTarget
from drbackup.actions.drill_points import FingerprintPoint, resolve_point
from drbackup.actions.heartbeat import heartbeat_database
from drbackup.actions.pitr import physical_backups
from drbackup.actions.restore_physical import recover, restore_physical
from drbackup.actions.wal_check import analyze_archive, measure_lag
from drbackup.drill import checks as c
from drbackup.drill.physical_checks import (
    check_archive_lag,
    check_heartbeat,
    check_point,
    check_recovery,
    verify_cluster,
)
from drbackup.drill.physical_scratch import PhysicalScratch
from drbackup.drill.plan import DrillPlan
from drbackup.drill.record import DatabaseRestore, Objectives, Scratch, TargetReport, Timings
from drbackup.drill.runner import DatabaseUnderTest, applicable_assertions
from drbackup.drill.scratch import remove_stale_clusters, signals_deferred
from drbackup.drill.scratches import choose_base_dir
from drbackup.errors import (
    DrbackupError,
    IntegrityError,
    ObjectNotFoundError,
    RestoreError,
    StorageError,
    StorageUnreachableError,
    UsageError,
)
from drbackup.sources.postgres.connection import connect
from drbackup.sources.postgres.dump import list_databases

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext
    from drbackup.repository.repo import Repository

Notify = Callable[[str], None]
PHYSICAL = "physical"


def wants_physical(repo: Repository, plan: DrillPlan, name: str) -> bool:
    """Whether target ``name`` gets a physical drill: ``kind: physical``, or ``auto`` with
    base backups in the repository (unless the plan names a backup by id: its kind)."""
    if plan.kind == "logical":
        return False
    if plan.kind == PHYSICAL:
        if plan.into_major is not None:
            raise UsageError(
                "a physical drill restores into the backup's own major: into_major is for "
                "logical drills",
                hint="kind: logical with into_major, or leave into_major out",
            )
        return True
    if plan.into_major is not None:
        return False  # an upgrade rehearsal restores dumps
    if plan.backup.mode == "id":
        return repo.load_manifest(repo.resolve(plan.backup.backup_id, name)).kind != "postgres"
    return bool(physical_backups(repo, name))


def drill_physical_target(
    app: AppContext,
    repo: Repository,
    plan: DrillPlan,
    name: str,
    drill_id: str,
    notify: Notify,
    after_restore: Callable[[str], None] | None = None,
) -> tuple[TargetReport, list[c.CheckResult]]:
    """The physical drill of postgres target ``name`` (see the module docstring)."""
    require_physical(repo, name)
    cfg = app.config.postgres[name]
    status = analyze_archive(repo, name)
    if plan.runs("rpo") and status.cluster is not None:
        measure_lag(app, name, status)
    point, how, fingerprint = resolve_point(repo, name, plan.point, status)
    notify(f"{name}: physical drill to {how}")
    scratch = PhysicalScratch(choose_base_dir(plan), drill_id, keep=plan.keep)
    removed = remove_stale_clusters(scratch.base_dir)
    if removed:
        notify(f"removed leftover scratch clusters: {', '.join(map(str, removed))}")
    timings = Timings(extra={"fetch_extract_s": 0.0, "recovery_s": 0.0})
    results, databases, restore = [], [], None
    try:
        scratch.prepare()
        restore, results = _restore(app, name, scratch, point, timings, plan.keep)
        if restore is not None and restore.outcome is not None and _recovered(results):
            databases, verified, seconds = _verify_all(
                app, plan, name, restore, fingerprint, after_restore
            )
            timings.verification_s = seconds  # wall time: the databases overlap
            results += [r for v in verified for r in v.results]
            if plan.runs("point") and fingerprint is not None:
                results.append(check_point(fingerprint.evidence(), results))
            results += _heartbeat(app, plan, name, restore, point)
    finally:
        results += _finish(scratch)
    restored = restore is not None and _recovered(results)
    results += _objectives(plan, cfg, status, timings, restored)
    return _info(name, plan, restore, how, databases, scratch, timings, cfg), _tagged(results, name)


def _restore(app, name, scratch, point, timings: Timings, keep: bool):
    """``(restore or None, [restore check, recovery check])``."""
    started = time.monotonic()
    try:
        restore = restore_physical(app, name, scratch.data_dir, point)
    except StorageUnreachableError:
        raise
    except (RestoreError, IntegrityError, ObjectNotFoundError, StorageError) as exc:
        timings.extra["fetch_extract_s"] = time.monotonic() - started
        return None, [c.check_restore(c.RestoreOutcome(error=exc, seconds=_since(started)))]
    scratch.restore = restore
    timings.extra["fetch_extract_s"] = restore.phases.get("fetch_extract_s", _since(started))
    extracted = c.CheckResult(
        "restore",
        c.PASS,
        f"base backup {restore.choice.manifest.backup_id} fetched, decrypted and extracted: "
        f"{restore.files} files, {restore.bytes} bytes",
        {"base_backup": restore.choice.note, "files": restore.files, "bytes": restore.bytes},
        timings.extra["fetch_extract_s"],
    )
    started, error = time.monotonic(), None
    try:
        recover(app, restore, detach=keep, run_parent=scratch.directory)
    except RestoreError as exc:
        error = exc
    timings.extra["recovery_s"] = restore.phases.get("recovery_s", _since(started))
    timings.restore_s = timings.extra["fetch_extract_s"] + timings.extra["recovery_s"]
    return restore, [extracted, check_recovery(restore.outcome, error, point)]


def _since(started: float) -> float:
    return time.monotonic() - started


def _recovered(results: list[c.CheckResult]) -> bool:
    return any(r.name == "recovery" and r.status == c.PASS for r in results)


def _verify_all(app, plan, name, restore, fingerprint: FingerprintPoint | None, after_restore):
    """Every database of the restored cluster through its checks, a few at a time
    (``verify_cluster``); returns the databases, their verifications in order, and the
    wall time of the verification."""
    with connect(restore.server.dsn()) as conn:
        names = list_databases(conn)
    target = PgTarget.from_config(name, app.config.target(name))
    databases, under_test = [], []
    for dbname in names:
        dsn = restore.server.dsn(dbname)
        if after_restore is not None:
            after_restore(dsn)
        compared = fingerprint is not None and fingerprint.database == dbname
        db = DatabaseUnderTest(
            target=name,
            database=dbname,
            scratch_database=dbname,
            dsn=dsn,
            password=None,
            expected=fingerprint.fingerprint if compared else None,
            backup=fingerprint.manifest if compared else None,
            repository=app.repository(),
            scope=_scope(target) if compared else {},
        )
        databases.append(DatabaseRestore(dbname, dbname, restored=True))
        under_test.append((db, applicable_assertions(plan, name, dbname)))
    verified, seconds = verify_cluster(under_test, plan)
    return databases, verified, seconds


def _scope(target: PgTarget) -> dict:
    return {
        "include_schemas": target.include_schemas or None,
        "exclude_schemas": target.exclude_schemas or None,
        "include_tables": target.include_tables or None,
        "exclude_tables": target.exclude_tables or None,
    }


def _heartbeat(app, plan, name: str, restore, point) -> list[c.CheckResult]:
    """With heartbeats on, a restore to a time holds the heartbeats up to it, none after."""
    cfg = app.config.postgres[name]
    if not (cfg.heartbeat and plan.runs("heartbeat") and point.kind == "time"):
        return []
    dbname = heartbeat_database(cfg.dsn)
    try:
        with connect(restore.server.dsn(dbname)) as conn:
            return [check_heartbeat(conn, point.time, cfg.heartbeat_interval)]
    except DrbackupError as exc:
        summary = f"could not read the heartbeats in {dbname}: {exc.message}"
        return [c.CheckResult("heartbeat", c.FAIL, summary, {})]


def _finish(scratch: PhysicalScratch) -> list[c.CheckResult]:
    """Stop the server and remove the scratch; a failure to do so is a failed check."""
    with signals_deferred():
        try:
            scratch.finish()
        except Exception as exc:  # noqa: BLE001 - reported as a failed check, never hidden
            message = exc.message if isinstance(exc, DrbackupError) else str(exc)
            hint = "remove it by hand, or run 'drbackup drill cleanup'"
            summary = f"scratch cluster {scratch.directory} could not be removed: {message}"
            return [c.CheckResult("cleanup", c.FAIL, summary, {"hint": hint})]
    return []


def _objectives(plan, cfg, status, timings: Timings, restored: bool) -> list[c.CheckResult]:
    timings.total_s = timings.restore_s + timings.verification_s
    results = []
    if plan.runs("rto"):
        rto = plan.rto or cfg.rto
        results.append(c.check_rto(timings.to_dict(), rto, restored=restored))
    if plan.runs("rpo"):
        window = status.to_dict()["window"]
        results.append(check_archive_lag(status.lag_seconds, status.lag_error, cfg.rpo, window))
    return results


def _tagged(results: list[c.CheckResult], name: str) -> list[c.CheckResult]:
    for result in results:
        result.target = name
    return results


def _info(name, plan, restore, how, databases, scratch, timings: Timings, cfg) -> TargetReport:
    rounded = Timings.from_dict({k: round(v, 3) for k, v in timings.to_dict().items()})
    manifest = restore.choice.manifest if restore is not None else None
    outcome = restore.outcome if restore is not None else None
    rto = plan.rto or cfg.rto
    info = TargetReport(
        target=name,
        kind=PHYSICAL,
        backup_id=manifest.backup_id if manifest else None,
        recovery_point=outcome.last_commit.isoformat() if outcome and outcome.last_commit else None,
        selection=how,
        databases=databases,
        scratch=Scratch("ephemeral", str(scratch.directory), plan.keep),
        timings=rounded,
        objectives=Objectives(rto.total_seconds(), cfg.rpo.total_seconds()),
    )
    if outcome is not None:
        info.extra["recovery"] = outcome.to_dict()
    return info


def require_physical(repo: Repository, name: str) -> None:
    """UsageError when target ``name`` has no base backup (a physical drill needs one)."""
    if not physical_backups(repo, name):
        raise UsageError(
            f"no base backup of target {name} in {repo.url}: a physical drill needs one",
            hint=f"drbackup backup postgres {name} --physical",
        )
