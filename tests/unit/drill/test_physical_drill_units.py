"""The pure parts of physical drills: points, the RTO's phases, the history per kind, the
daemon's heartbeat jobs."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.schedulers.background import BackgroundScheduler

from drbackup.drill.checks import check_rto
from drbackup.drill.history import rto_trend
from drbackup.drill.points import point_from_option, random_second
from drbackup.errors import UsageError
from drbackup.scheduler.source_heartbeat import install_heartbeats


def test_random_seconds_cover_the_window_uniformly_and_stay_inside_it():
    oldest = datetime(2026, 12, 1, 0, 0, 0, 400_000, tzinfo=UTC)
    newest = oldest.replace(microsecond=0) + timedelta(seconds=9)
    rng = random.Random(7)
    drawn = [random_second(oldest, newest, rng) for _ in range(2000)]
    assert all(d.microsecond == 0 for d in drawn)
    assert min(drawn) == oldest.replace(microsecond=0) and max(drawn) == newest
    counts = [drawn.count(oldest.replace(microsecond=0) + timedelta(seconds=n)) for n in range(10)]
    assert min(counts) > 150  # 200 expected each


def test_a_bad_point_option_is_a_one_line_usage_error():
    with pytest.raises(UsageError) as caught:
        point_from_option("yesterday")
    assert caught.value.message == "invalid point 'yesterday'"
    assert point_from_option("0/16B3748").describe() == "LSN 0/16B3748"


def test_the_rto_of_a_physical_drill_names_its_phases():
    timings = {
        "restore_s": 5.0,
        "verification_s": 2.0,
        "data_s": 0.0,
        "fetch_extract_s": 1.0,
        "recovery_s": 4.0,
    }
    result = check_rto(timings, timedelta(minutes=1), restored=True)
    assert result.status == "pass"
    assert "base backup fetch/extract 1.0s, WAL fetch and replay 4.0s, verification 2.0s" in (
        result.summary
    )


def test_physical_drills_have_their_own_rto_trend():
    def entry(n, kind, total):
        return {
            "drill_id": f"d{n}",
            "started_at": f"2026-12-0{n}T00:00:00+00:00",
            "target": "app",
            "kind": kind,
            "total_s": total,
            "rto_s": 60.0,
        }

    trend = rto_trend([entry(1, "logical", 30), entry(2, "physical", 10), entry(3, "logical", 33)])
    assert trend["app"]["series"] == [30, 33]
    assert trend["app (physical)"]["series"] == [10]


def test_the_daemon_schedules_a_heartbeat_for_targets_that_ask(tmp_path):
    class Cfg:
        def __init__(self, on):
            self.heartbeat, self.heartbeat_interval = on, timedelta(seconds=7)

    app = type(
        "App", (), {"config": type("C", (), {"postgres": {"a": Cfg(True), "b": Cfg(False)}})}
    )
    events = []
    scheduler = BackgroundScheduler(timezone="UTC")
    assert install_heartbeats(scheduler, app, lambda *a, **k: events.append((a, k))) == ["a"]
    (job,) = scheduler.get_jobs()
    assert job.id == "source-heartbeat:a" and job.trigger.interval == timedelta(seconds=7)
    assert events == [(("source_heartbeat_scheduled",), {"target": "a", "interval_s": 7.0})]


def test_the_drill_page_shows_a_physical_drills_phases():
    from drbackup.drill.record import Timings
    from drbackup.report.drillview import phases

    timings = Timings(restore_s=5.0, verification_s=2.0)
    timings.extra.update(fetch_extract_s=1.0, recovery_s=4.0)
    shown = [(p.label, p.seconds) for p in phases(timings)]
    assert shown == [
        ("base backup fetch/extract", 1.0),
        ("WAL fetch and replay", 4.0),
        ("verification", 2.0),
    ]


def test_a_restores_own_wal_fetch_imports_no_client_library_config_or_repository():
    """A restore's server runs ``wal-fetch --no-spawn`` once per WAL file: its imports were
    most of a second per file (psycopg, pydantic's config, the repository and codec)."""
    import subprocess
    import sys

    code = (
        "import sys, drbackup.cli.wal, drbackup.actions.wal_fetch, drbackup.sources.postgres.wal;"
        "heavy = [m for m in ('psycopg', 'drbackup.config.schema', 'drbackup.repository.repo',"
        " 'drbackup.codec.pipeline', 'boto3') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_databases_verified_at_once_come_back_in_order_each_with_its_own_findings(monkeypatch):
    from drbackup.drill import physical_checks
    from drbackup.drill.checks import CheckResult
    from drbackup.drill.runner import DatabaseUnderTest, Verification
    from drbackup.errors import SourceError

    started = []

    def verify(db, plan, assertions):  # the first database is the slowest
        started.append(db.database)
        if db.database == "gone":
            raise SourceError('database "gone" does not exist')
        time.sleep({"slow": 0.3, "fast": 0.2}[db.database])
        found = CheckResult("amcheck", "fail" if db.database == "slow" else "pass", "", {})
        found.database = db.database
        return Verification([found, *assertions], 0.1)

    monkeypatch.setattr(physical_checks, "verify_restored", verify)
    dbs = [
        DatabaseUnderTest("app", name, name, f"dbname={name}", None, None)
        for name in ("slow", "fast", "gone")
    ]
    verified, seconds = physical_checks.verify_cluster([(db, []) for db in dbs], None, jobs=2)
    assert sorted(started) == ["fast", "gone", "slow"]
    assert [[(r.database, r.name, r.status) for r in v.results] for v in verified] == [
        [("slow", "amcheck", "fail")],
        [("fast", "amcheck", "pass")],
        [("gone", "verification", "fail")],
    ]
    assert verified[2].results[0].summary == 'could not verify gone: database "gone" does not exist'
    assert verified[2].results[0].target == "app"
    assert 0.3 <= seconds < 0.45  # two at a time: 0.3 s, where one after another takes 0.5
