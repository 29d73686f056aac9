"""Point-in-time restores of a server written by pgbench throughout, proved by a marker table.

One history per module: a server archiving through ``wal-push``; pgbench writing all along;
a session committing one marker row every 100 ms and noting the WAL position after each
commit; a base backup taken in the middle of it.  Commit times come from the server
(``track_commit_timestamp``), so "committed at or before that second" is exact.  Each restore
starts the restored server, checks that recovery reached its target, and compares the
markers it holds with those that must and must not be there.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest

from drbackup.actions.backup_physical import backup_physical
from drbackup.actions.restore_physical import restore_physical
from drbackup.actions.wal_admin import mark_restore_point
from drbackup.errors import RestoreError
from drbackup.repository.wal import WalArchive
from drbackup.sources.postgres.cluster import EphemeralCluster
from drbackup.sources.postgres.recovery import LSN, NAME, XID, RecoveryTarget
from drbackup.sources.postgres.wal import parse_lsn
from tests.fixtures.walarchive import ARCHIVE_SETTINGS, make_wal_home, switch_wal, wait_archived

SECOND = dt.timedelta(seconds=1)


@dataclass
class History:
    home: object
    cluster: EphemeralCluster
    backup: object  # the base backup's manifest
    markers: list[tuple[int, dt.datetime, int]]  # id, commit time, WAL position after it
    xids: dict[int, int] = field(default_factory=dict)  # marker id -> its transaction id
    marked: int = 0  # markers committed before the restore point "mid-history"

    def committed_before(self, limit: dt.datetime) -> set[int]:
        return {i for i, at, _ in self.markers if at < limit}


class MarkerWriter(threading.Thread):
    """One marker row every 100 ms, each in its own transaction; the WAL insert position
    read after each commit."""

    def __init__(self, cluster: EphemeralCluster):
        super().__init__(name="marker-writer", daemon=True)
        self.cluster, self.stop = cluster, threading.Event()
        self.lsns: dict[int, int] = {}
        self.xids: dict[int, int] = {}
        self.pause = threading.Lock()  # held: no marker is being written

    def run(self) -> None:
        with self.cluster.connect() as conn:
            marker = 0
            while not self.stop.wait(0.1):
                with self.pause:
                    marker += 1
                    xid = conn.execute(
                        "INSERT INTO marker (id) VALUES (%s) RETURNING xmin::text::bigint",
                        (marker,),
                    ).fetchone()[0]
                    lsn = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
                    self.lsns[marker], self.xids[marker] = parse_lsn(str(lsn)), xid


def _wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def history():
    home = make_wal_home()
    # a segment switch every second (as archive_timeout does for a quiet server): the
    # window spans many segments, so that one can go missing in its middle
    settings = {
        **ARCHIVE_SETTINGS,
        "archive_command": home.archive_command(),
        "archive_timeout": "1",
    }
    cluster = EphemeralCluster(fast=True, settings=settings).start()
    try:
        home.set_dsn(cluster.dsn())
        yield _write_history(home, cluster)
    finally:
        cluster.destroy()
        shutil.rmtree(home.root, ignore_errors=True)


def _write_history(home, cluster: EphemeralCluster, scale: int = 1) -> History:
    cluster.execute("CREATE TABLE marker (id int PRIMARY KEY)")
    pgbench = str(cluster.bin_dir / "pgbench")
    init = [pgbench, "-i", "-s", str(scale), "-q", cluster.dsn()]
    subprocess.run(init, check=True, capture_output=True)
    load = subprocess.Popen(
        [pgbench, "-c", "2", "-j", "1", "-T", "120", "-n", cluster.dsn()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    writer = MarkerWriter(cluster)
    writer.start()
    try:
        _wait_until(lambda: len(writer.lsns) >= 10)
        backup = backup_physical(home.app(), "app")  # under load
        _wait_until(lambda: len(writer.lsns) >= 50)
        with writer.pause:  # no marker straddles the restore point
            marked = len(writer.lsns)
            mark_restore_point(home.app(), "app", "mid-history")
        _wait_until(lambda: len(writer.lsns) >= 90)  # about 8 seconds after the backup
    finally:
        writer.stop.set()
        writer.join()
        load.terminate()
        load.wait()
    wait_archived(cluster, switch_wal(cluster))
    rows = cluster.execute("SELECT id, pg_xact_commit_timestamp(xmin) FROM marker ORDER BY id")
    markers = [(i, at, writer.lsns[i]) for i, at in rows]
    return History(home, cluster, backup, markers, writer.xids, marked)


def _restore(history: History, tmp_name: str, point: RecoveryTarget):
    into = history.home.root / tmp_name
    return restore_physical(history.home.app(), "app", into, point, start=True)


def _restored_markers(restore) -> set[int]:
    with restore.server.connect() as conn:
        return {row[0] for row in conn.execute("SELECT id FROM marker")}


def test_restores_to_three_random_seconds_hold_exactly_the_markers_committed_by_then(history):
    _three_random_seconds(history)


@pytest.mark.slow
def test_random_seconds_on_an_s3_repository_with_more_data(s3_server, s3_bucket):
    options = {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region}
    home = make_wal_home(repo_url=f"s3://{s3_bucket}/repo", s3=options)
    settings = {
        **ARCHIVE_SETTINGS,
        "archive_command": home.archive_command(),
        "archive_timeout": "1",
    }
    cluster = EphemeralCluster(fast=True, settings=settings).start()
    try:
        home.set_dsn(cluster.dsn())
        _three_random_seconds(_write_history(home, cluster, scale=20))
    finally:
        cluster.destroy()
        shutil.rmtree(home.root, ignore_errors=True)


def _three_random_seconds(history: History) -> None:
    stop = dt.datetime.fromisoformat(history.backup.meta["stop_time"])
    first = stop.replace(microsecond=0) + SECOND
    last = history.markers[-1][1].replace(microsecond=0) - SECOND
    seconds = int((last - first).total_seconds())
    assert seconds >= 3, f"window too short: {first}..{last}"
    seed = random.randrange(1 << 30)
    chosen = sorted(random.Random(seed).sample(range(seconds + 1), 3))
    print(f"random seconds (seed {seed}): {[str(first + n * SECOND) for n in chosen]}")
    for n in chosen:
        second = first + n * SECOND
        with _restore(history, f"second-{n}", RecoveryTarget.at_time(second)) as restore:
            assert restore.outcome.reached, restore.outcome
            expected = history.committed_before(second + SECOND)
            assert _restored_markers(restore) == expected, second
            assert restore.outcome.last_commit < second + SECOND
            assert restore.outcome.timeline == 1 and restore.outcome.new_timeline == 2


def test_a_restore_to_an_lsn_holds_the_markers_committed_before_it(history):
    marker, _at, lsn = history.markers[len(history.markers) * 2 // 3]
    with _restore(history, "lsn", RecoveryTarget(LSN, lsn=lsn)) as restore:
        assert restore.outcome.reached and "WAL location (LSN)" in restore.outcome.stop
        assert _restored_markers(restore) == {i for i, _at, _lsn in history.markers if i <= marker}


def test_a_commit_time_target_is_inclusive_to_the_microsecond(history):
    """Off by one transaction fails here: the target is a marker's own commit time."""
    marker, at, _lsn = history.markers[len(history.markers) // 2]
    assert at.microsecond != 0
    with _restore(history, "inclusive", RecoveryTarget.at_time(at)) as restore:
        assert max(_restored_markers(restore)) == marker
    with _restore(history, "exclusive", RecoveryTarget.at_time(at, inclusive=False)) as restore:
        assert max(_restored_markers(restore)) == marker - 1


def test_a_restore_to_a_transaction_includes_it_and_nothing_after(history):
    marker = history.markers[len(history.markers) * 3 // 4][0]
    with _restore(history, "xid", RecoveryTarget(XID, xid=history.xids[marker])) as restore:
        assert restore.outcome.reached and restore.outcome.stop.startswith(
            "recovery stopping after commit"
        )
        assert max(_restored_markers(restore)) == marker


def test_a_restore_to_a_named_restore_point(history):
    with _restore(history, "mark", RecoveryTarget(NAME, name="mid-history")) as restore:
        assert restore.outcome.stop.startswith('recovery stopping at restore point "mid-history"')
        assert _restored_markers(restore) == set(range(1, history.marked + 1))


def _segment_after_backup(history: History) -> tuple[WalArchive, object]:
    """A stored segment inside the window, after the base backup's end."""
    archive = WalArchive(history.home.app().repository(), "app")
    stop = parse_lsn(history.backup.meta["stop_lsn"])
    size = history.backup.meta["wal_segment_size"]
    segments = [s for s in archive.list_files(history.backup.meta["cluster"]) if s.is_segment]
    after = [
        s
        for s in segments
        if int(s.name[8:16], 16) * (1 << 32) + int(s.name[16:], 16) * size > stop
    ]
    return archive, after[len(after) // 2]


def test_a_missing_segment_fails_the_restore_naming_it(history):
    archive, segment = _segment_after_backup(history)
    path = history.home.root / "repo" / segment.key
    hidden = path.with_name(".hidden")
    os.rename(path, hidden)
    try:
        with pytest.raises(RestoreError) as raised:
            _restore(history, "missing", RecoveryTarget.at_time(history.markers[-1][1]))
        assert f"WAL segment {segment.name} is missing from the archive" in raised.value.message
        assert not (history.home.root / "missing").exists()  # nothing left that looks restored
    finally:
        os.rename(hidden, path)


def test_a_corrupted_segment_fails_the_restore_naming_it(history):
    archive, segment = _segment_after_backup(history)
    path = history.home.root / "repo" / segment.key
    original = path.read_bytes()
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x40
    path.write_bytes(bytes(damaged))
    try:
        with pytest.raises(RestoreError) as raised:
            _restore(history, "corrupt", RecoveryTarget.at_time(history.markers[-1][1]))
        assert f"WAL segment {segment.name} is damaged" in raised.value.message
    finally:
        path.write_bytes(original)


def test_wal_check_shows_the_window_and_names_a_gap(history):
    result = history.home.run("wal", "check", "app", "--json", as_server_user=False)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    stop = dt.datetime.fromisoformat(history.backup.meta["stop_time"])
    oldest = dt.datetime.fromisoformat(status["window"]["oldest"])
    newest = dt.datetime.fromisoformat(status["window"]["newest"])
    assert oldest == stop.replace(microsecond=0)
    # the newest restorable second is the one before the newest archived commit's
    assert (
        newest == dt.datetime.fromisoformat(status["newest_commit"]).replace(microsecond=0) - SECOND
    )
    assert newest >= history.markers[-1][1].replace(microsecond=0) - SECOND
    assert status["gaps"] == [] and status["breaks"] == []
    # a quiet server: its background records wait at most archive_timeout (1 s) to be archived
    assert 0 <= status["lag_seconds"] < 60 and status["lag_error"] is None
    _archive, segment = _segment_after_backup(history)
    path = history.home.root / "repo" / segment.key
    hidden = path.with_name(".hidden")
    os.rename(path, hidden)
    try:
        result = history.home.run("wal", "check", "app", as_server_user=False)
        report = history.home.run("report", as_server_user=False)
    finally:
        os.rename(hidden, path)
    assert result.returncode == 3
    assert f"WAL segment {segment.name} is missing" in result.stderr
    assert report.returncode == 2  # nagios CRITICAL
    assert f"CRITICAL  app: WAL gap: WAL segment {segment.name} is missing" in report.stdout
