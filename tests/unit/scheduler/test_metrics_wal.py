"""The daemon's /metrics shows what its wal-check jobs found."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from drbackup.scheduler.http import Metrics


def test_a_wal_check_run_sets_the_window_lag_and_gaps():
    metrics = Metrics()
    details = {
        "window": {"oldest": "2026-11-16T02:00:07+00:00", "newest": "2026-11-23T06:59:51+00:00"},
        "lag_seconds": 4.5,
        "gaps": ["WAL segment 000000010000000000000007 is missing (...)"],
        "breaks": [],
    }
    metrics.record_wal("wal-check", "app", details)
    metrics.record_wal("backup", "app", {"window": {}})  # other kinds change nothing
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name.startswith("drbackup_wal")
    }
    assert samples == {
        (
            "drbackup_wal_window_timestamp_seconds",
            (("edge", "oldest"), ("target", "app")),
        ): 1794794407.0,
        (
            "drbackup_wal_window_timestamp_seconds",
            (("edge", "newest"), ("target", "app")),
        ): 1795417191.0,
        ("drbackup_wal_archive_lag_seconds", (("target", "app"),)): 4.5,
        ("drbackup_wal_gaps", (("target", "app"),)): 1.0,
    }
