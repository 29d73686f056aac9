"""Retention rules on synthetic timelines: restic ``forget`` semantics plus drbackup's guards.

The timelines are built here (no I/O).  ``HOURLY_YEAR`` is one backup every hour of 2025, at
half past: 8760 backups, the newest on Wednesday 2025-12-31 23:30 UTC, which is in ISO
week 2026-W01.  Expected survivors are written out by hand for the documented rules; an
independent set-based model of the rules cross-checks the walk on random timelines.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from drbackup.retention.policy import (
    EMPTY_POLICY_REASON,
    NEWEST_REASON,
    UNLIMITED,
    BackupInfo,
    RetentionPolicy,
    apply_policy,
    format_delta,
    period_of,
)

START = datetime(2025, 1, 1, 0, 30, tzinfo=UTC)


def backup(ts: datetime, target: str = "app", suffix: str = "000000") -> BackupInfo:
    return BackupInfo(ts.strftime("%Y%m%dT%H%M%SZ") + "-" + suffix, target, ts)


def bid(ts: datetime) -> str:
    return backup(ts).backup_id


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


HOURLY_YEAR = [backup(START + timedelta(hours=i)) for i in range(365 * 24)]
NEWEST = HOURLY_YEAR[-1]


def kept(decision) -> list[str]:
    return decision.kept_ids


def reasons_of(decision, backup_id: str) -> list[str]:
    return dict((b.backup_id, r) for b, r in decision.keep)[backup_id]


# --- one rule at a time on the hourly year ------------------------------------------------


def test_keep_last_keeps_the_n_newest():
    decision = apply_policy(HOURLY_YEAR, RetentionPolicy(keep_last=5))
    assert kept(decision) == [b.backup_id for b in HOURLY_YEAR[-5:]][::-1]
    assert len(decision.remove) == 8760 - 5
    assert reasons_of(decision, HOURLY_YEAR[-2].backup_id) == ["keep_last #2"]


def test_keep_hourly_keeps_one_per_hour():
    decision = apply_policy(HOURLY_YEAR, RetentionPolicy(keep_hourly=24))
    assert kept(decision) == [b.backup_id for b in HOURLY_YEAR[-24:]][::-1]
    assert reasons_of(decision, HOURLY_YEAR[-3].backup_id) == ["keep_hourly 2025-12-31 21h"]


def test_keep_daily_keeps_the_last_backup_of_each_day():
    decision = apply_policy(HOURLY_YEAR, RetentionPolicy(keep_daily=7))
    expected = [bid(at(f"2025-12-{day} 23:30")) for day in range(31, 24, -1)]
    assert kept(decision) == expected
    assert reasons_of(decision, bid(at("2025-12-25 23:30"))) == ["keep_daily 2025-12-25"]


def test_keep_weekly_uses_iso_weeks_across_the_year_boundary():
    # Wed 2025-12-31 is in ISO week 2026-W01; the weeks before end on Sundays.
    decision = apply_policy(HOURLY_YEAR, RetentionPolicy(keep_weekly=4))
    expected = ["2025-12-31", "2025-12-28", "2025-12-21", "2025-12-14"]
    assert kept(decision) == [bid(at(f"{day} 23:30")) for day in expected]
    assert reasons_of(decision, bid(at("2025-12-31 23:30")))[1] == "keep_weekly 2026-W01"
    assert reasons_of(decision, bid(at("2025-12-28 23:30"))) == ["keep_weekly 2025-W52"]


def test_keep_monthly_keeps_the_last_backup_of_each_month():
    decision = apply_policy(HOURLY_YEAR, RetentionPolicy(keep_monthly=12))
    month_ends = [
        datetime(2025, m + 1, 1, tzinfo=UTC) - timedelta(minutes=30) for m in range(1, 12)
    ]
    expected = [NEWEST.backup_id] + [bid(t) for t in reversed(month_ends)]
    assert kept(decision) == expected
    assert reasons_of(decision, bid(at("2025-02-28 23:30"))) == ["keep_monthly 2025-02"]


def test_keep_yearly_with_fewer_years_than_asked_also_keeps_the_oldest():
    # restic 0.16+ (issue 3624): a rule with periods left keeps the oldest backup too.
    decision = apply_policy(HOURLY_YEAR, RetentionPolicy(keep_yearly=3))
    assert kept(decision) == [NEWEST.backup_id, HOURLY_YEAR[0].backup_id]
    assert reasons_of(decision, NEWEST.backup_id) == [NEWEST_REASON, "keep_yearly 2025"]
    assert reasons_of(decision, HOURLY_YEAR[0].backup_id) == [
        "keep_yearly oldest backup (2 periods left)"
    ]


def test_keep_within_is_relative_to_the_newest_backup_not_now():
    policy = RetentionPolicy(keep_within=timedelta(days=2))
    for now in (None, at("2025-12-31 23:59"), at("2027-06-01 00:00")):
        decision = apply_policy(HOURLY_YEAR, policy, now=now)
        assert len(decision.keep) == 48, now
    # Strictly newer than newest - 2d: the backup exactly 48 hours older is removed.
    assert kept(decision)[-1] == bid(at("2025-12-30 00:30"))
    assert bid(at("2025-12-29 23:30")) in decision.removed_ids
    assert reasons_of(decision, bid(at("2025-12-30 00:30"))) == ["keep_within 2d of newest"]


def test_keep_within_ignores_backups_dated_after_now():
    future = backup(at("2026-03-01 00:00"), suffix="ffffff")
    policy = RetentionPolicy(keep_within=timedelta(days=1))
    decision = apply_policy([*HOURLY_YEAR, future], policy, now=at("2026-01-01 00:00"))
    # The window hangs off the newest backup not in the future, so a wrong clock on one
    # backup cannot expire everything else; the future backup itself stays.
    assert len(decision.keep) == 24 + 1
    assert kept(decision)[0] == future.backup_id
    assert reasons_of(decision, future.backup_id)[0] == NEWEST_REASON


def test_keep_within_keeps_everything_when_every_backup_is_in_the_future():
    decision = apply_policy(
        HOURLY_YEAR[:10],
        RetentionPolicy(keep_within=timedelta(hours=1)),
        now=at("2000-01-01 00:00"),
    )
    assert decision.remove == []


# --- combinations, boundaries ---------------------------------------------------------------


def test_overlapping_rules_keep_the_union_with_every_reason():
    policy = RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=12)
    decision = apply_policy(HOURLY_YEAR, policy)
    # 7 dailies (Dec 25-31); weeklies W01 and W52 are among them, W51 and W50 add 2;
    # the December monthly is the newest, the other 11 months add 11.
    assert len(decision.keep) == 7 + 2 + 11
    assert reasons_of(decision, NEWEST.backup_id) == [
        NEWEST_REASON,
        "keep_daily 2025-12-31",
        "keep_weekly 2026-W01",
        "keep_monthly 2025-12",
    ]
    assert reasons_of(decision, bid(at("2025-12-28 23:30"))) == [
        "keep_daily 2025-12-28",
        "keep_weekly 2025-W52",
    ]


def test_full_gfs_policy_on_the_hourly_year():
    policy = RetentionPolicy(
        keep_last=3, keep_hourly=24, keep_daily=7, keep_weekly=4, keep_monthly=12, keep_yearly=3
    )
    decision = apply_policy(HOURLY_YEAR, policy)
    # hourly 24 (covers last 3 and Dec 31's daily) + 6 more dailies + 2 weeklies
    # + 11 monthlies + the oldest backup (keep_yearly has 2 periods left).
    assert len(decision.keep) == 24 + 6 + 2 + 11 + 1
    assert len(decision.keep) + len(decision.remove) == len(HOURLY_YEAR)


def test_exactly_n_periods_keeps_each_once_and_not_the_oldest_twice():
    days = [backup(at(f"2025-03-0{d} {h}")) for d in range(1, 8) for h in ("08:00", "20:00")]
    decision = apply_policy(days, RetentionPolicy(keep_daily=7))
    assert kept(decision) == [bid(at(f"2025-03-0{d} 20:00")) for d in range(7, 0, -1)]


def test_fewer_periods_than_n_keep_the_oldest_backup_too():
    days = [
        backup(at(f"2025-03-0{d} {h}")) for d in range(1, 6) for h in ("08:00", "12:00", "20:00")
    ]
    decision = apply_policy(days, RetentionPolicy(keep_daily=7))
    expected = [bid(at(f"2025-03-0{d} 20:00")) for d in range(5, 0, -1)]
    assert kept(decision) == [*expected, bid(at("2025-03-01 08:00"))]
    assert reasons_of(decision, bid(at("2025-03-01 08:00"))) == [
        "keep_daily oldest backup (2 periods left)"
    ]


def test_periods_without_backups_are_skipped():
    # restic's example: a backup every Sunday for 12 weeks; keep_daily 4 keeps 4 Sundays.
    sundays = [backup(at("2025-01-05 11:00") + timedelta(weeks=w)) for w in range(12)]
    decision = apply_policy(sundays, RetentionPolicy(keep_daily=4))
    assert kept(decision) == [b.backup_id for b in sundays[-4:]][::-1]
    # No backups in November: the three most recent months *with* backups are kept.
    no_november = [b for b in HOURLY_YEAR if b.recovery_point.month != 11]
    decision = apply_policy(no_november, RetentionPolicy(keep_monthly=3))
    assert kept(decision) == [
        bid(at(t)) for t in ("2025-12-31 23:30", "2025-10-31 23:30", "2025-09-30 23:30")
    ]


def test_restic_hundred_years_of_dailies_example():
    # "keep-daily 7 --keep-weekly 5 --keep-monthly 12 --keep-yearly 75 keeps the most recent
    # 7 daily snapshots, then 4 last-day-of-the-weeks and 11 or 12 last-day-of-the-months,
    # and finally 75 last-day-of-the-year snapshots."  (The 7 dailies include exactly one
    # week end when the newest backup is on a Sunday, as here: 2025-06-15.)
    first = at("1925-06-16 12:00")
    dailies = [backup(first + timedelta(days=d)) for d in range(36525)]
    policy = RetentionPolicy(keep_daily=7, keep_weekly=5, keep_monthly=12, keep_yearly=75)
    decision = apply_policy(dailies, policy)
    by_rule = {rule: set() for rule in ("daily", "weekly", "monthly", "yearly")}
    for b, reasons in decision.keep:
        for reason in reasons:
            rule = reason.split()[0].removeprefix("keep_")
            if rule in by_rule:
                by_rule[rule].add(b.backup_id)
    assert len(by_rule["daily"]) == 7
    assert len(by_rule["weekly"] - by_rule["daily"]) == 4
    assert len(by_rule["monthly"] - by_rule["daily"] - by_rule["weekly"]) in (11, 12)
    assert len(by_rule["yearly"]) == 75
    assert len(decision.keep) == len(set().union(*by_rule.values()))


def test_restic_forum_example_four_january_backups_keep_monthly_4():
    # forum.restic.net/t/help-with-forget-policy/7091: restic 0.16 keeps 2 of them.
    times = [
        "2024-01-02 13:42:44",
        "2024-01-03 01:04:38",
        "2024-01-04 20:09:54",
        "2024-01-04 20:20:32",
    ]
    decision = apply_policy([backup(at(t)) for t in times], RetentionPolicy(keep_monthly=4))
    assert kept(decision) == [bid(at(times[3])), bid(at(times[0]))]


def test_unlimited_keeps_every_period():
    monthly = apply_policy(HOURLY_YEAR, RetentionPolicy(keep_monthly=UNLIMITED))
    assert len(monthly.keep) == 12 + 1  # restic: "unlimited" also keeps the oldest
    assert reasons_of(monthly, HOURLY_YEAR[0].backup_id) == [
        "keep_monthly oldest backup (unlimited)"
    ]
    assert len(apply_policy(HOURLY_YEAR, RetentionPolicy(keep_daily=UNLIMITED)).keep) == 365 + 1
    assert apply_policy(HOURLY_YEAR, RetentionPolicy(keep_last=UNLIMITED)).remove == []


def test_time_zone_moves_the_period_boundaries():
    berlin = ZoneInfo("Europe/Berlin")  # UTC+1 in winter
    decision = apply_policy(HOURLY_YEAR, RetentionPolicy(keep_daily=2, tz=berlin))
    # 23:30 UTC on Dec 31 is 00:30 on Jan 1 in Berlin: a day of its own.
    assert kept(decision) == [NEWEST.backup_id, bid(at("2025-12-31 22:30"))]
    assert reasons_of(decision, NEWEST.backup_id)[1] == "keep_daily 2026-01-01"


def test_same_recovery_point_orders_by_backup_id():
    ts = at("2025-05-05 05:05")
    pair = [backup(ts, suffix="aaaaaa"), backup(ts, suffix="bbbbbb")]
    decision = apply_policy(pair, RetentionPolicy(keep_last=1))
    assert kept(decision) == [pair[1].backup_id]


def test_policy_uses_recovery_points_not_backup_ids():
    # Backup ids carry the start time; the policy orders by recovery point.
    late_id = BackupInfo("20250101T000000Z-000001", "app", at("2025-01-01 00:00"))
    early_id = BackupInfo("20240101T000000Z-000002", "app", at("2025-06-01 00:00"))
    decision = apply_policy([late_id, early_id], RetentionPolicy(keep_last=1))
    assert kept(decision) == [early_id.backup_id]


# --- drbackup's guards ----------------------------------------------------------------------


def test_newest_backup_is_always_kept_and_says_so():
    decision = apply_policy(HOURLY_YEAR, RetentionPolicy(keep_within=timedelta(hours=1)))
    assert kept(decision) == [NEWEST.backup_id]
    assert reasons_of(decision, NEWEST.backup_id) == [NEWEST_REASON, "keep_within 1h of newest"]


def test_last_drilled_backup_is_protected():
    drilled = bid(at("2025-03-03 03:30"))
    protected = {drilled: "last passing drill d-42", "20990101T000000Z-000000": "not here"}
    decision = apply_policy(HOURLY_YEAR, RetentionPolicy(keep_last=3), protected=protected)
    assert kept(decision) == [b.backup_id for b in HOURLY_YEAR[-3:]][::-1] + [drilled]
    assert reasons_of(decision, drilled) == ["last passing drill d-42"]


def test_protection_adds_to_the_rule_reasons():
    protected = {NEWEST.backup_id: "last passing drill d-1"}
    decision = apply_policy(HOURLY_YEAR, RetentionPolicy(keep_last=1), protected=protected)
    assert reasons_of(decision, NEWEST.backup_id) == [
        NEWEST_REASON,
        "keep_last #1",
        "last passing drill d-1",
    ]


def test_empty_policy_keeps_everything():
    policy = RetentionPolicy()
    assert policy.is_empty()
    decision = apply_policy(HOURLY_YEAR[:5], policy, protected={HOURLY_YEAR[0].backup_id: "x"})
    assert decision.remove == []
    assert reasons_of(decision, HOURLY_YEAR[1].backup_id) == [EMPTY_POLICY_REASON]
    assert reasons_of(decision, HOURLY_YEAR[0].backup_id) == [EMPTY_POLICY_REASON, "x"]


def test_no_backups_no_decision():
    decision = apply_policy([], RetentionPolicy(keep_last=1))
    assert decision.keep == [] and decision.remove == []


# --- validation and text --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"keep_daily": -2}, {"keep_last": -5}, {"keep_within": timedelta(0)}],
)
def test_invalid_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        RetentionPolicy(**kwargs)


def test_one_target_at_a_time():
    with pytest.raises(ValueError, match="one target"):
        apply_policy([backup(START), backup(START, target="other")], RetentionPolicy(keep_last=1))


def test_recovery_points_must_be_aware():
    with pytest.raises(ValueError, match="time zone"):
        BackupInfo("20250101T000000Z-000000", "app", datetime(2025, 1, 1))


def test_describe():
    policy = RetentionPolicy(keep_daily=7, keep_monthly=UNLIMITED, keep_within=timedelta(hours=36))
    assert policy.describe() == "keep 7 daily, all monthly, within 36h of newest"
    assert RetentionPolicy(keep_last=2, keep_yearly=1).describe() == "keep 2 latest, 1 yearly"
    assert RetentionPolicy().describe() == "empty policy (keep everything)"
    assert format_delta(timedelta(days=14)) == "14d"
    assert format_delta(timedelta(seconds=90)) == "90s"


# --- the walk equals the set-based statement of the rules ------------------------------------


def reference_keep(backups: list[BackupInfo], policy: RetentionPolicy) -> set[str]:
    """The rules as docs/retention.md states them, computed with sets (no walk)."""
    ordered = sorted(backups, key=lambda b: (b.recovery_point, b.backup_id), reverse=True)
    keep = {ordered[0].backup_id}
    for rule in ("keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"):
        count = getattr(policy, rule)
        if not count:
            continue
        newest_per_period: dict = {}
        for b in ordered:
            newest_per_period.setdefault(period_of(rule, b.recovery_point), b.backup_id)
        periods = list(newest_per_period.values())  # newest period first
        keep |= set(periods if count == UNLIMITED else periods[:count])
        if count == UNLIMITED or len(periods) < count:
            keep.add(ordered[-1].backup_id)
    if policy.keep_last:
        n = len(ordered) if policy.keep_last == UNLIMITED else policy.keep_last
        keep |= {b.backup_id for b in ordered[:n]}
    if policy.keep_within:
        cutoff = ordered[0].recovery_point - policy.keep_within
        keep |= {b.backup_id for b in ordered if b.recovery_point > cutoff}
    return keep


@pytest.mark.parametrize("seed", range(25))
def test_walk_matches_the_set_model_on_random_timelines(seed):
    rng = random.Random(seed)
    t, timeline = START, []
    for i in range(rng.randint(1, 400)):
        t += timedelta(minutes=rng.choice([7, 60, 61, 300, 1440, 1500, 10080, 40000]))
        timeline.append(backup(t, suffix=f"{i:06x}"))
    pick = lambda: rng.choice([0, 0, 1, 2, 3, 7, 12, UNLIMITED])  # noqa: E731
    policy = RetentionPolicy(
        keep_last=pick(),
        keep_hourly=pick(),
        keep_daily=pick(),
        keep_weekly=pick(),
        keep_monthly=pick(),
        keep_yearly=pick(),
        keep_within=rng.choice([None, timedelta(hours=5), timedelta(days=30)]),
    )
    if policy.is_empty():
        policy = RetentionPolicy(keep_weekly=2)
    decision = apply_policy(timeline, policy)
    assert set(decision.kept_ids) == reference_keep(timeline, policy)
    assert len(decision.keep) + len(decision.remove) == len(timeline)


def test_oldest_reason_counts_the_periods_left():
    pair = [backup(at("2025-02-01 00:00")), backup(at("2025-05-01 00:00"))]
    decision = apply_policy(pair, RetentionPolicy(keep_yearly=2))
    assert reasons_of(decision, pair[0].backup_id) == ["keep_yearly oldest backup (1 period left)"]
