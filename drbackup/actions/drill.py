"""``drill``: restore a backup into scratch, prove the data, time it, sign and store the report.

Flow of :func:`run_drill`, per target of the plan::

    select the backup (latest | random | point in time | id) from the repository
    open the scratch (drill/scratches.py: the plan's, drill.scratch_dsn, the target's own
        server only when opted in, else a private cluster); drop marked leftovers of crashed
        drills
    a target with base backups (or kind: physical): a physical drill instead
        (actions/drill_physical.py: base backup + WAL to the plan's point, in a server
        of its own)
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

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from drbackup.actions.backup_postgres import PgTarget
from drbackup.actions.drill_physical import drill_physical_target, wants_physical
from drbackup.actions.drill_targets import Notify, drill_bucket_target, drill_database_target
from drbackup.drill.checks import FAIL, CheckResult
from drbackup.drill.history import history_entries, rto_trend
from drbackup.drill.plan import DrillPlan, default_plan, load_plan
from drbackup.drill.record import DrillReport, TargetReport
from drbackup.drill.report import (
    ReportVerification,
    expand_output_path,
    format_for_path,
    write_report_file,
)
from drbackup.drill.report import (
    verify_report_file as verify_file,
)
from drbackup.drill.scratch import (
    ScratchServer,
    default_base_dir,
    new_drill_id,
    remove_stale_clusters,
    unmarked_clusters,
)
from drbackup.drill.scratches import Scratches
from drbackup.drill.signing import (
    fingerprint,
    load_signing_key,
    public_bytes,
    public_pem,
    sign_report,
    trusted_keys,
)
from drbackup.errors import (
    DrbackupError,
    UsageError,
)
from drbackup.repository.reports import report_key, report_target
from drbackup.sources.postgres.commands import mask_dsn
from drbackup.sources.postgres.connection import dsn_for_database

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from drbackup.actions.context import AppContext
    from drbackup.catalog import Catalog
    from drbackup.repository.repo import Repository


@dataclass
class DrillResult:
    """A finished drill: its (signed) report and where it went."""

    record: DrillReport  # the report, as drbackup reads it
    report: dict  # its JSON form: what was signed, stored in the repository and written
    stored: list[str] = field(default_factory=list)  # repository keys
    output: Path | None = None
    kept: list[str] = field(default_factory=list)  # how to reach kept scratch databases

    @property
    def failed(self) -> bool:
        return self.record.failed


def plan_for(
    app: AppContext, plan_path: str | None, targets: tuple[str, ...] = (), **overrides
) -> DrillPlan:
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
            "give a drill plan, target names or --all",
            hint="e.g. drbackup drill run app, or drbackup drill run drills/monthly.yaml",
        )
    return default_plan(list(targets), app.config, **overrides)


# -- the drill ----------------------------------------------------------------------------------


def run_drill(
    app: AppContext,
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
    targets: list[TargetReport] = []
    results: list[CheckResult] = []
    with Scratches(app.config.drill, plan, drill_id, notify) as scratches:
        for name in plan.targets:
            if name in app.config.minio:
                drilled = drill_bucket_target(
                    app, repo, plan, name, notify, bucket_workers, drill_id
                )
            elif wants_physical(repo, plan, name):
                drilled = drill_physical_target(
                    app, repo, plan, name, drill_id, notify, after_restore
                )
            else:
                drilled = drill_database_target(
                    app, repo, plan, name, scratches, drill_id, notify, after_restore
                )
            targets.append(drilled[0])
            results += drilled[1]
        kept = scratches.kept
    results += scratches.cleanup_failures
    report = DrillReport.build(
        drill_id=drill_id,
        plan=plan.name,
        started_at=started,
        finished_at=datetime.now(UTC),
        repository={"id": repo.id, "url": mask_dsn(repo.url)},
        targets=targets,
        checks=results,
    )
    key = _signing_key(app)
    result = _signed(report, key, kept)
    _store(app, repo, result)
    _write_output(plan, output, result, key)
    return result


def _signing_key(app: AppContext) -> Ed25519PrivateKey | None:
    """drill.signing_key_file's key, or None; raises ConfigError."""
    key_file = app.config.drill.signing_key_file
    return load_signing_key(key_file) if key_file else None


def _signed(report: DrillReport, key: Ed25519PrivateKey | None, kept: list[str]) -> DrillResult:
    """The result of ``report``, signed with ``key`` when there is one."""
    document = report.to_dict()
    if key is not None:
        document = sign_report(document, key)
    return DrillResult(DrillReport.from_dict(document), document, kept=kept)


# -- storing and writing ----------------------------------------------------------------------


def _store(app: AppContext, repo: Repository, result: DrillResult) -> None:
    """Repository first (the truth), then the catalog and the runs history (an index)."""
    for target in result.record.targets:
        key = report_key(target.target, result.record.drill_id)
        repo.put_document(key, result.report)
        result.stored.append(key)
    app.index(lambda catalog: _record_in_catalog(catalog, result.record))


def _record_in_catalog(catalog: Catalog, report: DrillReport) -> None:
    """The report's rows and one run per target (what ``report`` shows for the run)."""
    from drbackup.catalog.drills import record_drill

    record_drill(catalog, report)
    for target in report.targets:
        failed = [f"{check.name}: {check.summary}" for check in report.failed_checks(target.target)]
        catalog.record_run(
            "drill",
            target.target,
            report.started_at,
            report.finished_at,
            "failed" if target.status == FAIL else "ok",
            backup_id=target.backup_id,
            error="; ".join(failed)[:500] or None,
            details={"drill_id": report.drill_id, "status": target.status},
        )


def _write_output(
    plan: DrillPlan, output: str | None, result: DrillResult, key: Ed25519PrivateKey | None
) -> None:
    """Write the report file (and, signed, its detached signature ``FILE.sig``)."""
    template = output or plan.report.output
    if not template:
        return
    report = result.record
    path = expand_output_path(
        template, drill_id=report.drill_id, plan=plan.name, when=report.started_at
    )
    fmt = format_for_path(path, None if output else plan.report.format)
    text = None
    if fmt == "html":
        from drbackup.report.html import render_drill_report  # jinja2: only when asked

        text = render_drill_report(result.report, fmt)
    result.output = write_report_file(result.report, path, fmt, key, text=text)


# -- history, verification, cleanup ---------------------------------------------------------------


def drill_history(app: AppContext, target: str | None = None, limit: int | None = None) -> dict:
    """Past drills from the repository's reports (oldest first) and the RTO trend per target.

    Returns ``{"drills": [entry...], "trend": {target: {...}}, "unreadable": [key: problem]}``.
    """
    repo = app.repository()
    entries, unreadable, seen = [], [], set()
    for key in repo.report_keys(target):
        try:
            report = DrillReport.from_dict(repo.get_document(key))
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


def cleanup_scratch(app: AppContext, plan: DrillPlan | None = None, *, include_kept: bool = False):
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


def _scratch_servers(app: AppContext, plan: DrillPlan | None) -> list[tuple[str, str | None]]:
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


def public_key_of(app: AppContext, form: str = "base64") -> str:
    """The public key of ``drill.signing_key_file`` as ``base64`` (32 bytes), ``pem``
    (what openssl reads) or ``fingerprint``; raises UsageError without one."""
    path = app.config.drill.signing_key_file
    if not path:
        raise UsageError(
            "no drill.signing_key_file in the config", hint="drbackup key generate FILE"
        )
    public = public_bytes(load_signing_key(path))
    if form == "pem":
        return public_pem(public).rstrip("\n")
    if form == "fingerprint":
        return fingerprint(public)
    return base64.b64encode(public).decode()


def verify_report_file(
    app: AppContext | None,
    path: str,
    public_keys: tuple[str, ...] = (),
    key_file: str | None = None,
    signature: str | None = None,
) -> ReportVerification:
    """Verify a report file with the keys given, else the configured ones (the signing
    key's and ``drill.trusted_keys``, those it replaced).  Raises CheckFailedError naming
    what failed, UsageError when there is no key or the file cannot be read."""
    configured, earlier = None, ()
    if app is not None and not (public_keys or key_file):
        configured = app.config.drill.signing_key_file
        earlier = app.config.drill.trusted_keys
    ring = trusted_keys(public_keys, key_file, configured, earlier)
    return verify_file(path, ring, signature)
