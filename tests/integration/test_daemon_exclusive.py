"""The daemon's truthfulness and exclusivity: a run refused by a lock fails no job and pages
nobody; two daemons never share one SQLite catalog (the second is refused in one line).
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from drbackup.catalog import Catalog
from tests.integration.test_daemon import job_rows, write_schedule


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
