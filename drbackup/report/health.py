"""The health report: per target, is there a recent enough backup, and a recent passing drill?

Facts come from the **repository** (the source of truth: manifests and drill reports) and
the catalog (the runs history); ``actions/report.py`` reads them.  This module applies the
rules (:func:`evaluate_target`, :func:`build_report`) without I/O, so they are tested on
synthetic data.

Rules per target (the worst finding is the target's status)::

    no backup                                    CRITICAL
    newest good backup older than the RPO        CRITICAL
    last drill failed                            CRITICAL
    last drill passed with warnings              WARNING
    no passing drill within 35 days (or never)   WARNING   (postgres targets)
    last drill's restore over 80% of the RTO     WARNING
    failed runs in the last 24 hours             WARNING
    interrupted runs in the last 24 hours        WARNING   (named as interrupted, with why)
    runs refused by a lock in the last 24 hours  OK        (the lock doing its job: no page)
    unreadable manifests                         WARNING
    catalog unavailable (runs unknown)           WARNING
    wrong key                                    CRITICAL  (every target, and the report)
    WAL gap or timeline break in the archive     CRITICAL  (targets archiving WAL)
    WAL archived but no restorable window        CRITICAL
    archive lag beyond the RPO                   CRITICAL
    archive lag unknown (server unreachable)     WARNING
    repository unreachable                       UNKNOWN   (every target, and the report)

With a WAL archive, a target's recovery point is its newest restorable second (now at lag 0).

The report's status is the worst of its targets', ranked OK < WARNING < UNKNOWN < CRITICAL;
its exit code follows the nagios convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum

from drbackup.units import human_size

DRILL_MAX_AGE = timedelta(days=35)
RTO_WARN_FRACTION = 0.8
FAILED_RUNS_WINDOW = timedelta(hours=24)
TREND_DRILLS = 10  # drill reports read per target for the RTO trend
DRILLED_KINDS = ("postgres",)  # target kinds drills exist for
REPORT_FORMAT = "drbackup-health-report"
REPORT_VERSION = 1


class Status(IntEnum):
    """Nagios states; the value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


_RANK = {Status.OK: 0, Status.WARNING: 1, Status.UNKNOWN: 2, Status.CRITICAL: 3}


def worst(statuses) -> Status:
    """The most severe status (OK < WARNING < UNKNOWN < CRITICAL); OK for none."""
    return max(statuses, key=_RANK.__getitem__, default=Status.OK)


def severity(status: Status) -> int:
    """0 OK, 1 WARNING, 2 UNKNOWN, 3 CRITICAL: higher is worse (unlike the exit code)."""
    return _RANK[status]


@dataclass(frozen=True)
class Finding:
    status: Status
    message: str


@dataclass(frozen=True)
class BackupFact:
    backup_id: str
    recovery_point: datetime
    size: int = 0
    stored_size: int = 0


@dataclass(frozen=True)
class DrillFact:
    drill_id: str
    started_at: datetime
    status: str  # pass | warn | fail (the drill report's status for this target)
    restore_s: float | None = None  # restore and verification time (history total_s)
    failed_checks: tuple[str, ...] = ()
    backup_id: str | None = None
    kind: str = "logical"  # logical | physical | bucket

    @property
    def passed(self) -> bool:
        return self.status != "fail"


@dataclass(frozen=True)
class WalFacts:
    """The WAL archive of a target (``actions.wal_check.WalStatus``, the parts rules use)."""

    cluster: str
    oldest: datetime | None  # the restorable window
    newest: datetime | None
    gaps: tuple[str, ...] = ()
    breaks: tuple[str, ...] = ()
    lag_seconds: float | None = None
    lag_bytes: int | None = None
    lag_error: str | None = None
    base_backups: int = 0
    restorable: bool = True  # a base backup whose WAL is complete exists
    slot: dict | None = None  # the streaming slot (sources.postgres.slots.SlotState.to_dict)
    slot_max_retained: int | None = None


@dataclass
class TargetFacts:
    """What was read about one target; ``failed_runs`` None means the catalog was unavailable."""

    name: str
    kind: str
    rpo: timedelta
    rto: timedelta
    restore_points: int = 0
    newest: BackupFact | None = None
    oldest: BackupFact | None = None
    unreadable: list[str] = field(default_factory=list)
    drills: list[DrillFact] = field(default_factory=list)  # oldest first
    failed_runs: list[str] | None = field(default_factory=list)  # "kind at time: error"
    interrupted_runs: list[str] = field(default_factory=list)  # "kind at time: why"
    refused_runs: list[str] = field(default_factory=list)  # "kind at time: the lock's holder"
    run_totals: dict[str, int] | None = None  # runs ever recorded, by status (None: unknown)
    wal: WalFacts | None = None
    wal_error: str | None = None  # the WAL archive could not be read
    history: dict[str, str] = field(default_factory=dict)  # bucket -> what a restore reaches
    events: dict | None = None  # event capture: last capture, its lag, changes events missed


@dataclass
class TargetHealth:
    facts: TargetFacts
    status: Status
    findings: list[Finding]


@dataclass
class RepositoryFacts:
    url: str
    reachable: bool
    error: str | None = None
    id: str | None = None
    size: int | None = None
    wrong_key: bool = False  # reached, but the configured key opens nothing

    @property
    def readable(self) -> bool:
        return self.reachable and not self.wrong_key


@dataclass
class HealthReport:
    generated_at: datetime
    repository: RepositoryFacts
    targets: list[TargetHealth]
    status: Status
    findings: list[Finding] = field(default_factory=list)  # not about one target

    @property
    def exit_code(self) -> int:
        return int(self.status)


# -- rules ------------------------------------------------------------------------------------


def evaluate_target(facts: TargetFacts, now: datetime) -> TargetHealth:
    """Apply the rules of the module docstring to one target's facts."""
    findings = _backup_findings(facts, now)
    findings += _wal_findings(facts)
    findings += _history_findings(facts)
    if facts.kind in DRILLED_KINDS or facts.drills:
        findings += _drill_findings(facts, now)
    if facts.failed_runs is None:
        findings.append(Finding(Status.WARNING, "catalog unavailable: failed runs unknown"))
    else:
        findings += _run_findings(facts)
    return TargetHealth(facts, worst(f.status for f in findings), findings)


def _history_findings(facts: TargetFacts) -> list[Finding]:
    """Each bucket's guarantee is said; a bucket that is not versioned warns."""
    out = []
    for bucket, guarantee in facts.history.items():
        versioned = guarantee.startswith("every change")
        status = Status.OK if versioned else Status.WARNING
        hint = "" if versioned else " (not versioned: enable versioning to keep every change)"
        out.append(Finding(status, f"bucket {bucket}: {guarantee}{hint}"))
    events = facts.events
    if events and events.get("captured_at"):
        lag = f"{events['lag_s']:.1f}s"
        out.append(Finding(Status.OK, f"events: last capture {events['captured_at']}, lag {lag}"))
    for bucket, missed in (events or {}).get("missed", {}).items():
        out.append(
            Finding(
                Status.WARNING,
                f"bucket {bucket}: {missed} change(s) found by reconciliation that no event "
                f"brought (snapshot {events['snapshot']}); check the server's notification target",
            )
        )
    return out


def _run_findings(facts: TargetFacts) -> list[Finding]:
    """Failed and interrupted runs warn; runs refused by a lock are said, without paging."""
    findings = []
    for status, runs, what in (
        (Status.WARNING, facts.failed_runs, "failed run"),
        (Status.WARNING, facts.interrupted_runs, "interrupted run"),
        (Status.OK, facts.refused_runs, "run refused while another held the lock"),
    ):
        if runs:
            many = len(runs) > 1
            plural = what.replace("run", "runs", 1) if many else what
            findings.append(
                Finding(status, f"{len(runs)} {plural} in the last 24h (latest: {runs[-1]})")
            )
    return findings


def _backup_findings(facts: TargetFacts, now: datetime) -> list[Finding]:
    findings = []
    if facts.newest is None and facts.restore_points:
        n = facts.restore_points
        text = f"none of the {n} backups is usable" if n > 1 else "the only backup is not usable"
        findings.append(
            Finding(Status.CRITICAL, text + " (damaged as 'drbackup verify' found, or unreadable)")
        )
    elif facts.newest is None:
        findings.append(Finding(Status.CRITICAL, "no backup in the repository"))
    else:
        age = now - restorable_until(facts, now)
        if age > facts.rpo:
            findings.append(
                Finding(
                    Status.CRITICAL,
                    f"last backup is {human_age(age)} old, older than the rpo "
                    f"{human_age(facts.rpo)}",
                )
            )
    if facts.unreadable:
        findings.append(
            Finding(
                Status.WARNING,
                f"{len(facts.unreadable)} unreadable manifest(s): {facts.unreadable[0]}",
            )
        )
    return findings


def restorable_until(facts: TargetFacts, now: datetime) -> datetime:
    """The newest point a restore reaches: the newest backup's, or with a WAL archive the
    newest restorable second (``now`` when nothing is waiting to be archived)."""
    point = facts.newest.recovery_point
    wal = facts.wal
    if wal is None or not wal.restorable:
        return point
    if wal.lag_seconds == 0 and not wal.gaps and not wal.breaks:
        return now
    return max(point, wal.newest or point)


def _wal_findings(facts: TargetFacts) -> list[Finding]:
    if facts.wal_error:
        return [Finding(Status.WARNING, f"WAL archive unreadable: {facts.wal_error}")]
    wal = facts.wal
    if wal is None:
        return []
    findings = [Finding(Status.CRITICAL, f"WAL gap: {gap}") for gap in wal.gaps[:3]]
    if len(wal.gaps) > 3:
        findings.append(
            Finding(Status.CRITICAL, f"{len(wal.gaps) - 3} more WAL gaps ('drbackup wal check')")
        )
    findings += [Finding(Status.CRITICAL, f"WAL timeline break: {b}") for b in wal.breaks]
    if not wal.restorable:
        reason = "base backup" + ("" if not wal.base_backups else " whose WAL is complete")
        findings.append(
            Finding(Status.CRITICAL, f"WAL is archived but nothing is restorable: no {reason}")
        )
    if wal.lag_seconds is not None and wal.lag_seconds > facts.rpo.total_seconds():
        findings.append(
            Finding(
                Status.CRITICAL,
                f"archive lag {human_age(timedelta(seconds=wal.lag_seconds))} "
                f"({wal.lag_bytes or 0} bytes not archived), over the rpo {human_age(facts.rpo)}",
            )
        )
    elif wal.lag_error:
        findings.append(Finding(Status.WARNING, f"archive lag unknown: {wal.lag_error}"))
    return findings + _slot_findings(wal)


def _slot_findings(wal: WalFacts) -> list[Finding]:
    """A streaming slot that is missing, lost, unused, or keeps too much WAL on the server."""
    slot = wal.slot
    if slot is None:
        return []
    name = slot["name"]
    if not slot["exists"]:
        return [
            Finding(Status.WARNING, f"replication slot {name} does not exist: no WAL is streamed")
        ]
    if slot.get("wal_status") == "lost":
        return [
            Finding(
                Status.CRITICAL,
                f"replication slot {name} is lost: the server removed WAL it had not streamed",
            )
        ]
    findings = []
    retained = slot.get("retained_bytes") or 0
    if wal.slot_max_retained is not None and retained > wal.slot_max_retained:
        findings.append(
            Finding(
                Status.WARNING,
                f"replication slot {name} retains {human_size(retained)} of WAL on the server "
                f"(over {human_size(wal.slot_max_retained)}): its client lags or is gone",
            )
        )
    if not slot.get("active"):
        findings.append(
            Finding(
                Status.WARNING,
                f"replication slot {name} is inactive: nothing streams from it, and the server "
                f"keeps WAL from {slot.get('restart_lsn') or 'its start'} on",
            )
        )
    return findings


def _drill_findings(facts: TargetFacts, now: datetime) -> list[Finding]:
    findings = []
    last = facts.drills[-1] if facts.drills else None
    if last is not None and last.status == "fail":
        failed = ", ".join(last.failed_checks) or "see the drill report"
        findings.append(Finding(Status.CRITICAL, f"last drill {last.drill_id} failed: {failed}"))
    elif last is not None and last.status == "warn":
        findings.append(Finding(Status.WARNING, f"last drill {last.drill_id} passed with warnings"))
    passing = [d for d in facts.drills if d.passed]
    if not passing:
        findings.append(Finding(Status.WARNING, "no passing drill on record"))
    elif now - passing[-1].started_at > DRILL_MAX_AGE:
        age = human_age(now - passing[-1].started_at)
        findings.append(
            Finding(
                Status.WARNING, f"no passing drill in {DRILL_MAX_AGE.days} days (last {age} ago)"
            )
        )
    if last is not None and last.passed and last.restore_s is not None:
        budget = facts.rto.total_seconds()
        if budget and last.restore_s > RTO_WARN_FRACTION * budget:
            findings.append(
                Finding(
                    Status.WARNING,
                    f"last drill restored in {human_age(timedelta(seconds=last.restore_s))}, over "
                    f"{int(RTO_WARN_FRACTION * 100)}% of the rto {human_age(facts.rto)}",
                )
            )
    return findings


def build_report(
    repository: RepositoryFacts, facts: list[TargetFacts], now: datetime
) -> HealthReport:
    """Evaluate every target; an unreachable repository makes everything UNKNOWN, a wrong
    key everything CRITICAL (nothing could be restored with this configuration)."""
    if repository.wrong_key:
        finding = Finding(Status.CRITICAL, f"wrong key: {repository.error}")
        targets = [TargetHealth(f, Status.CRITICAL, [finding]) for f in facts]
        return HealthReport(now, repository, targets, Status.CRITICAL, [finding])
    if not repository.reachable:
        finding = Finding(Status.UNKNOWN, f"repository unreachable: {repository.error}")
        targets = [TargetHealth(f, Status.UNKNOWN, [finding]) for f in facts]
        return HealthReport(now, repository, targets, Status.UNKNOWN, [finding])
    targets = [evaluate_target(f, now) for f in facts]
    findings = []
    if not facts:
        findings.append(Finding(Status.WARNING, "no targets configured"))
    status = worst([*(t.status for t in targets), *(f.status for f in findings)])
    return HealthReport(now, repository, targets, status, findings)


def human_age(value: timedelta) -> str:
    """``2d3h``, ``3h12m``, ``45m``, ``30s``: two units at most."""
    seconds = int(value.total_seconds())
    if seconds < 0:
        return f"-{human_age(-value)}"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count or (unit == "s" and not parts):
            parts.append(f"{count}{unit}")
    return "".join(parts[:2])
