"""``report``: the health report of every target, written and sent.

:func:`gather_report` reads the facts: manifests and drill reports from the repository (the
truth), WAL archive state (``actions/wal_check.py``), failed runs and damaged backups from
the catalog; ``report/health.py`` applies the rules, ``report/render.py`` renders, and
:func:`report_and_notify` writes the result and sends it (``drbackup/notify.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from drbackup import notify as notifications
from drbackup.actions.snapshot_versions import EVENTS_KIND
from drbackup.drill.record import DrillReport, TargetReport
from drbackup.errors import DrbackupError, EncryptionKeyError, StorageUnreachableError
from drbackup.report.health import (
    FAILED_RUNS_WINDOW,
    TREND_DRILLS,
    BackupFact,
    DrillFact,
    HealthReport,
    RepositoryFacts,
    TargetFacts,
    WalFacts,
    build_report,
)
from drbackup.report.render import render, write_atomic
from drbackup.sources.buckets.versions import bucket_guarantees

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext
    from drbackup.catalog import Catalog
    from drbackup.config import Config
    from drbackup.repository.repo import Repository


def report_and_notify(
    app: AppContext,
    *,
    targets: list[str] | None = None,
    fmt: str = "text",
    output: str | None = None,
    notify: str | None = "never",
    require_destinations: bool = False,
    show: Callable[[str], None] | None = None,
) -> HealthReport:
    """Gather the report; write it to ``output`` (atomically) in ``fmt``, or hand the text
    to ``show``; then notify when ``notify`` is ``always``, or ``problems`` and the status
    is not OK (nothing when no destination is configured: the daemon's default schedule
    works without one).

    Raises UsageError for an unknown target and, with ``require_destinations``, ConfigError
    when no destination is configured: both before any work.  Raises NotifyError if a
    destination failed (after trying all of them, and after the report was written).
    """
    for name in targets or ():
        app.config.target(name)  # unknown names fail before any work
    destinations = notifications.destinations_from_config(app.config, required=require_destinations)
    report = gather_report(app, targets)
    if output:
        write_atomic(output, render_report(app, report, fmt))
    elif show is not None:
        show(render_report(app, report, fmt))
    if destinations and (notify == "always" or (notify == "problems" and report.exit_code)):
        notifications.send_report(destinations, report)
    return report


def render_report(app: AppContext, report: HealthReport, fmt: str) -> str:
    """``report`` in ``fmt``: ``report/render.py``'s formats, or ``html``: the status page as
    one file, which also reads the catalog's history and each target's last drill report."""
    if fmt != "html":
        return render(report, fmt)
    from drbackup.report.status import html_report  # jinja2: only when asked

    return html_report(app, report)


def notify_failure(config: Config, job: str, kind: str, error: str) -> None:
    """Send a failed daemon job to the destinations, when there are any and the config's
    ``notifications.on_failure`` wants it.  Raises NotifyError."""
    destinations = notifications.destinations_from_config(config)
    if destinations and notifications.notify_failures(config):
        notifications.send(destinations, notifications.failure_message(job, kind, error))


# -- reading the facts ------------------------------------------------------------------------


def gather_report(
    app: AppContext, targets: list[str] | None = None, now: datetime | None = None
) -> HealthReport:
    """Read the repository and the catalog for ``targets`` (default: every target)."""
    now = now or datetime.now(UTC)
    names = targets or list(app.config.targets)
    configs = {name: app.config.target(name) for name in names}
    facts = [TargetFacts(name, type(cfg).kind, cfg.rpo, cfg.rto) for name, cfg in configs.items()]
    repository, repo = _open_repository(app)
    if repo is None:
        return build_report(repository, facts, now)
    catalog = _catalog(app)
    damaged = _damaged_backups(catalog)
    try:
        for fact in facts:
            _read_backups(repo, fact, damaged)
            if fact.kind == "postgres":
                _read_wal(app, repo, fact)
            if fact.kind == "minio":
                _read_history(repo, fact, events=configs[fact.name].events_token is not None)
            fact.drills = read_drills(repo, fact.name)
            _read_runs(catalog, fact, now)
        repository.size = repo.stored_bytes()
    except DrbackupError as exc:  # lost the repository half-way
        repository.reachable, repository.error = False, exc.message
    return build_report(repository, facts, now)


def _open_repository(app: AppContext):
    url = _safe_url(app)
    try:
        repo = app.repository()
    except EncryptionKeyError as exc:
        return RepositoryFacts(url, True, exc.message, wrong_key=True), None
    except DrbackupError as exc:
        return RepositoryFacts(url, False, exc.message), None
    return RepositoryFacts(repo.url, True, id=repo.id), repo


def _safe_url(app: AppContext) -> str:
    try:
        return app.storage.url
    except DrbackupError:
        return str(app.config.repository.url)


def _catalog(app: AppContext) -> Catalog | None:
    try:
        return app.catalog
    except DrbackupError:
        return None


def _damaged_backups(catalog) -> set[str]:
    if catalog is None:
        return set()
    with contextlib.suppress(DrbackupError):
        return {b.backup_id for b in catalog.list_backups() if b.status != "ok"}
    return set()


def _read_backups(repo, fact: TargetFacts, damaged: set[str]) -> None:
    refs = repo.list_refs(fact.name)
    fact.restore_points = len(refs)
    fact.newest = _first_readable(repo, reversed(refs), fact, damaged)
    fact.oldest = _first_readable(repo, refs, fact, set()) if refs else None


EVENTS_LOOKBACK = 200  # manifests read back for the newest snapshot and event capture


def _read_history(repo, fact: TargetFacts, *, events: bool) -> None:
    """Per bucket of the newest snapshot, the history a restore reaches (docs/buckets.md);
    with event capture, the newest capture's lag and what reconciliation found missed."""
    captured = snapshot = None
    for ref in list(reversed(repo.list_refs(fact.name)))[:EVENTS_LOOKBACK]:
        m = repo.load_manifest(ref)
        if m.kind == EVENTS_KIND:
            captured = captured or m
        elif m.kind == "bucket":
            snapshot = snapshot or m
        if snapshot and (captured or not events):
            break
    if snapshot is not None:
        fact.history = bucket_guarantees(snapshot)
        fact.events = _events_facts(snapshot, captured)


def _events_facts(snapshot, captured) -> dict:
    missed = {}
    for bucket, seen in (snapshot.meta.get("buckets") or {}).items():
        found = ((seen or {}).get("history") or {}).get("missed_by_events") or {}
        if found.get("count"):
            missed[bucket] = found["count"]
    facts = {"snapshot": snapshot.backup_id, "missed": missed}
    if captured is not None:
        facts.update(captured_at=captured.recovery_point, lag_s=captured.meta.get("lag_s", 0.0))
    return facts


def _first_readable(repo, refs, fact: TargetFacts, skip: set[str]) -> BackupFact | None:
    for ref in refs:
        if ref.backup_id in skip:
            continue
        try:
            m = repo.load_manifest(ref)
        except StorageUnreachableError:
            raise  # the storage is failing now: nothing is known about this manifest
        except DrbackupError as exc:
            if f"{ref.backup_id}: {exc.message}" not in fact.unreadable:
                fact.unreadable.append(f"{ref.backup_id}: {exc.message}")
            continue
        point = (m.recovery_time or m.started_time).astimezone(UTC)
        return BackupFact(m.backup_id, point, m.size, m.stored_size)
    return None


def _read_wal(app: AppContext, repo, fact: TargetFacts) -> None:
    """The WAL facts of a target that archives WAL (none for dumps-only targets)."""
    from drbackup.actions.wal_check import analyze_archive, measure_lag

    try:
        status = analyze_archive(repo, fact.name)
    except DrbackupError as exc:
        fact.wal_error = exc.message
        return
    if status.cluster is None:
        return
    measure_lag(app, fact.name, status)
    fact.wal = WalFacts(
        status.cluster,
        status.oldest,
        status.newest,
        tuple(status.gaps),
        tuple(status.breaks),
        status.lag_seconds,
        status.lag_bytes,
        status.lag_error,
        status.base_backups,
        status.restorable,
        status.slot.to_dict() if status.slot else None,
        status.slot_max_retained,
    )


def read_drills(repo: Repository, target: str, limit: int = TREND_DRILLS) -> list[DrillFact]:
    """The target's drills from its reports in the repository: the newest ``limit``, plus
    the newest passing one if older, oldest first.  Unreadable reports are skipped."""
    keys = repo.report_keys(target, newest_first=True)
    found: list[DrillFact] = []
    for key in keys:
        if len(found) >= limit and any(d.passed for d in found):
            break
        try:
            report = DrillReport.from_dict(repo.get_document(key))
        except StorageUnreachableError:
            raise
        except DrbackupError:
            continue
        drilled = report.target(target)
        if drilled is not None:
            found.append(_drill_fact(report, drilled))
    return sorted(found, key=lambda d: (d.started_at, d.drill_id))


def _drill_fact(report: DrillReport, target: TargetReport) -> DrillFact:
    return DrillFact(
        drill_id=report.drill_id,
        started_at=report.started_at,
        status=target.status or report.status,
        restore_s=target.timings.total_s if target.timings else None,
        failed_checks=tuple(c.name for c in report.failed_checks(target.target)),
        backup_id=target.backup_id,
        kind=target.kind or "logical",
    )


def _read_runs(catalog, fact: TargetFacts, now: datetime) -> None:
    """The target's failed, interrupted and refused runs of the last 24 hours (failed_runs
    None when the catalog cannot be read)."""
    if catalog is None:
        fact.failed_runs = None
        return
    try:
        runs = catalog.runs(since=now - FAILED_RUNS_WINDOW, target=fact.name)
        fact.run_totals = catalog.count_runs(fact.name)
    except DrbackupError:
        fact.failed_runs = None
        return
    by_status: dict[str, list[str]] = {"failed": [], "interrupted": [], "refused": []}
    for r in runs:
        if r.kind != "job" and r.status in by_status:  # job rows summarise these same runs
            text = r.error or ("no message" if r.status == "failed" else r.status)
            by_status[r.status].append(f"{r.kind} at {r.started_at:%Y-%m-%d %H:%M}Z: {text}")
    fact.failed_runs = by_status["failed"]
    fact.interrupted_runs = by_status["interrupted"]
    fact.refused_runs = by_status["refused"]
