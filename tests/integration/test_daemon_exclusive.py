"""The daemon's truthfulness and exclusivity: a run refused by a lock fails no job and pages
nobody; two daemons never share one SQLite catalog (the second is refused in one line).
"""

from __future__ import annotations

import socket
import subprocess

import yaml
from prometheus_client.parser import text_string_to_metric_families

from drbackup.catalog import Catalog
from drbackup.scheduler.locks import JOB_RUN_KIND
from tests.e2e.conftest import cli_argv
from tests.integration.test_daemon import DaemonProcess, job_rows, run_once, write_schedule


class RefusingRunner:
    """The action declines: another backup of the target holds its lock."""

    def __init__(self):
        self.calls = 0

    def run(self, config, job, target, timeout, cancel_at):
        from drbackup.scheduler.jobs import ActionError

        self.calls += 1
        raise ActionError("another backup of target app is running", kind="LockedError")


def metrics_of(daemon) -> dict[tuple, float]:
    return {
        (s.name, *sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(daemon.metrics.render().decode())
        for s in f.samples
    }


def test_a_refused_run_fails_no_job_is_not_retried_and_is_not_a_failure(tmp_path, monkeypatch):
    from drbackup.config import Config
    from drbackup.scheduler.daemon import Daemon

    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path))
    config = Config.model_validate(
        {
            "catalog": f"sqlite:///{tmp_path / 'catalog.db'}",
            "postgres": {"app": {"dsn": "postgresql://x@127.0.0.1:1/app", "databases": ["app"]}},
        }
    )
    schedules = write_schedule(
        tmp_path / "schedules",
        "jobs: {nightly: {kind: backup, cron: '0 1 * * *',"
        " retry: {attempts: 3, backoff: 1, max_backoff: 1}}}\n",
    )
    runner = RefusingRunner()
    daemon = Daemon(config, str(schedules), runner=runner)
    assert daemon.run_once("nightly") == "ok"  # no failure notification is sent
    assert runner.calls == 1  # a refusal is final: retrying would only be refused again
    (row,) = job_rows(config.catalog, "nightly")
    assert (row.status, row.error) == ("ok", None)
    assert row.details["results"]["app"] == {
        "status": "refused",
        "error": "another backup of target app is running",
        "attempts": 1,
    }
    metrics = metrics_of(daemon)
    key = ("drbackup_runs_total", ("kind", "backup"), ("status", "refused"), ("target", "app"))
    assert metrics[key] == 1
    assert ("drbackup_run_failures_total", ("kind", "backup"), ("target", "app")) not in metrics
    with Catalog.open(config.catalog) as catalog:  # backup records its own runs: none here
        assert catalog.runs(kind="backup") == []


# -- one daemon per SQLite catalog ------------------------------------------------------------


def test_a_second_daemon_on_one_sqlite_catalog_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path))
    database = tmp_path / "catalog.db"
    config = tmp_path / "drbackup.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "repository": {"url": str(tmp_path / "repo")},
                "catalog": f"sqlite:///{database}",
                "postgres": {
                    "app": {"dsn": "postgresql://x@127.0.0.1:1/app", "databases": ["app"]}
                },
            }
        )
    )
    schedules = write_schedule(
        tmp_path / "schedules", "jobs: {nightly: {kind: backup, cron: '0 1 1 1 *'}}\n"
    )
    first = DaemonProcess(config, schedules)
    try:
        first.wait_event("started")
        with Catalog.open(f"sqlite:///{database}") as catalog:  # a run the first daemon is doing
            live = catalog.start_run(JOB_RUN_KIND, "nightly", details={"replica": "first"})

        second = subprocess.run(
            cli_argv("--config", str(config), "daemon", "--schedules", str(schedules), "--listen", "off"),
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert second.returncode == 1, second.stderr
        lines = second.stderr.splitlines()
        assert len(lines) == 2, second.stderr
        prefix = (
            f"drbackup: error: another drbackup daemon is running on the catalog {database} "
            f"(pid {first.proc.pid} on {socket.gethostname()}, since "
        )
        assert lines[0].startswith(prefix) and lines[0].endswith("+00:00)")
        assert lines[1] == (
            "hint: run one daemon per SQLite catalog; several replicas need a PostgreSQL catalog "
            "(catalog: postgresql://...)"
        )
        once = run_once(config, schedules, "nightly")
        assert once.returncode == 1 and once.stderr.splitlines()[0].startswith(prefix)
        with Catalog.open(f"sqlite:///{database}") as catalog:
            (row,) = [r for r in catalog.runs(kind=JOB_RUN_KIND) if r.id == live]
            assert row.status == "running"  # the live run was not marked abandoned
        assert first.proc.poll() is None
    finally:
        assert first.stop() == 0

    third = DaemonProcess(config, schedules)  # the lock went with the first daemon
    try:
        third.wait_event("started")
        third.wait_event("run_abandoned", run_id=live)  # now it really was
    finally:
        third.stop()
