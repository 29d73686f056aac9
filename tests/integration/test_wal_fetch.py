"""``wal-fetch`` as PostgreSQL's restore_command: exit codes, read-ahead, damage named."""

from __future__ import annotations

import os

import pytest

from drbackup.actions.wal_fetch import default_fetch_spool
from drbackup.actions.wal_spool import poll_until
from drbackup.repository.wal import WalArchive, parse_cluster_name
from tests.fixtures.walarchive import switch_wal, wait_archived


@pytest.fixture
def archived(wal_home, archiving_cluster):
    """A home whose archive holds three segments of a server; their names and bytes."""
    cluster = archiving_cluster(wal_home)
    names = [switch_wal(cluster) for _ in range(3)]
    wait_archived(cluster, names[-1])
    data = {n: (cluster.data_dir / "pg_wal" / n).read_bytes() for n in names}
    return wal_home, names, data


def _dest(home):
    out = home.root / "pg_wal"
    out.mkdir(exist_ok=True)
    os.chown(out, *_owner(home.root))
    return out


def _owner(path):
    st = path.stat()
    return st.st_uid, st.st_gid


def test_fetches_with_read_ahead_and_exit_codes_postgres_expects(archived):
    home, names, data = archived
    dest = _dest(home)
    result = home.run("wal-fetch", "--target", "app", names[0], str(dest / "RECOVERYXLOG"))
    assert result.returncode == 0, result.stderr
    assert (dest / "RECOVERYXLOG").read_bytes() == data[names[0]]
    # the background fetcher read ahead: the next segments wait decrypted in the spool
    spool = default_fetch_spool(home.app(), "app")
    poll_until(lambda: (spool / names[2]).exists() or None, 30, "the read-ahead")
    result = home.run("wal-fetch", "--target", "app", names[1], str(dest / "RECOVERYXLOG"))
    assert result.returncode == 0 and (dest / "RECOVERYXLOG").read_bytes() == data[names[1]]
    for missing in ("00000005.history", "0000000100000000000000F0"):
        result = home.run("wal-fetch", "--target", "app", missing, str(dest / "X"))
        assert (result.returncode, result.stderr, result.stdout) == (1, "", "")
        assert not (dest / "X").exists()


@pytest.mark.parametrize("fetch_ahead", [0, 8])
def test_a_damaged_segment_fails_naming_it(archived, fetch_ahead):
    home, names, _data = archived
    if fetch_ahead == 0:
        import yaml

        doc = yaml.safe_load(home.config_path.read_text())
        doc["postgres"]["app"]["wal"]["fetch_ahead"] = 0
        home.config_path.write_text(yaml.safe_dump(doc))
    archive = WalArchive(home.app().repository(), "app")
    stored = archive.choose(archive.current_cluster(), names[1])
    path = home.root / "repo" / stored.key
    body = bytearray(path.read_bytes())
    body[len(body) // 2] ^= 1
    path.write_bytes(bytes(body))
    dest = _dest(home)
    result = home.run("wal-fetch", "--target", "app", names[1], str(dest / "RECOVERYXLOG"))
    assert result.returncode == 1
    assert result.stderr.startswith(f"drbackup: error: {stored.key}: ")
    assert not (dest / "RECOVERYXLOG").exists()


def test_a_spool_served_by_nobody_is_an_error_with_no_spawn(wal_home):
    home = wal_home
    result = home.run(
        "wal-fetch",
        "--target",
        "app",
        "--spool",
        str(home.root / "s"),
        "--no-spawn",
        "000000010000000000000001",
        str(home.root / "x"),
    )
    assert result.returncode == 1
    assert "no WAL fetcher serves" in result.stderr


def test_wal_of_another_major_never_reaches_the_server(archived):
    """restore_command runs in the data directory: its PG_VERSION says which major asks."""
    home, names, data = archived
    major, _sysid = parse_cluster_name(WalArchive(home.app().repository(), "app").current_cluster())
    data_dir = home.root / "newer"
    (data_dir / "pg_wal").mkdir(parents=True)
    (data_dir / "PG_VERSION").write_text(f"{major + 2}\n")
    for path in (data_dir, data_dir / "pg_wal", data_dir / "PG_VERSION"):
        os.chown(path, *_owner(home.root))
    args = ("wal-fetch", "--target", "app", names[0], "pg_wal/RECOVERYXLOG")
    result = home.run(*args, cwd=data_dir)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"drbackup: error: WAL file {names[0]} of target app is PostgreSQL {major} WAL and the "
        f"server recovering is PostgreSQL {major + 2}; refusing it"
    )
    assert not (data_dir / "pg_wal" / "RECOVERYXLOG").exists()
    (data_dir / "PG_VERSION").write_text(f"{major}\n")  # a server of the WAL's own major
    assert home.run(*args, cwd=data_dir).returncode == 0
    assert (data_dir / "pg_wal" / "RECOVERYXLOG").read_bytes() == data[names[0]]
