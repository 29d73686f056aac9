"""The daemon's /metrics: drill results from jobs and from the catalog, objectives, counters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from drbackup.catalog.drills import DrillSummary
from drbackup.config import Config
from drbackup.scheduler.http import Metrics

T0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def samples(metrics: Metrics, prefix: str = "drbackup_") -> dict[tuple, float]:
    return {
        (s.name, *sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name.startswith(prefix)
    }


def summary(hours: float, status: str = "pass", total_s=42.0, target="app") -> DrillSummary:
    started = T0 + timedelta(hours=hours)
    return DrillSummary(f"d{hours}", target, started, status, total_s, 900.0, "b1")


def test_catalog_drills_show_the_newest_result_and_the_newest_pass():
    metrics = Metrics()
    metrics.record_drills([summary(0), summary(1, total_s=50.0), summary(2, "fail", None)])
    found = samples(metrics, "drbackup_drill")
    assert found == {
        ("drbackup_drill_passed", ("target", "app")): 0.0,
        ("drbackup_drill_last_timestamp_seconds", ("target", "app")): (
            T0 + timedelta(hours=2)
        ).timestamp(),
        ("drbackup_drill_last_pass_timestamp_seconds", ("target", "app")): (
            T0 + timedelta(hours=1)
        ).timestamp(),
    }  # the failed drill restored nothing: no measured time rather than the previous one's


def test_a_later_job_result_is_not_overwritten_by_an_older_catalog_row():
    metrics = Metrics()
    later = (T0 + timedelta(hours=5)).isoformat()
    details = {"passed": True, "rto_seconds": 12.5, "started_at": later}
    metrics.record_drill("drill", "app", details)
    metrics.record_drills([summary(1, "fail", None)])  # a CLI drill before the job's
    found = samples(metrics, "drbackup_drill")
    assert found[("drbackup_drill_passed", ("target", "app"))] == 1
    assert found[("drbackup_drill_measured_rto_seconds", ("target", "app"))] == 12.5
    metrics.record_drills([summary(6, "fail", None)])  # a CLI drill after it
    assert samples(metrics)[("drbackup_drill_passed", ("target", "app"))] == 0
    assert ("drbackup_drill_measured_rto_seconds", ("target", "app")) not in samples(metrics)
    last_pass = ("drbackup_drill_last_pass_timestamp_seconds", ("target", "app"))
    assert samples(metrics)[last_pass] == (T0 + timedelta(hours=5)).timestamp()


def test_objectives_come_from_the_config_in_their_own_series():
    config = Config.model_validate(
        {
            "postgres": {
                "app": {
                    "dsn": "postgresql://x@h/app",
                    "databases": ["app"],
                    "rto": "15m",
                    "rpo": "1h",
                },
            },
            "minio": {
                "media": {
                    "endpoint": "http://127.0.0.1:9000",
                    "buckets": ["media"],
                    "access_key": "a",
                    "secret_key": "b",
                }
            },
        }
    )
    metrics = Metrics()
    metrics.set_objectives(config)
    found = samples(metrics, "drbackup_r")
    assert found[("drbackup_rto_objective_seconds", ("target", "app"))] == 900
    assert found[("drbackup_rpo_objective_seconds", ("target", "app"))] == 3600
    assert ("drbackup_rpo_objective_seconds", ("target", "media")) in found


def test_declared_jobs_start_their_counters_at_zero_and_no_created_series():
    metrics = Metrics()
    metrics.declare_job("nightly", "backup", ["app"])
    found = samples(metrics)
    assert (
        found[("drbackup_runs_total", ("kind", "backup"), ("status", "failed"), ("target", "app"))]
        == 0
    )
    assert found[("drbackup_run_failures_total", ("kind", "backup"), ("target", "app"))] == 0
    assert found[("drbackup_job_runs_total", ("job", "nightly"), ("status", "failed"))] == 0
    assert not [name for name, *_ in found if name.endswith("_created")]
