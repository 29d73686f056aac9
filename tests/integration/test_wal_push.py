"""``wal-push`` as PostgreSQL's archive_command, run by the server as its own OS user."""

from __future__ import annotations

import os
import shutil

import pytest

from drbackup.actions.wal_push import push_spool
from drbackup.repository.wal import WalArchive
from tests.fixtures.walarchive import make_wal_home, switch_wal, wait_archived


def _archived_names(home) -> list[str]:
    archive = WalArchive(home.app().repository(), home.target)
    cluster = archive.current_cluster()
    return [s.name for s in archive.list_files(cluster)] if cluster else []


def test_the_server_archives_segments_through_the_background_pusher(wal_home, archiving_cluster):
    cluster = archiving_cluster(wal_home)
    names = [switch_wal(cluster) for _ in range(3)]
    wait_archived(cluster, names[-1])
    assert set(names) <= set(_archived_names(wal_home))
    spool = push_spool(wal_home.app(), "app", cluster.data_dir / "pg_wal").path
    assert (spool / "lock").exists()
    # The server crashed after the push but before it marked the file done, and the
    # acknowledgement is gone: it pushes the same file again, which succeeds.
    status = cluster.data_dir / "pg_wal" / "archive_status"
    os.rename(status / f"{names[0]}.done", status / f"{names[0]}.ready")
    (spool / f"{names[0]}.ok").unlink(missing_ok=True)
    again = wal_home.run("wal-push", "--target", "app", str(cluster.data_dir / "pg_wal" / names[0]))
    assert again.returncode == 0, again.stderr


def test_synchronous_mode_stores_each_file_itself(archiving_cluster):
    home = make_wal_home(asynchronous=False)
    try:
        cluster = archiving_cluster(home)
        name = switch_wal(cluster)
        wait_archived(cluster, name)
        assert name in _archived_names(home)
        assert not (home.root / "spool" / "app" / "push").exists()
    finally:
        shutil.rmtree(home.root, ignore_errors=True)


def test_other_content_under_an_archived_name_is_refused(wal_home, archiving_cluster):
    cluster = archiving_cluster(wal_home)
    name = switch_wal(cluster)
    wait_archived(cluster, name)
    forged = wal_home.root / name
    data = bytearray((cluster.data_dir / "pg_wal" / name).read_bytes())
    data[200_000] ^= 0xFF
    forged.write_bytes(bytes(data))
    result = wal_home.run("wal-push", "--target", "app", str(forged), as_server_user=False)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"drbackup: error: WAL file {name} is already archived for target app with different "
        "content; refusing to replace it"
    )
    assert "hint: two servers archive into one target" in result.stderr


def test_a_segment_of_another_cluster_is_refused(wal_home, archiving_cluster, pg_cluster_factory):
    cluster = archiving_cluster(wal_home)
    wait_archived(cluster, switch_wal(cluster))
    other = pg_cluster_factory(settings={"wal_level": "replica"})
    name = switch_wal(other)
    foreign = wal_home.root / name
    shutil.copy(other.data_dir / "pg_wal" / name, foreign)
    result = wal_home.run("wal-push", "--target", "app", str(foreign), as_server_user=False)
    assert result.returncode == 1
    assert "drbackup: error: WAL of another cluster: system identifier" in result.stderr
    assert "'drbackup wal register app' registers the new one" in result.stderr


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/nonexistent/RECOVERYXLOG", "not a WAL file name: 'RECOVERYXLOG'"),
        (
            "/nonexistent/000000010000000000000001",
            "cannot read WAL file /nonexistent/000000010000000000000001: No such file or directory",
        ),
    ],
)
def test_a_path_that_is_not_a_wal_file_is_a_clear_error(wal_home, path, message):
    result = wal_home.run("wal-push", "--target", "app", path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == f"drbackup: error: {message}"
