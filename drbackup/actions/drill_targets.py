"""One target of a drill: a database target restored into scratch and verified, or a
bucket target's snapshot restored into scratch buckets and read back (``drill/bucket.py``).

Each returns the target's part of the report (:class:`TargetReport`) and its checks; the
drill (``actions/drill.py``) runs them in turn and builds, signs and stores the report.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from drbackup.actions.backup_postgres import PgTarget
from drbackup.actions.restore_postgres import restore_postgres, select_backup
from drbackup.actions.snapshot_minio import minio_target
from drbackup.drill import checks as c
from drbackup.drill.bucket import run_bucket_drill
from drbackup.drill.early import EarlyHasher
from drbackup.drill.plan import BackupChoice, DrillPlan
from drbackup.drill.record import BucketRestore, DatabaseRestore, Objectives, TargetReport, Timings
from drbackup.drill.runner import (
    DatabaseUnderTest,
    Verification,
    applicable_assertions,
    verify_database,
)
from drbackup.drill.scratch import scratch_database_name
from drbackup.drill.scratches import Scratches
from drbackup.drill.upgrade import backup_major, restore_majors
from drbackup.errors import (
    DrbackupError,
    IntegrityError,
    ObjectNotFoundError,
    RestoreError,
    SourceError,
    SourceUnreachableError,
    StorageError,
    StorageUnreachableError,
    UsageError,
)
from drbackup.sources.buckets.client import BucketClient
from drbackup.sources.buckets.index import snapshot_buckets

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext
    from drbackup.repository.repo import Repository

Notify = Callable[[str], None]
Drilled = tuple[TargetReport, list[c.CheckResult]]


def drill_database_target(
    app: AppContext,
    repo: Repository,
    plan: DrillPlan,
    name: str,
    scratches: Scratches,
    drill_id: str,
    notify: Notify,
    after_restore: Callable[[str], None] | None,
) -> Drilled:
    """Restore each database of the selected backup of postgres target ``name`` into its
    scratch database and verify it; then rto and rpo as the plan says."""
    target = PgTarget.from_config(name, app.config.target(name))
    cfg = app.config.postgres[name]
    drill_time = datetime.now(UTC)
    manifest, how, newest = _select(repo, name, plan.backup, "postgres")
    notify(f"{name}: restoring backup {manifest.backup_id} ({how})")
    scratch = scratches.for_target(
        name, target.dsn, target.password, manifest.meta.get("server_version_num")
    )
    dumps = [i for i in manifest.items if i.type == "pg_dump"]
    results, databases, timings = [], [], Timings()
    for index, item in enumerate(dumps):
        dbname = scratch_database_name(
            scratch.prefix, name, drill_id, index + 1 if len(dumps) > 1 else 0
        )
        outcome, verification = _drill_database(
            app, plan, target, cfg, manifest, item, scratch, dbname, notify, after_restore
        )
        databases.append(DatabaseRestore(item.name, dbname, restored=outcome.error is None))
        _add_timings(timings, outcome, verification)
        results.append(_tag(c.check_restore(outcome), name, item.name))
        results += verification.results if verification else []
    timings.total_s = timings.restore_s + timings.verification_s
    rto = plan.rto or cfg.rto
    if plan.runs("rto"):
        restored = bool(dumps) and all(d.restored for d in databases)
        results.append(_tag(c.check_rto(timings.to_dict(), rto, restored=restored), name))
    if plan.runs("rpo"):
        selected, newest_point = manifest.recovery_time, newest.recovery_time
        results.append(_tag(c.check_rpo(selected, newest_point, drill_time, cfg.rpo, how), name))
    info = TargetReport(
        target=name,
        backup_id=manifest.backup_id,
        recovery_point=manifest.recovery_point,
        selection=how,
        databases=databases,
        scratch=scratch.describe(plan.keep),
        timings=_rounded(timings),
        objectives=Objectives(rto.total_seconds(), cfg.rpo.total_seconds()),
        extra={"postgresql": restore_majors(manifest, scratch.major, plan.into_major)},
    )
    return info, results


def drill_bucket_target(
    app: AppContext,
    repo: Repository,
    plan: DrillPlan,
    name: str,
    notify: Notify,
    workers: int,
    drill_id: str,
) -> Drilled:
    """The bucket drill of minio target ``name``.

    Restore, checksums, objects, bytes and cleanup always run; rto and rpo as the plan says.
    """
    cfg = minio_target(app, name)
    repo.keyring.require(read=True)
    manifest, how, _newest = _select(repo, name, plan.backup, "bucket")
    if manifest.kind != "bucket":
        raise UsageError(
            f"backup {manifest.backup_id} of {name} is a {manifest.kind} backup, "
            "not a bucket snapshot"
        )
    notify(f"{name}: restoring snapshot {manifest.backup_id} ({how}) into scratch buckets")
    rto = plan.rto or cfg.rto
    client = BucketClient.from_target(name, cfg, max_connections=workers + 4)
    drilled = run_bucket_drill(
        repo,
        client,
        manifest,
        rto_s=rto.total_seconds(),
        rpo_s=cfg.rpo.total_seconds(),
        how=how,
        workers=workers,
        drill_id=drill_id,
    )
    if drilled.stale_removed:
        removed = ", ".join(drilled.stale_removed)
        notify(f"removed leftover scratch buckets of earlier drills: {removed}")
    results = [
        _tag(check, name)
        for check in drilled.checks
        if check.name not in ("rto", "rpo") or plan.runs(check.name)
    ]
    scratch_buckets = zip(snapshot_buckets(manifest), drilled.scratch_buckets, strict=True)
    info = TargetReport(
        target=name,
        kind="bucket",
        backup_id=manifest.backup_id,
        recovery_point=manifest.recovery_point,
        selection=how,
        buckets=[BucketRestore(bucket, scratch) for bucket, scratch in scratch_buckets],
        stale_scratch_removed=drilled.stale_removed,
        timings=_rounded(Timings.from_dict(drilled.timings)),
        objectives=Objectives(rto.total_seconds(), cfg.rpo.total_seconds()),
    )
    return info, results


def _rounded(timings: Timings) -> Timings:
    return Timings.from_dict({k: round(v, 3) for k, v in timings.to_dict().items()})


def _tag(result: c.CheckResult, target: str, database: str | None = None) -> c.CheckResult:
    result.target, result.database = target, database
    return result


def _add_timings(timings: Timings, outcome: c.RestoreOutcome, verification) -> None:
    timings.restore_s += outcome.seconds
    if outcome.run is not None:
        phases = outcome.run.phases
        timings.fetch_decrypt_s += outcome.run.fetch_decrypt_s
        timings.pre_data_s += phases.get("pre_data", 0.0)
        timings.data_s += phases.get("data", 0.0)
        timings.post_data_s += phases.get("post_data", 0.0)
    if verification is not None:
        timings.verification_s += verification.seconds


def _drill_database(
    app: AppContext, plan, target, cfg, manifest, item, scratch, dbname, notify, after_restore
):
    """Restore one database of the backup into ``dbname`` and verify it."""
    scratch.claim(dbname)
    into = scratch.server.dsn(dbname)
    expected = item.meta.get("fingerprint")
    early = None
    if _hash_early(plan, expected, after_restore):
        early = EarlyHasher(into, scratch.password, expected)
        early.start()
    try:
        outcome = _restore(app, target, cfg, manifest, item, scratch, dbname)
    except BaseException:
        if early is not None:
            early.abandon()  # its session ends with the scratch database
        raise
    verified = early.finish() if early is not None else set()
    if outcome.error is not None:
        notify(
            f"{target.name}: restore of {item.name} failed: {outcome.error.message.splitlines()[0]}"
        )
    if not scratch.server.exists(dbname):
        return outcome, None
    if after_restore is not None:
        after_restore(into)
    notify(f"{target.name}: verifying {item.name} in {dbname}")
    db = DatabaseUnderTest(
        target=target.name,
        database=item.name,
        scratch_database=dbname,
        dsn=into,
        password=scratch.password,
        expected=expected,
        verified_early=verified,
        early_seconds=early.seconds if early is not None else 0.0,
        backup=manifest,
        repository=app.repository(),
        source_major=backup_major(manifest),
        scope={
            "include_schemas": target.include_schemas or None,
            "exclude_schemas": target.exclude_schemas or None,
            "include_tables": target.include_tables or None,
            "exclude_tables": target.exclude_tables or None,
        },
    )
    assertions = applicable_assertions(plan, target.name, item.name)
    try:
        return outcome, verify_database(db, plan, assertions)
    except DrbackupError as exc:  # e.g. the restored database refuses connections
        failure = c.CheckResult(
            "verification", c.FAIL, f"could not verify {dbname}: {exc.message}", {}
        )
        return outcome, Verification([_tag(failure, target.name, item.name)], 0.0)


def _hash_early(plan, expected, after_restore) -> bool:
    # A hook may change the data after the restore: then only the final pass counts.
    full = bool(expected) and expected.get("level") == "full"
    return full and plan.hash_during_restore and plan.runs("tables") and after_restore is None


def _restore(app: AppContext, target, cfg, manifest, item, scratch, dbname) -> c.RestoreOutcome:
    """Create and mark scratch database ``dbname``, then restore ``item`` into it."""
    started = time.monotonic()
    try:
        scratch.create(dbname, encoding=item.meta.get("encoding"))
    except SourceUnreachableError:
        raise
    except SourceError as exc:  # e.g. it exists: then it is not ours, and is left alone
        return c.RestoreOutcome(error=exc, seconds=time.monotonic() - started)
    try:
        result = restore_postgres(
            app,
            target.name,
            scratch.server.dsn(dbname),
            backup_id=manifest.backup_id,
            database=item.name,
            jobs=cfg.jobs,
            create=False,
            with_globals=scratch.with_globals,
            no_owner=scratch.no_owner,
            password=scratch.password,
        )
    except StorageUnreachableError:
        raise
    except (RestoreError, IntegrityError, ObjectNotFoundError, StorageError) as exc:
        return c.RestoreOutcome(error=exc, seconds=time.monotonic() - started)
    return c.RestoreOutcome(run=result.run, seconds=time.monotonic() - started)


def _select(repo, target: str, choice: BackupChoice, kind: str):
    """``(manifest, how it was chosen, newest manifest)`` among the target's backups of
    ``kind`` (a database drill restores dumps: base backups are passed over)."""
    refs = repo.list_refs(target)
    if not refs:
        raise UsageError(
            f"no backups of target {target} in {repo.url}", hint="'drbackup list' shows what exists"
        )
    if choice.mode == "random":
        manifest = _random_of_kind(repo, refs, kind)
        how = f"random backup among {len(refs)}"
    else:
        selection = select_backup(
            repo,
            target,
            backup_id=choice.backup_id if choice.mode == "id" else None,
            point_in_time=choice.point_in_time if choice.mode == "point_in_time" else None,
            kind=kind,
        )
        manifest, how = selection.manifest, selection.note
    newest = select_backup(repo, target, kind=kind).manifest
    return manifest, how, newest


def _random_of_kind(repo, refs, kind: str):
    """A uniformly random backup of ``kind`` among the target's backups."""
    shuffled = list(refs)
    random.SystemRandom().shuffle(shuffled)
    for ref in shuffled:
        manifest = repo.load_manifest(ref)
        if manifest.kind == kind:
            return manifest
    raise UsageError(f"no {kind} backups of target {refs[0].target}")
