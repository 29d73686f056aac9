"""``--quiet`` for cron (issue 20): a backup or restore that succeeds prints nothing, not
even a progress bar on a terminal; errors and warnings are still printed."""

from __future__ import annotations

import uuid

import psycopg

from tests.fixtures.s3server import free_port
from tests.fixtures.terminal import on_a_terminal


def test_quiet_backup_and_restore_print_nothing_when_they_succeed(
    local_repo_config, pg_db, run_cli
):
    pg_db.execute("CREATE TABLE t (n integer); INSERT INTO t VALUES (1), (2), (3)")
    code, out, terminal = on_a_terminal("backup", "postgres", "app")
    assert (code, out.startswith("backup app/")) == (0, True), terminal
    assert "backup app" in terminal  # the bar draws on a terminal without --quiet
    assert on_a_terminal("backup", "postgres", "app", "--quiet") == (0, "", "")

    name = f"e2e_quiet_{uuid.uuid4().hex[:10]}"
    into = pg_db.cluster.dsn(name)
    try:
        restored = run_cli("restore", "postgres", "app", "--into", into, "--create", "-q")
        assert (restored.code, restored.stdout, restored.stderr) == (0, "", "")
        with psycopg.connect(into) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 3
    finally:
        pg_db.cluster.drop_database(name)


def test_quiet_still_prints_errors_and_refuses_json(local_repo_config, run_cli):
    both = run_cli("backup", "postgres", "app", "--quiet", "--json")
    assert (both.code, both.stdout, both.error_lines) == (
        2,
        "",
        ["drbackup: error: --quiet and --json exclude each other", "hint: drop one of them"],
    )
    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/app"
    local_repo_config.set_target("app", dsn)
    failed = run_cli("backup", "postgres", "app", "--quiet")
    assert (failed.code, failed.stdout) == (4, "")
    assert failed.error_lines == [
        f"drbackup: error: cannot connect to {dsn}: connection refused",
        "hint: check that the server is running and the dsn's host and port",
    ]
