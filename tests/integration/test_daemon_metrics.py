"""The daemon's drill series come from the catalog: a drill run from the command line reaches
a running daemon's /metrics, and a failed drill is still failed after a restart."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drbackup.catalog import Catalog
from drbackup.catalog.drills import record_drill
from drbackup.config import Config
from drbackup.drill.record import DrillReport
from drbackup.drill.report import build_report
from drbackup.drill.scratch import new_drill_id
from drbackup.scheduler.daemon import Daemon
from tests.e2e.conftest import wait_for


def drill_report(status: str, started: datetime, total_s: float | None) -> DrillReport:
    """A report as ``drill run`` builds it (one target, one check), typed as the catalog
    takes it (drill/record.py)."""
    check = {"name": "tables", "target": "app", "database": "app", "status": status,
             "summary": "row counts differ" if status == "fail" else "match",
             "seconds": 0.2, "evidence": {}}  # fmt: skip
    timings = {} if total_s is None else {"total_s": total_s, "restore_s": total_s - 1}
    target = {"target": "app", "backup_id": "20261123T020000Z-aaaaaa", "selection": "latest",
              "timings": timings, "objectives": {"rto_s": 900.0}}  # fmt: skip
    report = build_report(
        drill_id=new_drill_id(started),
        plan=None,
        started_at=started,
        finished_at=started + timedelta(seconds=60),
        repository={"id": "r", "url": "/repo"},
        targets=[target],
        checks=[check],
    )
    return DrillReport.from_dict(report)


@pytest.fixture
def config(tmp_path, monkeypatch) -> Config:
    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path))
    (tmp_path / "schedules").mkdir()
    (tmp_path / "schedules" / "jobs.yaml").write_text(
        "jobs: {monthly: {kind: drill, cron: '0 5 1 * *'}}\n"
    )
    return Config.model_validate(
        {
            "repository": {"url": str(tmp_path / "repo")},
            "catalog": f"sqlite:///{tmp_path / 'catalog.db'}",
            "postgres": {
                "app": {"dsn": "postgresql://x@127.0.0.1:1/app", "databases": ["app"], "rto": "15m"}
            },
        }
    )


def scrape(daemon: Daemon) -> dict[tuple, float]:
    with urllib.request.urlopen(f"http://{daemon.http.address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, *sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def start(config: Config, tmp_path) -> Daemon:
    daemon = Daemon(
        config, str(tmp_path / "schedules"), listen="127.0.0.1:0", probe_interval=0.2, grace=1
    )
    daemon.start()
    return daemon


def test_cli_drills_reach_a_running_daemon_and_survive_its_restart(config, tmp_path):
    passed = ("drbackup_drill_passed", ("target", "app"))
    measured = ("drbackup_drill_measured_rto_seconds", ("target", "app"))
    now = datetime.now(UTC)
    with Catalog.open(str(config.catalog)) as catalog:
        record_drill(catalog, drill_report("pass", now - timedelta(days=2), 300.0))
    daemon = start(config, tmp_path)
    try:
        metrics = scrape(daemon)
        assert (metrics[passed], metrics[measured]) == (1, 300)
        assert metrics[("drbackup_rto_objective_seconds", ("target", "app"))] == 900
        # `drbackup drill run` on the command line records a failed drill meanwhile
        with Catalog.open(str(config.catalog)) as catalog:
            record_drill(catalog, drill_report("fail", now - timedelta(hours=1), None))
        wait_for(lambda: scrape(daemon)[passed] == 0, 10, "the CLI drill in /metrics")
        assert measured not in scrape(daemon)  # it restored nothing: no time, not the old one
    finally:
        daemon.stop()
    restarted = start(config, tmp_path)
    try:
        metrics = scrape(restarted)
        assert metrics[passed] == 0  # a failed drill stays failed across restarts
        last_pass = ("drbackup_drill_last_pass_timestamp_seconds", ("target", "app"))
        assert metrics[last_pass] == pytest.approx((now - timedelta(days=2)).timestamp())
        failed = ("drbackup_runs_total", ("kind", "drill"), ("status", "failed"), ("target", "app"))
        assert metrics[failed] == 0  # declared at 0: the first failure shows in increase()
    finally:
        restarted.stop()
