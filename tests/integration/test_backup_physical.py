"""``backup postgres --physical``: base backups of real servers, tablespaces included,
checked file by file against the server's own backup_manifest by ``verify``."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest

from drbackup.actions.backup_physical import backup_physical
from drbackup.actions.repository import verify_backup
from drbackup.errors import CheckFailedError, SourceError
from drbackup.repository.wal import WalArchive
from drbackup.sources.postgres.recovery import RecoveryServer
from drbackup.sources.postgres.wal import parse_lsn
from tests.fixtures.walarchive import make_wal_home


@pytest.fixture
def server(wal_home, archiving_cluster):
    """An archiving server with a tablespace holding a table."""
    cluster = archiving_cluster(wal_home)
    location = cluster.base_dir / "ts1"
    location.mkdir()
    if cluster.run_as:
        os.chown(location, cluster.run_as.uid, cluster.run_as.gid)
    cluster.execute(f"CREATE TABLESPACE ts1 LOCATION '{location}'")
    cluster.execute(
        "CREATE TABLE far (i int, t text) TABLESPACE ts1;"
        "INSERT INTO far SELECT i, md5(i::text) FROM generate_series(1, 20000) i;"
        "CREATE TABLE near AS SELECT generate_series(1, 1000) AS i"
    )
    return cluster


def test_a_base_backup_stores_every_tablespace_and_the_server_manifest(wal_home, server):
    app = wal_home.app()
    manifest = backup_physical(app, "app")
    assert manifest.kind == "postgres-physical"
    oid = server.execute("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")[0][0]
    assert [(i.name, i.type) for i in manifest.items] == [
        (f"{oid}.tar", "pg-base-tar"),
        ("base.tar", "pg-base-tar"),
        ("backup_manifest", "pg-backup-manifest"),
    ]
    assert manifest.items[0].meta["tablespace"] == {
        "oid": oid,
        "location": str(server.base_dir / "ts1"),
    }
    meta = manifest.meta
    sysid = server.execute("SELECT system_identifier FROM pg_control_system()")[0][0]
    assert meta["system_identifier"] == str(sysid) and meta["major"] == 15
    assert meta["cluster"] == f"pg15-{sysid}"
    assert parse_lsn(meta["start_lsn"]) < parse_lsn(meta["stop_lsn"])
    assert meta["timeline"] == meta["stop_timeline"] == 1
    assert meta["start_time"] <= meta["stop_time"]
    assert meta["superuser"] == "postgres" and manifest.recovery_point is not None
    result = verify_backup(app, manifest.backup_id)
    assert result.problems == [] and result.bytes_read > 0
    shown = wal_home.run("show", manifest.backup_id, as_server_user=False).stdout.splitlines()
    assert shown[2] == (
        f"restorable from: {manifest.recovery_point} (consistent at {meta['stop_lsn']}, needs WAL "
        f"from {meta['start_lsn']} on timeline 1)"
    )
    listed = wal_home.run("list", as_server_user=False).stdout.splitlines()
    assert listed[1].startswith(f"app/{manifest.backup_id}  postgres-physical")
    # nothing committed since the backup: no second to stop at, but its end is restorable
    assert listed[-1] == (
        "app: restorable to the end of the archived WAL (no commit since the base backup)"
    )


def test_verify_names_a_missing_wal_segment_of_the_backup(wal_home, server):
    app = wal_home.app()
    manifest = backup_physical(app, "app")
    archive = WalArchive(app.repository(), "app")
    first = next(
        s
        for s in archive.list_files(manifest.meta["cluster"])
        if s.is_segment and s.name[8:] >= _segment_of(manifest)
    )
    archive.delete(first)
    with pytest.raises(CheckFailedError) as raised:
        verify_backup(app, manifest.backup_id)
    assert (
        f"WAL segment {first.name} (needed from the backup's start to its end) is not archived"
        in raised.value.message
    )


def _segment_of(manifest) -> str:
    lsn = parse_lsn(manifest.meta["start_lsn"])
    return f"{lsn >> 32:08X}{(lsn & 0xFFFFFFFF) // manifest.meta['wal_segment_size']:08X}"


def test_a_backup_whose_wal_never_reaches_the_archive_fails_and_leaves_nothing(archiving_cluster):
    home = make_wal_home(backup_wait="2s")
    try:
        cluster = archiving_cluster(home, archive_command="false")
        app = home.app()
        with pytest.raises(
            SourceError, match="the WAL this base backup needs is not in the repository after 2s"
        ):
            backup_physical(app, "app")
        repo = app.repository()
        assert repo.list_refs("app") == []
        assert not [i for i in repo._storage.list("data/")]
        assert cluster.is_running
    finally:
        import shutil

        shutil.rmtree(home.root, ignore_errors=True)


def test_the_cli_restores_tablespaces_beside_the_directory_and_leaves_the_server_running(
    wal_home, server
):
    app = wal_home.app()
    manifest = backup_physical(app, "app")
    server.execute("INSERT INTO far SELECT i, 'after' FROM generate_series(20001, 20500) i")
    server.execute("SELECT pg_switch_wal()")
    into = wal_home.root / "restored"
    result = wal_home.run(
        "restore",
        "postgres",
        "app",
        "--into-dir",
        str(into),
        "--latest",
        "--start",
        as_server_user=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(
        f"using base backup {manifest.backup_id} (cluster {manifest.meta['cluster']}"
    )
    assert lines[2].startswith(
        "recovery reached the end of the archived WAL: end of the archived WAL"
    )
    assert "timeline 1; promoted to timeline 2" in lines[3]
    socket_dir = lines[4].split("socket directory ")[1].split(",")[0]
    restored = RecoveryServer(into, Path(socket_dir).parent, superuser="postgres")
    restored.port = int(lines[4].split("port ")[1].split(",")[0])
    try:
        rows = restored.execute("SELECT count(*), max(i) FROM far")
        assert rows == [(20500, 20500)]  # the rows written after the base backup too
        oid = server.execute("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")[0][0]
        link = into / "pg_tblspc" / str(oid)
        assert link.readlink() == wal_home.root / "restored.tablespaces" / str(oid)
        assert restored.execute("SHOW archive_mode") == [("off",)]
    finally:
        restored.destroy()  # stops the server, removes its run directory
    assert not restored.is_running


def test_a_time_before_every_base_backup_names_the_dump_that_covers_it(wal_home, server):
    from drbackup.actions.backup_postgres import backup_target

    app = wal_home.app()
    dump = backup_target(app, "app")
    second = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=2)
    while dt.datetime.now(dt.UTC) < second:  # the base backup starts two seconds later
        time.sleep(0.05)
    physical = backup_physical(app, "app")
    start = dt.datetime.fromisoformat(physical.meta["start_time"])
    between = start.replace(microsecond=0) - dt.timedelta(seconds=1)  # the whole second is before
    assert dt.datetime.fromisoformat(dump.recovery_point) < between
    result = wal_home.run(
        "restore",
        "postgres",
        "app",
        "--into-dir",
        str(wal_home.root / "r"),
        "--point-in-time",
        between.isoformat(),
        as_server_user=False,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0].startswith("drbackup: error: no base backup of target app ends before time ")
    assert (
        f"the logical backup {dump.backup_id} (recovery point {dump.recovery_point}) covers it: restore it with --into DSN"
        in lines[1]
    )
    assert not (wal_home.root / "r").exists()
