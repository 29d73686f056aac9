"""The status page's view model: what the health report and the catalog say, per target.

:func:`read_history` reads the catalog (the health report is ``actions.report``'s);
:func:`build_status` is pure, so what the page shows is tested on synthetic facts.
``report/html.py`` renders the view; nothing here knows HTML.

Sources, per target:

* status, findings, newest and oldest restore point, the WAL window, the last drills
  (their measured restore and verification time): the health report, which reads the
  repository (the truth);
* every restore point's time, backup sizes and durations, failed and interrupted runs: the
  catalog (an index: without it the page says the history is unavailable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from drbackup import __version__
from drbackup.errors import DrbackupError, ObjectNotFoundError
from drbackup.report.health import HealthReport, TargetHealth, restorable_until

HISTORY_BACKUPS = 30  # backups per target in the size and duration charts
RUNS_WINDOW = timedelta(days=7)  # failed and interrupted runs listed
SHOWN_RUNS = 20
PROBLEM_RUNS = ("failed", "interrupted")


@dataclass(frozen=True)
class FindingView:
    status: str  # OK WARNING UNKNOWN CRITICAL
    where: str
    message: str


@dataclass(frozen=True)
class DrillView:
    """One drill of a target (the RTO trend): its measured restore and verification time."""

    drill_id: str
    started_at: datetime
    status: str  # pass warn fail
    measured_s: float | None
    failed_checks: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackupView:
    backup_id: str
    started_at: datetime
    recovery_point: datetime | None
    size: int
    stored_size: int
    duration_s: float
    damaged: bool = False


@dataclass(frozen=True)
class RunView:
    kind: str
    started_at: datetime
    status: str  # failed interrupted
    error: str


@dataclass(frozen=True)
class WindowView:
    """Where a restore can go back to: logical restore points and the continuous WAL window."""

    count: int  # restore points in the repository
    oldest: datetime | None
    newest: datetime | None
    points: tuple[datetime, ...] = ()  # every usable restore point the catalog knows
    wal_oldest: datetime | None = None
    wal_newest: datetime | None = None
    wal_lag_s: float | None = None
    wal_gaps: int = 0
    restorable_until: datetime | None = None  # newest point a restore reaches


@dataclass(frozen=True)
class TargetView:
    name: str
    kind: str
    status: str
    findings: tuple[FindingView, ...]
    rpo_s: float
    rto_s: float
    last_backup_id: str | None
    age_s: float | None  # of the newest restorable point
    window: WindowView
    drills: tuple[DrillView, ...] = ()  # oldest first
    backups: tuple[BackupView, ...] = ()  # oldest first
    runs: tuple[RunView, ...] = ()  # newest first
    history_error: str | None = None  # the catalog could not be read

    @property
    def last_drill(self) -> DrillView | None:
        return self.drills[-1] if self.drills else None

    @property
    def anchor(self) -> str:
        return f"target-{self.name}"


@dataclass(frozen=True)
class RepositoryView:
    url: str
    id: str | None
    reachable: bool
    size: int | None
    error: str | None


@dataclass(frozen=True)
class StatusView:
    generated_at: datetime
    status: str
    repository: RepositoryView
    findings: tuple[FindingView, ...]  # not about one target
    targets: tuple[TargetView, ...]
    version: str = __version__

    def counts(self) -> dict[str, int]:
        """Targets per status, worst first, only the statuses present."""
        order = ("CRITICAL", "UNKNOWN", "WARNING", "OK")
        found = [t.status for t in self.targets]
        return {s: found.count(s) for s in order if s in found}


@dataclass
class History:
    """What the catalog holds about one target (empty and ``error`` set when unreadable)."""

    backups: list = field(default_factory=list)  # catalog BackupRecord, oldest first
    runs: list = field(default_factory=list)  # catalog RunRecord, oldest first
    error: str | None = None


# -- building (pure) ----------------------------------------------------------------------------


def build_status(report: HealthReport, history: dict[str, History]) -> StatusView:
    """The view of ``report``, with each target's catalog ``history``."""
    shared = {f.message for f in report.findings}
    repo = report.repository
    return StatusView(
        generated_at=report.generated_at,
        status=report.status.name,
        repository=RepositoryView(repo.url, repo.id, repo.readable, repo.size, repo.error),
        findings=tuple(FindingView(f.status.name, "all", f.message) for f in report.findings),
        targets=tuple(
            _target_view(t, report.generated_at, history.get(t.facts.name, History()), shared)
            for t in report.targets
        ),
    )


def _target_view(t: TargetHealth, now: datetime, history: History, shared) -> TargetView:
    f = t.facts
    until = restorable_until(f, now) if f.newest else None
    return TargetView(
        name=f.name,
        kind=f.kind,
        status=t.status.name,
        findings=tuple(
            FindingView(x.status.name, f.name, x.message)
            for x in t.findings
            if x.message not in shared
        ),
        rpo_s=f.rpo.total_seconds(),
        rto_s=f.rto.total_seconds(),
        last_backup_id=f.newest.backup_id if f.newest else None,
        age_s=(now - until).total_seconds() if until else None,
        window=_window(t, history, until),
        drills=tuple(
            DrillView(d.drill_id, d.started_at, d.status, d.restore_s, d.failed_checks)
            for d in f.drills
        ),
        backups=tuple(_backup_view(b) for b in history.backups[-HISTORY_BACKUPS:]),
        runs=tuple(_run_view(r) for r in reversed(history.runs) if r.status in PROBLEM_RUNS)[
            :SHOWN_RUNS
        ],
        history_error=history.error,
    )


def _window(t: TargetHealth, history: History, until: datetime | None) -> WindowView:
    f, wal = t.facts, t.facts.wal
    points = tuple(b.recovery_point or b.started_at for b in history.backups if b.status == "ok")
    return WindowView(
        count=f.restore_points,
        oldest=f.oldest.recovery_point if f.oldest else None,
        newest=f.newest.recovery_point if f.newest else None,
        points=points,
        wal_oldest=wal.oldest if wal else None,
        wal_newest=wal.newest if wal else None,
        wal_lag_s=wal.lag_seconds if wal else None,
        wal_gaps=len(wal.gaps) + len(wal.breaks) if wal else 0,
        restorable_until=until,
    )


def _backup_view(record) -> BackupView:
    return BackupView(
        backup_id=record.backup_id,
        started_at=record.started_at,
        recovery_point=record.recovery_point,
        size=record.size,
        stored_size=record.stored_size,
        duration_s=max((record.finished_at - record.started_at).total_seconds(), 0.0),
        damaged=record.status != "ok",
    )


def _run_view(record) -> RunView:
    return RunView(record.kind, record.started_at, record.status, record.error or record.status)


# -- reading ------------------------------------------------------------------------------------


def read_history(app, report: HealthReport) -> dict[str, History]:
    """Each target's backups and recent runs from the catalog (never raises: an unreadable
    catalog is said on the page)."""
    names = [t.facts.name for t in report.targets]
    try:
        catalog = app.catalog
        since = report.generated_at - RUNS_WINDOW
        return {
            name: History(
                backups=catalog.list_backups(target=name),
                runs=[r for r in catalog.runs(since=since, target=name) if r.kind != "job"],
            )
            for name in names
        }
    except DrbackupError as exc:
        return {name: History(error=exc.message) for name in names}


def read_drill_report(app, target: str, drill_id: str) -> dict | None:
    """The drill report ``drill_id`` of ``target`` from the repository (the signed truth),
    or None when there is none.  Raises DrbackupError when the repository cannot say."""
    from drbackup.repository.reports import report_key

    try:
        return app.repository().get_document(report_key(target, drill_id))
    except ObjectNotFoundError:
        return None


def html_report(app, report: HealthReport) -> str:
    """``report --format html``: the status page of ``report`` with each target's last
    drill report inline (read from the repository), as one self-contained document."""
    from drbackup.report.drillview import build_drill_view
    from drbackup.report.html import render_report_file

    view = build_status(report, read_history(app, report))
    drills: dict[str, object] = {}
    for t in view.targets:
        last = t.last_drill
        if last is None or last.drill_id in drills or not report.repository.readable:
            continue
        try:
            document = read_drill_report(app, t.name, last.drill_id)
            if document is not None:
                drills[last.drill_id] = build_drill_view(document)
        except DrbackupError:
            continue  # unreadable: the page says what the health report knows of it
    return render_report_file(view, list(drills.values()))
