"""Commands that name what happened: a wrong key, an interrupted run, a correct refusal, a
mistyped target, a duration too long to mean anything.
"""

from __future__ import annotations

import signal

import psycopg
import pytest

from tests.e2e.conftest import wait_for
from tests.e2e.test_report_cli import store_drill

LOCK_TARGET_SQL = "SELECT pg_advisory_lock(hashtext('drbackup backup ' || 'app'))"


def findings(result) -> list[str]:
    """The findings part of a text report (after the table's blank line)."""
    return result.stdout.rsplit("\n\n", 1)[1].splitlines()


def test_a_wrong_key_is_critical_not_unreachable(local_repo_config, run_cli, monkeypatch):
    assert run_cli("backup", "postgres", "app").code == 0
    monkeypatch.setenv("DRBACKUP_PASSPHRASE", "not the passphrase")
    result = run_cli("report")
    assert result.code == 2, result.stdout
    assert result.stdout.splitlines()[0].endswith(
        f"repository {local_repo_config.local_root} WRONG KEY"
    )
    assert findings(result) == [
        "CRITICAL  (all): wrong key: wrong passphrase: it opens none of the repository's "
        "access slots"
    ]
    data = run_cli("report", "--format", "json").json()
    assert (data["status"], data["repository"]["wrong_key"]) == ("CRITICAL", True)


def test_an_interrupted_backup_is_reported_as_interrupted(
    local_repo_config, run_cli, spawn_cli, big_db
):
    local_repo_config.set_target("app", big_db.dsn)
    copying = (
        "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND application_name = 'pg_dump'"
        " AND state = 'active' AND query LIKE 'COPY public.accounts %%'"
    )
    with psycopg.connect(big_db.cluster.dsn(), autocommit=True) as watcher:
        proc = spawn_cli("backup", "postgres", "app")
        wait_for(
            lambda: watcher.execute(copying, (big_db.name,)).fetchone() or proc.poll() is not None,
            60,
            "pg_dump's COPY of the big table",
            interval=0.005,
        )
        proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert (proc.returncode, stderr.splitlines()[-1]) == (130, "drbackup: interrupted")

    result = run_cli("report")
    lines = findings(result)
    assert not [line for line in lines if "failed run" in line]
    (line,) = [line for line in lines if "interrupted" in line]
    assert line.startswith("WARNING   app: 1 interrupted run in the last 24h (latest: backup at ")
    assert line.endswith("Z: interrupted (Ctrl-C or SIGTERM))")
    data = run_cli("report", "--format", "json").json()["targets"][0]
    assert (data["failed_runs_24h"], data["interrupted_runs_24h"]) == (0, 1)


def test_a_refused_concurrent_backup_is_said_without_paging(local_repo_config, run_cli, pg_db):
    assert run_cli("backup", "postgres", "app").code == 0
    store_drill(local_repo_config)
    with psycopg.connect(pg_db.dsn, autocommit=True) as holder:
        holder.execute(LOCK_TARGET_SQL)
        refused = run_cli("backup", "postgres", "app")
    assert refused.code == 1
    assert refused.error_lines[0] == "drbackup: error: another backup of target app is running"

    result = run_cli("report")
    assert result.code == 0, result.stdout  # OK: nobody is paged for a correct refusal
    (line,) = findings(result)
    assert line.startswith(
        "OK        app: 1 run refused while another held the lock in the last 24h "
        "(latest: backup at "
    )
    assert line.endswith("Z: another backup of target app is running)")
    data = run_cli("report", "--format", "json").json()["targets"][0]
    assert (data["failed_runs_24h"], data["refused_runs_24h"]) == (0, 1)


def test_list_of_a_mistyped_target_is_a_usage_error(local_repo_config, run_cli):
    assert run_cli("backup", "postgres", "app").code == 0
    typo = run_cli("list", "--target", "ap")
    assert (typo.code, typo.stdout) == (2, "")
    assert typo.error_lines == [
        "drbackup: error: unknown target 'ap' (did you mean 'app'?)",
        "hint: known targets: app",
    ]
    listed = run_cli("list", "--target", "app", "--json")
    assert listed.code == 0 and len(listed.json()) == 1

    # a target no longer configured still lists the backups the repository holds
    local_repo_config.data["postgres"]["old"] = local_repo_config.data["postgres"].pop("app")
    local_repo_config.write()
    kept = run_cli("list", "--target", "app", "--json")
    assert kept.code == 0 and len(kept.json()) == 1


@pytest.mark.parametrize("value", ["999999999999d", "36501d", "99999999999999999999s"])
def test_a_duration_too_long_is_a_config_error_with_its_path(local_repo_config, run_cli, value):
    local_repo_config.data["postgres"]["app"]["rpo"] = value
    local_repo_config.write()
    result = run_cli("config", "check")
    assert result.code == 2
    assert result.error_lines == [
        f"drbackup: error: config {local_repo_config.path} has 1 error",
        f"at 'postgres.app.rpo': duration '{value}' is too long (at most 36500d, a century)",
    ]
    assert run_cli("report").code == 2  # every command, not only config check
