"""EphemeralCluster against real PostgreSQL servers, plus its pure argv/settings/log helpers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from drbackup.errors import SourceError
from drbackup.sources.postgres import cluster as pgcluster
from drbackup.sources.postgres.cluster import (
    EphemeralCluster,
    RunAs,
    cleanup_stale,
    find_pg_bin_dir,
    free_port,
    is_postmaster_of,
    read_postmaster_pid,
)
from tests.fixtures.pg import PgDatabase

# Starts a cluster in argv[1]; argv[2] is "detach" (start and exit) or "wait" (start, sleep).
OWNER_SCRIPT = """
import sys, time
from pathlib import Path
from drbackup.sources.postgres.cluster import EphemeralCluster
cluster = EphemeralCluster(Path(sys.argv[1]), fast=True, detach=sys.argv[2] == "detach")
print(cluster.start().port, flush=True)
if sys.argv[2] == "wait":
    time.sleep(600)
"""


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A directory under the system temp dir that the server's user can traverse."""
    path = Path(tempfile.mkdtemp(prefix="drbackup-test-"))
    path.chmod(0o755)
    yield path
    cleanup_stale(path)
    shutil.rmtree(path, ignore_errors=True)


def start_owner_process(base_dir: Path, mode: str) -> tuple[subprocess.Popen[str], int]:
    """Run OWNER_SCRIPT in a child Python; returns it and the port its cluster listens on."""
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER_SCRIPT, str(base_dir), mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip().isdigit(), f"owner process failed (exit {proc.wait()})"
    return proc, int(line)


def wait_until_stopped(data_dir: Path, timeout: float = 30.0) -> bool:
    """Poll until no server serves ``data_dir``; False if one still does after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        pid = read_postmaster_pid(data_dir)
        if pid is None or not is_postmaster_of(pid, data_dir):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# --- one shared cluster -------------------------------------------------------------------


def test_cluster_serves_queries_on_loopback(pg_cluster: EphemeralCluster) -> None:
    assert pg_cluster.host == "127.0.0.1"
    assert pg_cluster.dsn() == f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/postgres"
    assert pg_cluster.execute("SELECT 1 + 1") == [(2,)]
    assert pg_cluster.execute("SHOW listen_addresses") == [("127.0.0.1",)]
    assert pg_cluster.execute("SHOW fsync") == [("off",)]  # the session cluster is fast
    assert pg_cluster.execute("SHOW server_encoding") == [("UTF8",)]
    major = pgcluster.server_major_version(pg_cluster.bin_dir)
    assert pg_cluster.server_version_num // 10000 == major


def test_execute_takes_params_and_several_statements(pg_cluster: EphemeralCluster) -> None:
    assert pg_cluster.execute("SELECT %s::int * 2", params=(21,)) == [(42,)]
    rows = pg_cluster.execute("CREATE TEMP TABLE t (x int); INSERT INTO t VALUES (7); TABLE t")
    assert rows == [(7,)]
    assert pg_cluster.execute("SET work_mem = '8MB'") == []


def test_execute_raises_sql_errors(pg_cluster: EphemeralCluster) -> None:
    with pytest.raises(psycopg.errors.UndefinedTable):
        pg_cluster.execute("SELECT * FROM no_such_table")


def test_server_runs_as_unprivileged_user_when_root(pg_cluster: EphemeralCluster) -> None:
    if os.geteuid() == 0:
        assert pg_cluster.run_as is not None
        assert pg_cluster.data_dir.stat().st_uid == pg_cluster.run_as.uid
    else:
        assert pg_cluster.run_as is None
        assert pg_cluster.data_dir.stat().st_uid == os.geteuid()


def test_pg_db_is_a_fresh_database(pg_db: PgDatabase) -> None:
    assert pg_db.dsn.endswith(f"/{pg_db.name}")
    assert pg_db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == [(0,)]
    pg_db.execute("CREATE TABLE marker (id int)")
    with psycopg.connect(pg_db.dsn) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (pg_db.name,)


def test_pg_db_is_dropped_even_with_open_sessions(pg_cluster: EphemeralCluster) -> None:
    pg_cluster.create_database("doomed")
    with pg_cluster.connect("doomed"):
        pg_cluster.drop_database("doomed")
    assert pg_cluster.execute("SELECT 1 FROM pg_database WHERE datname = 'doomed'") == []


# --- lifecycle ----------------------------------------------------------------------------


def test_stop_is_idempotent_and_restart_keeps_data(pg_cluster_factory) -> None:
    cluster = pg_cluster_factory()
    cluster.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('yes')")
    cluster.stop()
    assert not cluster.is_running
    assert read_postmaster_pid(cluster.data_dir) is None
    cluster.stop()
    cluster.start()
    assert cluster.execute("TABLE kept") == [("yes",)]


def test_two_clusters_run_at_once_on_different_ports(pg_cluster_factory) -> None:
    first, second = pg_cluster_factory(), pg_cluster_factory()
    assert first.port != second.port
    for cluster in (first, second):
        (served,) = cluster.execute("SELECT current_setting('data_directory')")[0]
        assert os.path.realpath(served) == os.path.realpath(cluster.data_dir)


def test_settings_are_applied_and_durability_kept_by_default(pg_cluster_factory) -> None:
    cluster = pg_cluster_factory(fast=False, settings={"application_name": "it's me"})
    assert cluster.execute("SHOW fsync") == [("on",)]
    assert cluster.execute("SHOW application_name") == [("it's me",)]


def test_context_manager_and_destroy_remove_the_directory() -> None:
    with EphemeralCluster(fast=True) as cluster:
        assert cluster.is_running
        base_dir = cluster.base_dir
        assert (cluster.data_dir / "PG_VERSION").exists()
    assert not base_dir.exists()
    cluster.destroy()  # idempotent


def test_destroy_stops_a_cluster_another_process_left_running(scratch_dir: Path) -> None:
    base_dir = scratch_dir / "left"
    proc, port = start_owner_process(base_dir, "detach")
    assert proc.wait() == 0
    stale = EphemeralCluster(base_dir, port=port)
    assert stale.is_running
    stale.destroy()
    assert not base_dir.exists()


def test_cleanup_stale_stops_servers_under_a_directory(scratch_dir: Path) -> None:
    proc, port = start_owner_process(scratch_dir / "one", "detach")
    assert proc.wait() == 0
    data_dir = scratch_dir / "one" / "data"
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert cleanup_stale(scratch_dir) == [data_dir]
    assert wait_until_stopped(data_dir, timeout=0)
    assert cleanup_stale(scratch_dir) == []


def test_server_stops_when_its_owner_is_killed(scratch_dir: Path) -> None:
    proc, _ = start_owner_process(scratch_dir / "owned", "wait")
    data_dir = scratch_dir / "owned" / "data"
    assert read_postmaster_pid(data_dir) is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_until_stopped(data_dir), "postmaster outlived the process that started it"


# --- failures -----------------------------------------------------------------------------


def assert_one_line_start_error(error: SourceError, *fragments: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert message.startswith("postgresql server in ")
    assert " failed to start on 127.0.0.1:" in message
    for fragment in fragments:
        assert fragment in message
    assert error.hint is not None and error.hint.startswith("see the server log ")


def test_start_fails_when_port_is_taken_by_another_program() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        cluster = EphemeralCluster(port=holder.getsockname()[1], fast=True)
        try:
            with pytest.raises(SourceError) as caught:
                cluster.start()
        finally:
            cluster.destroy()
    assert_one_line_start_error(caught.value, "Address already in use")
    assert not cluster.base_dir.exists()


def test_start_fails_when_port_is_taken_by_another_cluster(
    pg_cluster: EphemeralCluster, pg_cluster_factory
) -> None:
    with pytest.raises(SourceError) as caught:
        pg_cluster_factory(port=pg_cluster.port)
    message = str(caught.value)
    assert "\n" not in message
    assert "already in use" in message
    assert pg_cluster.execute("SELECT 1") == [(1,)]  # the first one is untouched


def test_start_fails_on_a_bad_setting(pg_cluster_factory) -> None:
    with pytest.raises(SourceError) as caught:
        pg_cluster_factory(settings={"shared_buffers": "lots"})
    assert_one_line_start_error(
        caught.value, "(exit 1)", 'invalid value for parameter "shared_buffers": "lots"'
    )


def test_invalid_setting_name_is_refused_before_start() -> None:
    with pytest.raises(SourceError, match=r"^invalid postgresql setting name: 'port = 1; x'$"):
        EphemeralCluster(Path("/nonexistent"), settings={"port = 1; x": "1"})


def test_find_pg_bin_dir_finds_server_binaries() -> None:
    bin_dir = find_pg_bin_dir(min_major=10)
    assert (bin_dir / "initdb").exists() and (bin_dir / "postgres").exists()


def test_find_pg_bin_dir_explains_what_is_missing(monkeypatch, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"^postgresql server binaries >= 999 not found \(found "):
        find_pg_bin_dir(min_major=999)
    monkeypatch.setenv("DRBACKUP_PG_BIN", str(tmp_path))
    with pytest.raises(SourceError) as caught:
        find_pg_bin_dir()
    assert (
        str(caught.value) == f"postgresql server binaries not found in DRBACKUP_PG_BIN={tmp_path}"
    )
    assert caught.value.hint is not None and "install postgresql" in caught.value.hint


def test_free_port_returns_a_bindable_port() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# --- pure helpers (no servers) ---------------------------------------------------------------

POSTGRES = RunAs("postgres", 101, 104, (104, 103))


def test_build_run_prefix_drops_root_with_setpriv_and_ties_to_parent() -> None:
    prefix = pgcluster.build_run_prefix(
        POSTGRES, setpriv="/usr/bin/setpriv", runuser="/usr/sbin/runuser", pdeathsig=True
    )
    assert prefix == [
        "/usr/bin/setpriv",
        "--reuid=postgres",
        "--regid=104",
        "--init-groups",
        "--pdeathsig",
        "INT",
        "--",
    ]


def test_build_run_prefix_variants() -> None:
    build = pgcluster.build_run_prefix
    assert build(None, setpriv="/s", runuser=None, pdeathsig=False) == []
    assert build(None, setpriv="/s", runuser=None, pdeathsig=True) == [
        "/s",
        "--pdeathsig",
        "INT",
        "--",
    ]
    assert build(None, setpriv=None, runuser=None, pdeathsig=True) == []
    assert build(POSTGRES, setpriv=None, runuser="/r", pdeathsig=True) == [
        "/r",
        "-u",
        "postgres",
        "--",
    ]
    with pytest.raises(SourceError, match="needs setpriv or runuser"):
        build(POSTGRES, setpriv=None, runuser=None, pdeathsig=False)


def test_build_initdb_argv() -> None:
    argv = pgcluster.build_initdb_argv(
        Path("/pg/bin"), Path("/c/data"), superuser="postgres", locale="C.UTF-8", no_sync=True
    )
    assert argv == [
        "/pg/bin/initdb",
        "-D",
        "/c/data",
        "-U",
        "postgres",
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C.UTF-8",
        "--no-sync",
    ]


def test_build_server_settings_fast_and_overrides() -> None:
    settings = pgcluster.build_server_settings(
        5433, Path("/c/socket"), fast=True, extra={"fsync": "on", "work_mem": "8MB"}
    )
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "port": "5433",
        "unix_socket_directories": "/c/socket",
        "fsync": "on",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "work_mem": "8MB",
    }
    slow = pgcluster.build_server_settings(5433, Path("/s"), fast=False)
    assert "fsync" not in slow


def test_render_settings_quotes_values() -> None:
    text = pgcluster.render_settings({"application_name": "it's a\\b"})
    assert text.splitlines()[1] == "application_name = 'it''s a\\\\b'"


def test_choose_locale() -> None:
    assert pgcluster.choose_locale(["C", "C.utf8", "POSIX"]) == "C.UTF-8"
    assert pgcluster.choose_locale(["C.UTF-8"]) == "C.UTF-8"
    assert pgcluster.choose_locale(["C", "POSIX"]) == "C"


def test_parse_major_version() -> None:
    assert pgcluster.parse_major_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0)") == 15
    assert pgcluster.parse_major_version("PostgreSQL 9.6.24") == 9
    with pytest.raises(SourceError, match="cannot read a postgresql version"):
        pgcluster.parse_major_version("bash: postgres: not found")


def test_summarize_log_keeps_the_errors_on_one_line() -> None:
    log = (
        "2024-05-01 10:00:00.123 UTC [42] LOG:  starting PostgreSQL 15.18 on x86_64\n"
        '2024-05-01 10:00:00.124 UTC [42] LOG:  could not bind IPv4 address "127.0.0.1": '
        "Address already in use\n"
        "2024-05-01 10:00:00.124 UTC [42] HINT:  Is another postmaster already running?\n"
        "2024-05-01 10:00:00.125 UTC [42] FATAL:  could not create any TCP/IP sockets\n"
        "2024-05-01 10:00:00.126 UTC [42] LOG:  database system is shut down\n"
    )
    assert pgcluster.summarize_log(log) == (
        'LOG: could not bind IPv4 address "127.0.0.1": Address already in use; '
        "FATAL: could not create any TCP/IP sockets"
    )
    assert pgcluster.summarize_log("one\ntwo\n\nthree\nfour\n") == "two; three; four"
    assert pgcluster.summarize_log("") == "no output"


def test_is_searchable_follows_owner_group_other() -> None:
    assert pgcluster.is_searchable(0o700, 101, 0, POSTGRES)
    assert not pgcluster.is_searchable(0o070, 101, 104, POSTGRES)  # owner bits rule for owner
    assert pgcluster.is_searchable(0o710, 0, 103, POSTGRES)
    assert not pgcluster.is_searchable(0o700, 0, 0, POSTGRES)
    assert pgcluster.is_searchable(0o701, 0, 0, POSTGRES)


def test_find_unsearchable_parent(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    closed.chmod(stat.S_IRWXU)
    stranger = RunAs("stranger", os.geteuid() + 4242, 4242, (4242,))
    assert pgcluster.find_unsearchable_parent(closed / "inner" / "c", stranger) in {
        closed,
        *closed.parents,
    }
    me = RunAs("me", os.geteuid(), os.getegid(), tuple(os.getgroups()))
    assert pgcluster.find_unsearchable_parent(closed / "inner" / "c", me) is None
