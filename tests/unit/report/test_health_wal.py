"""The health rules for targets that archive WAL: gaps, breaks, the window, the archive lag."""

from __future__ import annotations

import json
from datetime import timedelta

from drbackup.report.health import Status, WalFacts, restorable_until
from drbackup.report.render import render
from tests.unit.report.test_health import NOW, REPO, backup, healthy, messages

WINDOW = (NOW - timedelta(days=7), NOW - timedelta(seconds=30))


def wal(**changes) -> WalFacts:
    base = {
        "cluster": "pg15-1",
        "oldest": WINDOW[0],
        "newest": WINDOW[1],
        "lag_seconds": 0.0,
        "lag_bytes": 0,
        "base_backups": 2,
    }
    return WalFacts(**(base | changes))


def test_a_complete_archive_with_no_lag_is_ok_even_with_an_old_base_backup():
    facts = healthy(newest=backup(30), rpo=timedelta(minutes=5), wal=wal())
    assert messages(facts) == (Status.OK, [])
    assert restorable_until(facts, NOW) == NOW  # nothing waits to be archived


def test_a_gap_and_a_timeline_break_are_critical():
    gaps = (
        "WAL segment 000000010000000000000007 is missing (restores past 0/7000000 on timeline 1 fail)",
    )
    status, found = messages(
        healthy(
            wal=wal(
                gaps=gaps,
                breaks=(
                    "timeline 2 has WAL but its history file 00000002.history is not archived",
                ),
            )
        )
    )
    assert status == Status.CRITICAL
    assert found == [
        f"CRITICAL: WAL gap: {gaps[0]}",
        "CRITICAL: WAL timeline break: timeline 2 has WAL but its history file 00000002.history is not archived",
    ]


def test_archive_lag_beyond_the_rpo_is_critical():
    facts = healthy(rpo=timedelta(minutes=5), wal=wal(lag_seconds=600.0, lag_bytes=3 << 20))
    assert messages(facts) == (
        Status.CRITICAL,
        ["CRITICAL: archive lag 10m (3145728 bytes not archived), over the rpo 5m"],
    )


def test_unknown_lag_is_a_warning_and_wal_without_a_base_backup_is_critical():
    assert messages(healthy(wal=wal(lag_seconds=None, lag_error="cannot connect"))) == (
        Status.WARNING,
        ["WARNING: archive lag unknown: cannot connect"],
    )
    # no commit since the base backup: only its end is a target, which is not a problem
    assert messages(healthy(wal=wal(oldest=None, newest=None))) == (Status.OK, [])
    status, found = messages(
        healthy(wal=wal(oldest=None, newest=None, base_backups=0, restorable=False))
    )
    assert status == Status.CRITICAL
    assert "CRITICAL: WAL is archived but nothing is restorable: no base backup" in found


def test_the_window_is_rendered_in_text_json_and_prometheus():
    from drbackup.report.health import build_report

    report = build_report(REPO, [healthy(wal=wal())], NOW)
    assert (
        "app: restorable 2026-11-16 12:00:00Z .. 2026-11-23 11:59:30Z, archive lag 0s (0 B)"
        in render(report, "text")
    )
    data = json.loads(render(report, "json"))["targets"][0]["wal"]
    assert data["window"] == {"oldest": WINDOW[0].isoformat(), "newest": WINDOW[1].isoformat()}
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(render(report, "prometheus"))
        for s in family.samples
        if s.name.startswith("drbackup_health_wal_")
    }
    assert samples == {
        "drbackup_health_wal_window_oldest_timestamp_seconds": WINDOW[0].timestamp(),
        "drbackup_health_wal_window_newest_timestamp_seconds": WINDOW[1].timestamp(),
        "drbackup_health_wal_archive_lag_seconds": 0.0,
        "drbackup_health_wal_gaps": 0.0,
    }
