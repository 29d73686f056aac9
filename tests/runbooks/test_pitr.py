"""docs/pitr.md's runbook, run as written: a point-in-time restore from an S3 repository
with a config that names nothing but the repository and the key.

A server archives its WAL through ``wal-push`` into the S3 test server; after a base backup
it commits one order every ~0.3 s for a few seconds, then "the damage" (every order
deleted).  The runbook restores to a second in the middle, checks the data with the
printed ``psql`` line, stops the server and cleans the recovery settings.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from drbackup.actions.backup_physical import backup_physical
from drbackup.sources.postgres.cluster import resolve_run_as, stop_postmaster
from tests.fixtures.walarchive import (
    ARCHIVE_SETTINGS,
    PASSPHRASE,
    make_wal_home,
    switch_wal,
    wait_archived,
)
from tests.runbooks.backup_host import repository_secrets, repository_section, write_secrets
from tests.runbooks.conftest import CHECKOUT_BIN
from tests.runbooks.markdown import load_runbook
from tests.runbooks.runner import RunbookRun, from_output

SECOND = dt.timedelta(seconds=1)


def server_readable_dir() -> Path:
    """A fresh directory under /tmp that the server's OS user can reach (for key files and
    the restored data directory; pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="drbackup-runbook-"))
    path.chmod(0o755)
    return path


def keys(s3_server) -> dict[str, str]:
    """The secret files, with the passphrase of the WAL fixtures' repository."""
    return {**repository_secrets(s3_server), "drbackup-passphrase": PASSPHRASE}


@pytest.fixture
def archived(s3_server, s3_bucket, pg_cluster_factory):
    """A server archiving into ``s3://BUCKET/prod``, a base backup, orders committed over a
    few seconds, then all deleted; the cluster and the commit times of the orders."""
    server_user = resolve_run_as()
    owner = (server_user.uid, server_user.gid) if server_user else None
    readable = write_secrets(server_readable_dir(), keys(s3_server), owner)
    s3 = repository_section(s3_server, s3_bucket, readable)["s3"]
    home = make_wal_home(repo_url=f"s3://{s3_bucket}/prod", s3=s3)
    settings = {**ARCHIVE_SETTINGS, "archive_command": home.archive_command()}
    cluster = pg_cluster_factory(settings=settings)
    home.set_dsn(cluster.dsn())
    cluster.execute("CREATE TABLE orders (id serial PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT clock_timestamp())")  # fmt: skip
    backup_physical(home.app(), "app")
    committed = []
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        with cluster.connect() as conn:
            row = conn.execute("INSERT INTO orders DEFAULT VALUES RETURNING created_at")
            committed.append(row.fetchone()[0])
        time.sleep(0.3)  # spreads the orders over seconds; nothing waits on it
    cluster.execute("DELETE FROM orders")  # the damage
    segment = switch_wal(cluster)
    wait_archived(cluster, segment)
    yield cluster, committed, segment
    shutil.rmtree(home.root, ignore_errors=True)
    shutil.rmtree(readable, ignore_errors=True)


def test_the_point_in_time_runbook(archived, tmp_path, s3_server, s3_bucket, shell_factory):
    cluster, committed, segment = archived
    when = committed[len(committed) // 2].replace(microsecond=0)
    expected = [t for t in committed if t < when + SECOND]
    assert 0 < len(expected) < len(committed)
    secrets = write_secrets(tmp_path / "secrets", keys(s3_server))
    restore_root = server_readable_dir()
    data_dir = restore_root / "restored"
    values = {
        "CONFIG": str(tmp_path / "restore.yaml"),
        "REPO_URL": f"s3://{s3_bucket}/prod",
        "S3_ENDPOINT": s3_server.endpoint_url,
        "SECRETS": str(secrets),
        "DATA_DIR": str(data_dir),
        "PG_BIN": str(cluster.bin_dir),
        "WHEN": when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "RUN_DIR": from_output(r"socket directory (\S+)/socket,"),
        "PORT": from_output(r"server running on port (\d+),"),
    }
    run = RunbookRun(load_runbook("pitr", ["docs/pitr.md"]), values, shell_factory(tmp_path))
    try:
        run.run_through("-Atc 'SELECT count(*), max(created_at) FROM orders'")
        count, newest = run.outputs[-1].strip().split("|")
        assert int(count) == len(expected)  # every order of that second, none after
        assert dt.datetime.fromisoformat(newest) == max(expected)
        run.run_rest()
        assert not (data_dir / "postmaster.pid").exists()  # stopped
        assert "drbackup" not in (data_dir / "postgresql.auto.conf").read_text()
        check_restore_command(Path(values["CONFIG"]), segment, tmp_path / "started-by-hand")
    finally:
        stop_postmaster(data_dir)  # a failed step may leave the restored server running
        shutil.rmtree(restore_root, ignore_errors=True)


def check_restore_command(config: Path, segment: str, data_dir: Path) -> None:
    """Step 5: a directory restored without --start is started by PostgreSQL, whose
    restore_command runs ``drbackup -c CONFIG wal-fetch --target app %f %p`` in the data
    directory; the runbook's CONFIG names no target, and serves it."""
    (data_dir / "pg_wal").mkdir(parents=True)
    argv = [f"{CHECKOUT_BIN}/drbackup", "-c", str(config), "wal-fetch", "--target", "app"]
    fetched = subprocess.run(
        [*argv, segment, "pg_wal/RECOVERYXLOG"], cwd=data_dir, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    assert (data_dir / "pg_wal" / "RECOVERYXLOG").stat().st_size == 16 * 1024 * 1024
