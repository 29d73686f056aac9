"""``drill``: restore a backup into scratch, prove the data, time it, sign and store the report.

Flow of :func:`run_drill`, per target of the plan::

    select the backup (latest | random | point in time | id) from the repository
    open the scratch (drill/scratches.py: the plan's, drill.scratch_dsn, the target's own
        server only when opted in, else a private cluster); drop marked leftovers of crashed
        drills
    per database of the backup: claim <prefix><target>_<drill id>, create it with the
        drill's marker, restore_postgres into it, verify it (drill.runner: schema, tables,
        foreign keys, sequences, assertions, amcheck)
    rto and rpo checks
    drop what the drill created (also on failure and Ctrl-C/SIGTERM), unless kept
A minio target is a bucket drill instead (drill/bucket.py): its selected snapshot restored
into scratch buckets on the target's server, every object read back and compared (checksums,
objects, bytes), rto and rpo; the scratch buckets are always removed.  Its checks go into the
same report as the postgres targets'.
then the report: built, signed (drill.signing_key_file), stored in the repository as
``reports/<target>/<drill id>`` (the truth) and in the catalog (an index), written to a file.

A drill never raises for what its checks find; callers look at ``DrillResult.failed``.
It raises for what prevents a drill (no backup, an unreachable scratch server, bad plan).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from drbackup.actions.backup_postgres import PgTarget
from drbackup.actions.restore_postgres import parse_time, restore_postgres, select_backup
from drbackup.actions.snapshot_minio import minio_target
from drbackup.drill import checks as c
from drbackup.drill.bucket import run_bucket_drill
from drbackup.drill.early import EarlyHasher
from drbackup.drill.history import history_entries, rto_trend
from drbackup.drill.plan import BackupChoice, DrillPlan, default_plan, load_plan
from drbackup.drill.report import (
    build_report,
    expand_output_path,
    failed_checks,
    format_for_path,
    write_report_file,
)
from drbackup.drill.runner import (
    DatabaseUnderTest,
    Verification,
    applicable_assertions,
    verify_database,
)
from drbackup.drill.scratch import (
    ScratchServer,
    default_base_dir,
    new_drill_id,
    remove_stale_clusters,
    scratch_database_name,
    unmarked_clusters,
)
from drbackup.drill.scratches import Scratches
from drbackup.drill.signing import load_signing_key, sign_report
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
from drbackup.repository.reports import report_key, report_target
from drbackup.sources.buckets.client import BucketClient
from drbackup.sources.buckets.index import snapshot_buckets
from drbackup.sources.postgres.commands import mask_dsn
from drbackup.sources.postgres.connection import dsn_for_database

Notify = Callable[[str], None]


@dataclass
class DrillResult:
    """A finished drill: its (signed) report and where it went."""

    report: dict
    stored: list[str] = field(default_factory=list)  # repository keys
    output: Path | None = None
    kept: list[str] = field(default_factory=list)  # how to reach kept scratch databases
    warnings: list[str] = field(default_factory=list)  # storing/catalog problems

    @property
    def failed(self) -> bool:
        return self.report["status"] == c.FAIL


def plan_for(app, plan_path: str | None, targets: tuple[str, ...] = (), **overrides) -> DrillPlan:
    """The plan file's plan (restricted to ``targets`` if given), or the default plan."""
    if plan_path:
        plan = load_plan(plan_path, app.config)
        if targets:
            unknown = [t for t in targets if t not in plan.targets]
            if unknown:
                raise UsageError(
                    f"target {unknown[0]} is not in plan {plan.name}",
                    hint=f"the plan has: {', '.join(plan.targets)}",
                )
            plan = plan.model_copy(update={"targets": list(targets)})
        return plan.with_overrides(**overrides)
    if not targets:
        raise UsageError(
            "give a drill plan or --target", hint="e.g. drbackup drill run --target app"
        )
    return default_plan(list(targets), app.config, **overrides)


# -- the drill ----------------------------------------------------------------------------------


def run_drill(
    app,
    plan: DrillPlan,
    *,
    output: str | None = None,
    notify: Notify | None = None,
    after_restore: Callable[[str], None] | None = None,
    bucket_workers: int = 8,
) -> DrillResult:
    """Run ``plan``; returns the result whatever the checks found.

    ``output`` overrides the plan's report file.  ``notify`` receives progress lines.
    ``after_restore(dsn)`` runs after each database is restored, before its checks (for
    tests and extensions that need to act on the restored data).  ``bucket_workers``:
    objects restored and read back at once by the bucket drill of a minio target.
    Raises DrbackupError for what prevents the drill; KeyboardInterrupt after cleaning up.
    """
    notify = notify or (lambda line: None)
    drill_id = new_drill_id()
    started = datetime.now(UTC)
    notify(f"drill {drill_id}: {', '.join(plan.targets)} ({plan.backup.describe()})")
    repo = app.repository()
    targets, results, kept = [], [], []
    with Scratches(app.config.drill, plan, drill_id, notify) as scratches:
        for name in plan.targets:
            if name in app.config.minio:
                info, checks = _drill_bucket_target(
                    app, repo, plan, name, notify, bucket_workers, drill_id
                )
            else:
                info, checks = _drill_target(
                    app, repo, plan, name, scratches, drill_id, notify, after_restore
                )
            targets.append(info)
            results += checks
        kept = scratches.kept
    results += scratches.cleanup_failures
    report = build_report(
        drill_id=drill_id,
        plan=plan.name,
        started_at=started,
        finished_at=datetime.now(UTC),
        repository={"id": repo.id, "url": mask_dsn(repo.url)},
        targets=targets,
        checks=[r.to_dict() for r in results],
    )
    key_file = app.config.drill.signing_key_file
    if key_file:
        report = sign_report(report, load_signing_key(key_file))
    result = DrillResult(report, kept=kept)
    _store(app, repo, result)
    _write_output(plan, output, result)
    return result


def _drill_target(app, repo, plan, name, scratches, drill_id, notify, after_restore):
    target = PgTarget.from_config(name, app.config.target(name))
    cfg = app.config.postgres[name]
    drill_time = datetime.now(UTC)
    manifest, how, newest = _select(repo, name, plan.backup, "postgres")
    notify(f"{name}: restoring backup {manifest.backup_id} ({how})")
    scratch = scratches.for_target(
        name, target.dsn, target.password, manifest.meta.get("server_version_num")
    )
    dumps = [i for i in manifest.items if i.type == "pg_dump"]
    results, databases = [], []
    timings = dict.fromkeys(
        ("restore_s", "fetch_decrypt_s", "pre_data_s", "data_s", "post_data_s", "verification_s"),
        0.0,
    )
    restored_all = True
    for index, item in enumerate(dumps):
        dbname = scratch_database_name(
            scratch.prefix, name, drill_id, index + 1 if len(dumps) > 1 else 0
        )
        outcome, verification = _drill_database(
            app, plan, target, cfg, manifest, item, scratch, dbname, notify, after_restore
        )
        restored_all &= outcome.error is None
        databases.append(
            {"database": item.name, "scratch_database": dbname, "restored": outcome.error is None}
        )
        _add_timings(timings, outcome, verification)
        results.append(_tag(c.check_restore(outcome), name, item.name))
        results += verification.results if verification else []
    timings["total_s"] = timings["restore_s"] + timings["verification_s"]
    rto = plan.rto or cfg.rto
    if plan.runs("rto"):
        results.append(_tag(c.check_rto(timings, rto, restored=restored_all and bool(dumps)), name))
    if plan.runs("rpo"):
        selected_point = parse_time(manifest.recovery_point)
        newest_point = parse_time(newest.recovery_point)
        results.append(
            _tag(c.check_rpo(selected_point, newest_point, drill_time, cfg.rpo, how), name)
        )
    info = {
        "target": name,
        "backup_id": manifest.backup_id,
        "recovery_point": manifest.recovery_point,
        "selection": how,
        "databases": databases,
        "scratch": scratch.describe(plan.keep),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "objectives": {"rto_s": rto.total_seconds(), "rpo_s": cfg.rpo.total_seconds()},
    }
    return info, results


def _drill_bucket_target(app, repo, plan, name, notify, workers, drill_id):
    """The bucket drill of minio target ``name``: ``(target info, checks)`` for the report.

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
        notify(
            f"removed leftover scratch buckets of earlier drills: {', '.join(drilled.stale_removed)}"
        )
    results = [
        _tag(check, name)
        for check in drilled.checks
        if check.name not in ("rto", "rpo") or plan.runs(check.name)
    ]
    timings = dict.fromkeys(("fetch_decrypt_s", "pre_data_s", "data_s", "post_data_s"), 0.0)
    timings.update(drilled.timings)
    info = {
        "target": name,
        "kind": "bucket",
        "backup_id": manifest.backup_id,
        "recovery_point": manifest.recovery_point,
        "selection": how,
        "databases": [],
        "buckets": [
            {"bucket": bucket, "scratch_bucket": scratch}
            for bucket, scratch in zip(
                snapshot_buckets(manifest), drilled.scratch_buckets, strict=True
            )
        ],
        "stale_scratch_removed": drilled.stale_removed,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "objectives": {"rto_s": rto.total_seconds(), "rpo_s": cfg.rpo.total_seconds()},
    }
    return info, results


def _tag(result: c.CheckResult, target: str, database: str | None = None) -> c.CheckResult:
    result.target, result.database = target, database
    return result


def _add_timings(timings: dict, outcome: c.RestoreOutcome, verification) -> None:
    timings["restore_s"] += outcome.seconds
    if outcome.run is not None:
        phases = outcome.run.phases
        timings["fetch_decrypt_s"] += outcome.run.fetch_decrypt_s
        timings["pre_data_s"] += phases.get("pre_data", 0.0)
        timings["data_s"] += phases.get("data", 0.0)
        timings["post_data_s"] += phases.get("post_data", 0.0)
    if verification is not None:
        timings["verification_s"] += verification.seconds


def _drill_database(app, plan, target, cfg, manifest, item, scratch, dbname, notify, after_restore):
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


def _restore(app, target, cfg, manifest, item, scratch, dbname) -> c.RestoreOutcome:
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


# -- storing and writing ----------------------------------------------------------------------


def _store(app, repo, result: DrillResult) -> None:
    """Repository first (the truth), then the catalog and the runs history (an index)."""
    report = result.report
    for target in report["targets"]:
        key = report_key(target["target"], report["drill_id"])
        repo.put_document(key, report)
        result.stored.append(key)
    try:
        from drbackup.catalog.drills import record_drill

        catalog = app.catalog
        record_drill(catalog, report)
        for target in report["targets"]:
            failed = [
                f"{check['name']}: {check['summary']}"
                for check in failed_checks(report)
                if check["target"] == target["target"]
            ]
            catalog.record_run(
                "drill",
                target["target"],
                datetime.fromisoformat(report["started_at"]),
                datetime.fromisoformat(report["finished_at"]),
                "failed" if target["status"] == c.FAIL else "ok",
                backup_id=target.get("backup_id"),
                error="; ".join(failed)[:500] or None,  # what report shows for the run
                details={"drill_id": report["drill_id"], "status": target["status"]},
            )
    except Exception as exc:  # noqa: BLE001 - the catalog is an index; the repository has it
        result.warnings.append(f"catalog not updated: {exc}")


def _write_output(plan: DrillPlan, output: str | None, result: DrillResult) -> None:
    template = output or plan.report.output
    if not template:
        return
    report = result.report
    path = expand_output_path(
        template,
        drill_id=report["drill_id"],
        plan=plan.name,
        when=datetime.fromisoformat(report["started_at"]),
    )
    fmt = format_for_path(path, None if output else plan.report.format)
    result.output = write_report_file(report, path, fmt)


# -- history, verification, cleanup ---------------------------------------------------------------


def drill_history(app, target: str | None = None, limit: int | None = None) -> dict:
    """Past drills from the repository's reports (oldest first) and the RTO trend per target.

    Returns ``{"drills": [entry...], "trend": {target: {...}}, "unreadable": [key: problem]}``.
    """
    repo = app.repository()
    entries, unreadable, seen = [], [], set()
    for key in repo.report_keys(target):
        try:
            report = repo.get_document(key)
        except DrbackupError as exc:
            unreadable.append(f"{key}: {exc.message}")
            continue
        key_target = report_target(key)
        for entry in history_entries(report):
            if entry["target"] == key_target and (entry["drill_id"], key_target) not in seen:
                seen.add((entry["drill_id"], key_target))
                entries.append(entry)
    # Drill ids have one-second resolution; the start time orders drills within a second.
    entries.sort(key=lambda e: (e["started_at"], e["drill_id"], e["target"]))
    trend = rto_trend(entries)
    if limit:
        entries = entries[-limit:]
    return {"drills": entries, "trend": trend, "unreadable": unreadable}


@dataclass
class ScratchCleanup:
    """What ``drill cleanup`` removed, and what looks like scratch but is not provably a
    drill's (no marker for its name): left alone, named for the user."""

    removed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def cleanup_scratch(app, plan: DrillPlan | None = None, *, include_kept: bool = False):
    """Remove leftover scratch databases and clusters (and kept ones with ``include_kept``).

    Looks where drills would restore: the plan's scratch, ``drill.scratch_dsn``, the
    targets' own servers with ``drill.scratch_on_source_server``; and the ephemeral cluster
    directories.  Only what carries a drill's marker for its own name is removed.
    Returns a :class:`ScratchCleanup`.
    """
    prefix = app.config.drill.scratch_prefix
    done = ScratchCleanup()
    for dsn, password in _scratch_servers(app, plan):
        server = ScratchServer(dsn, password, prefix).open()
        try:
            dropped = server.remove_leftovers(include_kept=include_kept)
            done.removed += [f"database {n} on {server.shown}" for n in dropped]
            done.left += [f"database {n} on {server.shown}" for n in server.unmarked()]
        finally:
            server.close()
    bases = {default_base_dir()}
    if plan is not None and plan.scratch is not None and plan.scratch.base_dir:
        bases.add(plan.scratch.base_dir)
    for base in sorted(bases):
        removed = remove_stale_clusters(base, include_kept=include_kept)
        done.removed += [f"cluster {p}" for p in removed]
        done.left += [f"cluster directory {p}" for p in unmarked_clusters(base)]
    return done


def _scratch_servers(app, plan) -> list[tuple[str, str | None]]:
    if plan is not None and plan.scratch is not None:
        if plan.scratch.server:
            return [(plan.scratch.server, None)]
        if plan.scratch.ephemeral:
            return []
    if app.config.drill.scratch_dsn:
        return [(app.config.drill.scratch_dsn, None)]
    if not app.config.drill.scratch_on_source_server:
        return []  # drills restore into private clusters: no server holds their scratch
    servers = {}
    names = plan.targets if plan is not None else list(app.config.postgres)
    for name in (n for n in names if n in app.config.postgres):  # minio: scratch buckets
        target = PgTarget.from_config(name, app.config.postgres[name])
        servers.setdefault(dsn_for_database(target.dsn, "postgres"), target.password)
    return list(servers.items())


def public_key_of(app) -> str:
    """The base64 public key of ``drill.signing_key_file``; raises UsageError without one."""
    import base64

    from drbackup.drill.signing import public_bytes

    path = app.config.drill.signing_key_file
    if not path:
        raise UsageError(
            "no drill.signing_key_file in the config", hint="drbackup key generate FILE"
        )
    return base64.b64encode(public_bytes(load_signing_key(path))).decode()
