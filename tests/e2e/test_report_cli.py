"""``drbackup report``: nagios exit codes 0 OK / 1 WARNING / 2 CRITICAL / 3 UNKNOWN, formats."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from drbackup.actions.context import AppContext
from drbackup.config import load_config
from drbackup.drill.report import build_report
from drbackup.drill.scratch import new_drill_id
from drbackup.repository.reports import report_key
from tests.fixtures.s3server import free_port


def store_drill(cfg, status: str = "pass", days_ago: float = 1) -> str:
    """A drill report for target ``app`` in the repository, as the drill runner stores it."""
    app = AppContext(load_config(str(cfg.path)))
    repo = app.repository()
    started = datetime.now(UTC) - timedelta(days=days_ago)
    drill_id = new_drill_id(started)
    check = {"name": "tables", "target": "app", "database": "app", "status": status,
             "summary": "row counts and hashes match", "seconds": 0.5, "evidence": {}}  # fmt: skip
    target = {"target": "app", "backup_id": repo.list_refs("app")[-1].backup_id,
              "selection": "latest", "timings": {"total_s": 42.0, "restore_s": 30.0},
              "objectives": {"rto_s": 3600}}  # fmt: skip
    report = build_report(
        drill_id=drill_id,
        plan=None,
        started_at=started,
        finished_at=started + timedelta(seconds=42),
        repository={"id": repo.id, "url": repo.url},
        targets=[target],
        checks=[check],
    )
    repo.put_document(report_key("app", drill_id), report)
    return drill_id


def test_ok_when_backed_up_and_drilled(local_repo_config, run_cli):
    assert run_cli("backup", "postgres", "app").code == 0
    store_drill(local_repo_config)
    result = run_cli("report")
    assert result.code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert lines[0].startswith("drbackup health OK at ")
    assert lines[3].split()[:2] == ["app", "OK"]
    data = run_cli("report", "--format", "json").json()
    (app,) = data["targets"]
    assert (data["status"], data["exit_code"], app["restore_points"]) == ("OK", 0, 1)
    assert app["last_drill"]["status"] == "pass" and app["rto_trend_s"] == [42.0]


def test_warning_without_a_passing_drill_and_after_failed_runs(local_repo_config, run_cli):
    assert run_cli("backup", "postgres", "app").code == 0
    local_repo_config.set_target("broken", "postgresql://nobody@127.0.0.1:1/none")
    assert run_cli("backup", "postgres", "broken").code != 0  # a failed run in the catalog
    result = run_cli("report", "--target", "app", "--target", "broken")
    assert result.code == 2, result.stdout  # broken has no backup: CRITICAL wins
    result = run_cli("report", "--target", "app")
    assert result.code == 1, result.stdout
    assert "WARNING   app: no passing drill on record" in result.stdout.splitlines()
    broken = run_cli("report", "--target", "broken", "--format", "json").json()["targets"][0]
    assert broken["failed_runs_24h"] == 1
    assert any("failed run in the last 24h" in f["message"] for f in broken["findings"])


def test_critical_without_a_backup_or_after_a_failed_drill(local_repo_config, run_cli):
    result = run_cli("report", "--format", "markdown")
    assert result.code == 2
    assert "- **CRITICAL** app: no backup in the repository" in result.stdout
    assert run_cli("backup", "postgres", "app").code == 0
    drill_id = store_drill(local_repo_config, status="fail", days_ago=0.01)
    result = run_cli("report")
    assert result.code == 2
    assert f"CRITICAL  app: last drill {drill_id} failed: tables" in result.stdout.splitlines()


def test_unknown_when_the_s3_endpoint_is_down(local_repo_config, run_cli):
    local_repo_config.data["repository"] = {
        "url": "s3://gone/repo",
        "s3": {"endpoint_url": f"http://127.0.0.1:{free_port()}", "region": "us-east-1"},
    }
    local_repo_config.write()
    result = run_cli("report")
    assert result.code == 3, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0].endswith("repository s3://gone/repo UNREACHABLE")
    assert lines[-1].startswith("UNKNOWN   (all): repository unreachable: ")
    prom = run_cli("report", "--format", "prometheus")
    samples = {
        s.name: s.value for f in text_string_to_metric_families(prom.stdout) for s in f.samples
    }
    assert (prom.code, samples["drbackup_health_report_severity"]) == (3, 2)  # UNKNOWN: 2 of 3
    assert samples["drbackup_health_repository_up"] == 0


def test_output_file_and_help(local_repo_config, run_cli, tmp_path):
    out = tmp_path / "textfile" / "drbackup.prom"
    result = run_cli("report", "--format", "prometheus", "-o", out)
    assert (result.code, result.stdout) == (2, "")
    names = {f.name for f in text_string_to_metric_families(out.read_text())}
    assert {"drbackup_health_severity", "drbackup_health_restore_points"} <= names
    helptext = run_cli("report", "--help").stdout
    assert "Exit codes (nagios convention; unlike other commands):" in helptext
    for line in ("0  OK", "1  WARNING", "2  CRITICAL", "3  UNKNOWN"):
        assert line in helptext


def test_notify_without_destinations_is_a_config_error(local_repo_config, run_cli):
    result = run_cli("report", "--notify")
    assert result.code == 2
    assert result.error_lines == [
        "drbackup: error: no notification destinations configured",
        "hint: add 'notifications:' with urls_file (Apprise URLs), a webhook or email to the config (docs/daemon.md)",
    ]


def test_json_report_is_one_document(local_repo_config, run_cli):
    result = run_cli("report", "--format", "json")
    assert json.loads(result.stdout)["format"] == "drbackup-health-report"
