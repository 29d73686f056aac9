"""The WAL archive on every storage backend, with segments written by real servers.

What goes in comes out byte for byte; the same file twice is a success, another file under
an archived name and a segment of another cluster are refused; a damaged or moved object is
named; a missing segment is served from its partial.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from drbackup.actions.wal_files import ClusterState, fetch_wal_file, upload_wal_file
from drbackup.errors import IntegrityError, SourceError
from drbackup.repository.keyring import Secrets
from drbackup.repository.repo import Repository
from drbackup.repository.wal import WalArchive, cluster_name
from drbackup.sources.postgres import wal, walrecords

FAST = {"n": 1024, "r": 8, "p": 1}


@pytest.fixture(params=["local", "s3"])
def archive(request) -> WalArchive:
    storage = request.getfixturevalue(f"{request.param}_storage")
    repo = Repository.init(storage, Secrets(passphrase="pw"), scrypt_params=FAST)
    return WalArchive(repo, "app")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A server with commit timestamps on, and three completed segments copied out of it."""
    from drbackup.sources.postgres.cluster import EphemeralCluster

    settings = {"track_commit_timestamp": "on", "wal_level": "replica"}
    with EphemeralCluster(fast=True, settings=settings) as cluster:
        out = tmp_path_factory.mktemp("segments")
        cluster.execute("CREATE TABLE t (i int)")
        copied = [_complete_segment(cluster, out, i) for i in range(3)]
        yield cluster, copied


def _complete_segment(cluster, out: Path, i: int) -> Path:
    cluster.execute("INSERT INTO t SELECT generate_series(1, 1000)")
    # the switch returns the end of the segment it completed; its name is that segment's
    name = cluster.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    return Path(shutil.copy(cluster.data_dir / "pg_wal" / name, out / name))


def _identity(path: Path) -> str:
    header = wal.read_segment_header(path.read_bytes()[:8192], path.name)
    return cluster_name(header.major, header.system_identifier)


def test_segments_round_trip_byte_for_byte_and_pushes_are_idempotent(archive, source, tmp_path):
    _cluster, segments = source
    state = ClusterState(archive)
    results = [upload_wal_file(state, p) for p in segments]
    assert all(r.created for r in results)
    assert archive.current_cluster() == _identity(segments[0])  # registered by the first push
    again = upload_wal_file(ClusterState(archive), segments[1])
    assert not again.created and again.stored.key == results[1].stored.key
    for path in segments:
        fetched = fetch_wal_file(archive, state.current, path.name, tmp_path / "RECOVERYXLOG")
        assert fetched.size == path.stat().st_size
        assert (tmp_path / "RECOVERYXLOG").read_bytes() == path.read_bytes()
    missing = wal.segment_name(1, 0x7777, 16 << 20)
    assert fetch_wal_file(archive, state.current, missing, tmp_path / "x") is None
    assert not (tmp_path / "x").exists()


def test_other_content_under_an_archived_name_is_refused(archive, source, tmp_path):
    _cluster, segments = source
    state = ClusterState(archive)
    upload_wal_file(state, segments[0])
    forged = tmp_path / segments[0].name
    data = bytearray(segments[0].read_bytes())
    data[100_000] ^= 0xFF
    forged.write_bytes(bytes(data))
    with pytest.raises(
        IntegrityError, match="already archived for target app with different content"
    ):
        upload_wal_file(state, forged)


def test_a_segment_of_another_cluster_is_refused(archive, source, pg_cluster_factory, tmp_path):
    _cluster, segments = source
    upload_wal_file(ClusterState(archive), segments[0])
    other = pg_cluster_factory(settings={"wal_level": "replica"})
    other.execute("CREATE TABLE t (i int)")
    foreign = _complete_segment(other, tmp_path, 0)
    with pytest.raises(SourceError, match="WAL of another cluster: system identifier"):
        upload_wal_file(ClusterState(archive), foreign)
    assert archive.clusters() == [_identity(segments[0])]


def test_a_renamed_segment_is_refused(archive, source, tmp_path):
    _cluster, segments = source
    renamed = tmp_path / segments[1].name
    shutil.copy(segments[0], renamed)
    with pytest.raises(SourceError, match="its name says"):
        upload_wal_file(ClusterState(archive), renamed)


def test_damaged_and_moved_objects_are_named_and_never_written(archive, source, tmp_path):
    _cluster, segments = source
    state = ClusterState(archive)
    first, second = (upload_wal_file(state, p).stored for p in segments[:2])
    storage = archive.storage
    body = bytearray(storage.get(first.key))
    body[len(body) // 2] ^= 0x01
    storage.put(first.key, _Reader(bytes(body)))
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    dest = pg_wal / "RECOVERYXLOG"
    with pytest.raises(IntegrityError, match=first.key):
        fetch_wal_file(archive, state.current, first.name, dest)
    assert not list(pg_wal.iterdir())  # neither the file nor its temporary copy
    # the second segment's object copied under the first's key: authentication fails
    storage.put(first.key, _Reader(storage.get(second.key)))
    with pytest.raises(IntegrityError):
        fetch_wal_file(archive, state.current, first.name, dest)


def test_a_missing_segment_is_served_from_its_partial(archive, source, tmp_path):
    _cluster, segments = source
    state = ClusterState(archive)
    partial = tmp_path / (segments[2].name + ".partial")
    shutil.copy(segments[2], partial)
    upload_wal_file(state, segments[0])
    result = upload_wal_file(state, partial, upto=4096)
    assert result.stored.upto == 4096
    longer = upload_wal_file(state, partial)  # a longer copy supersedes it
    assert [s.upto for s in archive.find(state.current, partial.name)] == [longer.stored.upto]
    fetched = fetch_wal_file(archive, state.current, segments[2].name, tmp_path / "RECOVERYXLOG")
    assert fetched.stored.is_partial
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == segments[2].read_bytes()


def test_the_newest_commit_time_is_read_from_a_segment(source):
    cluster, _segments = source
    cluster.execute("INSERT INTO t VALUES (-1)")
    committed = cluster.execute("SELECT pg_xact_commit_timestamp(xmin) FROM t WHERE i = -1")[0][0]
    name = cluster.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    data = (cluster.data_dir / "pg_wal" / name).read_bytes()
    header = wal.read_segment_header(data, name)
    start = wal.parse_wal_file_name(name).segno(header.segment_size) * header.segment_size
    end = walrecords.scan_segment_end(data, header.block_size, start)
    assert end.last_time == committed
    assert end.end > 0 and end.last_time_lsn >= start


class _Reader:
    def __init__(self, data: bytes):
        self.data = data

    def read(self, n: int = -1) -> bytes:
        out, self.data = (self.data, b"") if n < 0 else (self.data[:n], self.data[n:])
        return out
