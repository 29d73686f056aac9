"""Retention policies with restic ``forget`` semantics, as pure functions (no I/O).

:func:`apply_policy` decides, for the backups of **one** target, which to keep (each with
the reasons why) and which to remove.  The rules (see ``docs/retention.md``):

* ``keep_last n``: the ``n`` newest backups.
* ``keep_hourly/daily/weekly/monthly/yearly n``: walking from the newest backup to the
  oldest, the newest backup of each of the ``n`` most recent periods **that have a
  backup** (periods without one are skipped, not counted).  Weeks are ISO weeks
  (Monday to Sunday, numbered by ISO year).  As in restic 0.16+, if a rule still has
  periods left when the walk reaches the oldest backup, the oldest backup is kept too.
* ``keep_within d``: every backup whose recovery point is less than ``d`` older than the
  **newest** backup's (not "now": a target that stopped backing up keeps its history).
  Backups dated after ``now`` are not used as "the newest" (a wrong clock cannot make
  ``keep_within`` remove everything).
* A backup kept by any rule is kept; :data:`UNLIMITED` keeps every period.
* On top of restic: the newest backup is always kept, and so is every backup named in
  ``protected`` (the backup behind the last passing drill, ...).
* An empty policy keeps everything (callers refuse to prune with one, as restic does).

Periods are computed from each backup's recovery point in the policy's time zone (UTC by
default): a manifest stores recovery points in UTC, and UTC periods do not depend on the
host running prune nor shift with daylight saving time.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, tzinfo

UNLIMITED = -1  # a count that keeps every period (restic's "unlimited")

# Count rules in evaluation order, with the period of a backup under each rule.
COUNT_RULES = (
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
)
EMPTY_POLICY_REASON = "policy is empty"
NEWEST_REASON = "newest backup"


@dataclass(frozen=True)
class BackupInfo:
    """What a policy needs to know of a backup.  ``recovery_point`` must be time-zone aware."""

    backup_id: str
    target: str
    recovery_point: datetime
    kind: str = "postgres"

    def __post_init__(self) -> None:
        if self.recovery_point.tzinfo is None:
            raise ValueError(f"backup {self.backup_id}: recovery point has no time zone")


@dataclass(frozen=True)
class RetentionPolicy:
    """How many periods each rule keeps (0: rule off, :data:`UNLIMITED`: every period).

    Raises ``ValueError`` for a negative count other than ``UNLIMITED`` or a
    non-positive ``keep_within``.
    """

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: timedelta | None = None
    tz: tzinfo = UTC

    def __post_init__(self) -> None:
        for rule in COUNT_RULES:
            count = getattr(self, rule)
            if count < 0 and count != UNLIMITED:
                raise ValueError(f"{rule} must be 0 or more, or unlimited (got {count})")
        if self.keep_within is not None and self.keep_within <= timedelta(0):
            raise ValueError("keep_within must be a positive duration")

    def is_empty(self) -> bool:
        """True if no rule is set: such a policy keeps everything."""
        return self.keep_within is None and not any(getattr(self, r) for r in COUNT_RULES)

    def describe(self) -> str:
        """One line for humans: ``keep 7 daily, 4 weekly, all monthly, within 2d of newest``."""
        parts = []
        for rule in COUNT_RULES:
            count = getattr(self, rule)
            name = "latest" if rule == "keep_last" else rule.removeprefix("keep_")
            if count == UNLIMITED:
                parts.append(f"all {name}")
            elif count:
                parts.append(f"{count} {name}")
        if self.keep_within is not None:
            parts.append(f"within {format_delta(self.keep_within)} of newest")
        return "keep " + ", ".join(parts) if parts else "empty policy (keep everything)"

    def to_dict(self) -> dict:
        """JSON-able form (counts, ``keep_within`` in seconds, the time zone's name)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name in COUNT_RULES}
        out["keep_within"] = self.keep_within.total_seconds() if self.keep_within else None
        out["timezone"] = str(self.tz)
        return out


@dataclass
class Decision:
    """The outcome for one target, newest first: survivors with their reasons, and the rest."""

    keep: list[tuple[BackupInfo, list[str]]]
    remove: list[BackupInfo]

    @property
    def kept_ids(self) -> list[str]:
        return [b.backup_id for b, _ in self.keep]

    @property
    def removed_ids(self) -> list[str]:
        return [b.backup_id for b in self.remove]


def apply_policy(
    backups: list[BackupInfo],
    policy: RetentionPolicy,
    *,
    protected: dict[str, str] | None = None,
    now: datetime | None = None,
) -> Decision:
    """Split the backups of one target into survivors (with reasons) and removals.

    ``protected`` maps backup ids to the reason they must stay (ids not in ``backups``
    are ignored); ``now`` (aware) excludes backups dated after it when finding the
    newest one for ``keep_within``.  Both lists come newest first (by recovery point,
    then backup id).  Raises ``ValueError`` if the backups belong to several targets.
    """
    if len({b.target for b in backups}) > 1:
        raise ValueError("apply_policy works on the backups of one target at a time")
    ordered = sorted(backups, key=lambda b: (b.recovery_point, b.backup_id), reverse=True)
    protected = protected or {}
    if policy.is_empty():
        return Decision([(b, [EMPTY_POLICY_REASON, *_extra(b, protected)]) for b in ordered], [])
    walk = _Walk(policy, _newest_before(ordered, now))
    decision = Decision([], [])
    for index, backup in enumerate(ordered):
        reasons = walk.reasons(backup, is_oldest=index == len(ordered) - 1)
        if index == 0:
            reasons.insert(0, NEWEST_REASON)
        reasons += _extra(backup, protected)
        if reasons:
            decision.keep.append((backup, reasons))
        else:
            decision.remove.append(backup)
    return decision


def _extra(backup: BackupInfo, protected: dict[str, str]) -> list[str]:
    reason = protected.get(backup.backup_id)
    return [reason] if reason else []


def _newest_before(ordered: list[BackupInfo], now: datetime | None) -> datetime | None:
    """The newest recovery point not after ``now`` (None if every backup is in the future)."""
    for backup in ordered:
        if now is None or backup.recovery_point <= now:
            return backup.recovery_point
    return None


class _Walk:
    """The state of one newest-to-oldest walk: periods left and last period kept, per rule."""

    def __init__(self, policy: RetentionPolicy, newest: datetime | None):
        self.policy = policy
        self.left = {rule: getattr(policy, rule) for rule in COUNT_RULES}
        self.last_period: dict[str, object] = {}
        self.seen = 0
        within = policy.keep_within
        # Strictly after the cutoff, as restic; no usable newest keeps everything.
        self.cutoff = None if within is None or newest is None else newest - within
        self.keep_all_within = within is not None and newest is None

    def reasons(self, backup: BackupInfo, *, is_oldest: bool) -> list[str]:
        """Why ``backup`` (the next one, going back in time) stays; updates the counters."""
        reasons = []
        if self.keep_all_within or (
            self.cutoff is not None and backup.recovery_point > self.cutoff
        ):
            reasons.append(f"keep_within {format_delta(self.policy.keep_within)} of newest")
        local = backup.recovery_point.astimezone(self.policy.tz)
        self.seen += 1
        for rule in COUNT_RULES:
            left = self.left[rule]
            if left == 0:
                continue
            period = self.seen if rule == "keep_last" else period_of(rule, local)
            if period != self.last_period.get(rule):
                reasons.append(f"{rule} {period_label(rule, period)}")
            elif is_oldest:
                # restic 0.16+: a rule with periods left also keeps the oldest backup.
                reasons.append(f"{rule} oldest backup ({_periods_left(left)})")
            else:
                continue
            self.last_period[rule] = period
            if left != UNLIMITED:
                self.left[rule] = left - 1
        return reasons


def _periods_left(left: int) -> str:
    if left == UNLIMITED:
        return "unlimited"
    return f"{left} period{'' if left == 1 else 's'} left"


def period_of(rule: str, local: datetime) -> tuple[int, ...]:
    """The period of a (time-zone converted) instant under a calendar rule."""
    if rule == "keep_hourly":
        return (local.year, local.month, local.day, local.hour)
    if rule == "keep_daily":
        return (local.year, local.month, local.day)
    if rule == "keep_weekly":
        iso = local.isocalendar()
        return (iso.year, iso.week)
    if rule == "keep_monthly":
        return (local.year, local.month)
    if rule == "keep_yearly":
        return (local.year,)
    raise ValueError(f"not a calendar rule: {rule}")


def period_label(rule: str, period) -> str:
    """How a period reads in a reason: ``#2``, ``2026-11-23 14h``, ``2026-W47``, ``2026-11``."""
    if rule == "keep_last":
        return f"#{period}"
    if rule == "keep_hourly":
        return "{:04d}-{:02d}-{:02d} {:02d}h".format(*period)
    if rule == "keep_daily":
        return "{:04d}-{:02d}-{:02d}".format(*period)
    if rule == "keep_weekly":
        return "{:04d}-W{:02d}".format(*period)
    if rule == "keep_monthly":
        return "{:04d}-{:02d}".format(*period)
    return f"{period[0]:04d}"


def format_delta(value: timedelta) -> str:
    """``7d``, ``36h``, ``90m``, ``45s``: the largest unit that divides the duration."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def apply_policy_by_kind(
    backups: list[BackupInfo],
    policy: RetentionPolicy,
    protected: dict[str, str] | None = None,
    now: datetime | None = None,
) -> tuple[list, list]:
    """:func:`apply_policy` to each kind of backup on its own (dumps, base backups, bucket
    snapshots): each kind keeps its own newest, last n, dailies...  ``(keep, remove)``,
    newest first across kinds."""
    keep: list = []
    remove: list = []
    for kind in sorted({b.kind for b in backups}):
        decision = apply_policy(
            [b for b in backups if b.kind == kind], policy, protected=protected, now=now
        )
        keep += decision.keep
        remove += decision.remove
    newest_first = sorted(backups, key=lambda b: (b.recovery_point, b.backup_id), reverse=True)
    order = {b.backup_id: i for i, b in enumerate(newest_first)}
    keep.sort(key=lambda pair: order[pair[0].backup_id])
    remove.sort(key=lambda b: order[b.backup_id])
    return keep, remove
