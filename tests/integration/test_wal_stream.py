"""WAL streamed by pg_receivewal under drbackup's supervision, on real servers: segments and
partials land and restore; an immediate stop of the source loses no more than the flush
interval; a killed pg_receivewal is restarted and no WAL is lost; a slot that retains too
much WAL, or that nothing streams from, is a warning in ``report``."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from drbackup.actions.backup_physical import backup_physical
from drbackup.actions.restore_physical import restore_physical
from drbackup.actions.wal_check import analyze_archive
from drbackup.repository.wal import WalArchive
from drbackup.sources.postgres.recovery import LATEST, RecoveryTarget
from drbackup.sources.postgres.wal import parse_wal_file_name
from drbackup.sources.postgres.walend import snapshot_partial
from tests.fixtures.walarchive import make_wal_home
from tests.fixtures.walstream import (
    STREAM_SETTINGS,
    crash,
    current_lsn,
    streaming,
    wait_streamed,
)

FLUSH = 1.0  # flush_interval of these tests (seconds)
RPO_MARGIN = 1.5  # seconds on top of it: the snapshot, the upload, a loaded machine


@pytest.fixture
def stream_home():
    home = make_wal_home(capture="stream", flush_interval=f"{FLUSH:g}s", slot_max_retained="1MiB")
    yield home
    shutil.rmtree(home.root, ignore_errors=True)


@pytest.fixture
def source(pg_cluster_factory, stream_home):
    # durable commits: an acknowledged commit is flushed, so the server may send it
    cluster = pg_cluster_factory(settings={**STREAM_SETTINGS, "synchronous_commit": "on"})
    stream_home.set_dsn(cluster.dsn())
    cluster.execute("CREATE TABLE marker (id int PRIMARY KEY, at timestamptz)")
    return cluster


def insert_markers(cluster, first: int, last: int) -> None:
    cluster.execute(
        "INSERT INTO marker SELECT g, clock_timestamp() FROM generate_series(%s::int, %s::int) g",
        params=(first, last),
    )


def restored_markers(home, into) -> list[int]:
    with restore_physical(home.app(), "app", into, RecoveryTarget(LATEST), start=True) as restore:
        assert restore.outcome.reached, restore.outcome
        with restore.server.connect() as conn:
            return [row[0] for row in conn.execute("SELECT id FROM marker ORDER BY id")]


def stored_files(home) -> list:
    archive = WalArchive(home.app().repository(), "app")
    return list(archive.list_files(archive.current_cluster()))


def test_streamed_segments_and_partials_land_and_restore_to_the_newest_row(stream_home, source):
    with streaming(stream_home) as stream:
        stream.wait_for(lambda: stream.streamer.status.running, "pg_receivewal")
        backup = backup_physical(stream_home.app(), "app")
        insert_markers(source, 1, 50)
        source.execute("SELECT pg_switch_wal()")  # a completed segment holds 1..50
        insert_markers(source, 51, 60)  # only in the segment being filled
        wait_streamed(stream_home, current_lsn(source))
        files = stored_files(stream_home)
        newest = files[-1]
        assert newest.is_partial and newest.upto > 0, files  # the partial, with its length
        assert any(f.is_segment for f in files)
        partial_segments = {f.name[:24] for f in files if f.is_partial}
        assert not partial_segments & {f.name for f in files if f.is_segment}  # superseded
        spool = stream.streamer.dir
        stream.wait_for(lambda: not spool.completed(), "the spool to hold no complete segment")
        assert [p.name for p in spool.partials()] == [newest.name]
    assert backup.meta["stop_lsn"]
    assert restored_markers(stream_home, stream_home.root / "restored") == list(range(1, 61))
    status = analyze_archive(stream_home.app().repository(), "app")
    assert status.gaps == [] and status.restorable


class MarkerWriter(threading.Thread):
    """One marker every 100 ms, each its own transaction; the time each commit returned."""

    def __init__(self, cluster):
        super().__init__(name="marker-writer", daemon=True)
        self.cluster, self.stop = cluster, threading.Event()
        self.acked: dict[int, float] = {}

    def run(self) -> None:
        marker = 1000
        try:
            with self.cluster.connect() as conn:
                while not self.stop.wait(0.1):
                    marker += 1
                    conn.execute("INSERT INTO marker VALUES (%s, clock_timestamp())", (marker,))
                    self.acked[marker] = time.time()
        except Exception:  # noqa: BLE001 - the server was stopped under it: that is the test
            return


def test_an_immediate_stop_loses_nothing_committed_before_the_flush_interval(stream_home, source):
    """The RPO test: markers every 100 ms, the source stopped with pg_ctl -m immediate."""
    writer = MarkerWriter(source)
    with streaming(stream_home) as stream:
        stream.wait_for(lambda: stream.streamer.status.running, "pg_receivewal")
        backup_physical(stream_home.app(), "app")
        writer.start()
        time.sleep(4 * FLUSH)  # markers flow for a few flush intervals
        crashed_at = time.time()
        crash(source)
        writer.stop.set()
        writer.join()
        stream.wait_for(
            lambda: "wal_stream_receiver_exited" in stream.names(), "pg_receivewal to end"
        )
    restored = set(restored_markers(stream_home, stream_home.root / "restored"))
    acked = {m: at for m, at in writer.acked.items() if at <= crashed_at}
    assert len(acked) >= 20
    must = {m for m, at in acked.items() if at <= crashed_at - FLUSH - RPO_MARGIN}
    assert must <= restored, sorted(must - restored)
    # a commit may be durable (and streamed) while its reply was lost in the stop
    assert restored == set(range(1001, max(restored) + 1)), "restored markers have holes"
    newest = max(restored & acked.keys())
    lost = sorted(set(acked) - restored)
    rpo = crashed_at - acked[newest]
    print(
        f"\nmeasured RPO: the newest restored commit returned {rpo * 1000:.0f} ms before the "
        f"immediate stop; {len(lost)} acknowledged commit(s) lost "
        f"(flush_interval {FLUSH:g} s, bound {FLUSH + RPO_MARGIN:g} s)"
    )
    assert rpo <= FLUSH + RPO_MARGIN


def test_a_killed_pg_receivewal_is_restarted_and_no_wal_is_lost(stream_home, source):
    with streaming(stream_home) as stream:
        status = stream.streamer.status
        stream.wait_for(lambda: status.running, "pg_receivewal")
        backup_physical(stream_home.app(), "app")
        insert_markers(source, 1, 100)
        source.execute("SELECT pg_switch_wal()")
        killed = stream.streamer.kill_receiver()
        assert killed is not None
        for first in (101, 201):  # WAL written while nothing receives: the slot keeps it
            insert_markers(source, first, first + 99)
            source.execute("SELECT pg_switch_wal()")
        stream.wait_for(
            lambda: stream.streamer.receiver_pid not in (None, killed), "a new pg_receivewal"
        )
        assert status.restarts >= 1
        insert_markers(source, 301, 310)
        wait_streamed(stream_home, current_lsn(source))
        assert "wal_stream_receiver_exited" in stream.names()
    status = analyze_archive(stream_home.app().repository(), "app")
    assert status.gaps == [], status.gaps
    assert restored_markers(stream_home, stream_home.root / "restored") == list(range(1, 311))


def test_a_slot_retaining_too_much_wal_and_inactive_is_a_warning_in_report(stream_home, source):
    with streaming(stream_home) as stream:
        stream.wait_for(lambda: stored_files(stream_home), "the first WAL file stored")
    for first in range(1, 4):  # nothing streams now: the slot keeps all of it
        insert_markers(source, first * 100, first * 100 + 50)
        source.execute("SELECT pg_switch_wal()")
    result = stream_home.run("report", "--target", "app", "--format", "json", as_server_user=False)
    report = json.loads(result.stdout)
    (target,) = report["targets"]
    messages = [f["message"] for f in target["findings"] if f["status"] == "WARNING"]
    retained = target["wal"]["slot"]["retained_bytes"]
    assert retained > 16 << 20
    assert any(
        m.startswith("replication slot drbackup_app retains ") and "(over 1.0 MiB)" in m
        for m in messages
    ), messages
    assert any(m.startswith("replication slot drbackup_app is inactive") for m in messages)
    prometheus = stream_home.run(
        "report", "--target", "app", "--format", "prometheus", as_server_user=False
    ).stdout
    (value,) = [
        s.value
        for family in text_string_to_metric_families(prometheus)
        for s in family.samples
        if s.name == "drbackup_health_wal_slot_retained_bytes" and s.labels == {"target": "app"}
    ]
    assert value > 16 << 20


def test_the_spool_is_bounded_while_the_repository_is_down_and_drains_after(stream_home, source):
    """Uploads fail (the repository's wal/ is a file); completed segments pile up until
    stream_spool_max, then pg_receivewal is stopped (the slot keeps the WAL) and started again
    once the uploads drain: no gap."""
    limit = 32 << 20
    doc = yaml.safe_load(stream_home.config_path.read_text())
    doc["postgres"]["app"]["wal"]["stream_spool_max"] = limit
    stream_home.config_path.write_text(yaml.safe_dump(doc))
    wal_dir = stream_home.root / "repo" / "wal"
    with streaming(stream_home) as stream:
        streamer = stream.streamer
        stream.wait_for(lambda: stored_files(stream_home), "the first WAL file stored")
        wal_dir.rename(wal_dir.with_name("wal.away"))
        wal_dir.write_text("not a directory: every upload fails\n")
        for first in range(1, 7):
            insert_markers(source, first * 100, first * 100 + 9)
            source.execute("SELECT pg_switch_wal()")
            # paced: the streamer reacts once per POLL, and a burst of switches on a loaded
            # machine lands several segments within one look (the bound is per look)
            stream.wait_for(
                lambda n=first: (
                    streamer.status.spool_bytes >= n * (16 << 20) or streamer.receiver_pid is None
                ),
                f"the streamer to see segment {first} or to stop pg_receivewal",
            )
        stream.wait_for(lambda: "wal_stream_paused" in stream.names(), "the pause")
        assert "wal_stream_upload_failed" in stream.names()
        stream.wait_for(lambda: streamer.receiver_pid is None, "pg_receivewal to stop")
        assert streamer.dir.waiting_bytes() <= limit + 3 * (16 << 20)
        wal_dir.unlink()
        wal_dir.with_name("wal.away").rename(wal_dir)
        stream.wait_for(lambda: streamer.receiver_pid is not None, "pg_receivewal again")
        insert_markers(source, 1, 10)
        wait_streamed(stream_home, current_lsn(source))
        stream.wait_for(lambda: not streamer.dir.completed(), "the spool to drain")
    status = analyze_archive(stream_home.app().repository(), "app")
    assert status.gaps == [], status.gaps


def test_synchronous_streaming_has_each_commit_in_the_spool_when_it_returns(
    pg_cluster_factory, stream_home
):
    settings = {
        **STREAM_SETTINGS,
        "synchronous_commit": "on",
        "synchronous_standby_names": "drbackup_app",
    }
    cluster = pg_cluster_factory(settings=settings)
    stream_home.set_dsn(cluster.dsn())
    doc = yaml.safe_load(stream_home.config_path.read_text())
    doc["postgres"]["app"]["wal"]["synchronous"] = True
    stream_home.config_path.write_text(yaml.safe_dump(doc))
    with streaming(stream_home) as stream:
        stream.wait_for(
            lambda: cluster.execute(
                "SELECT 1 FROM pg_stat_replication"
                " WHERE application_name = 'drbackup_app' AND sync_state = 'sync'"
            ),
            "pg_receivewal as the synchronous standby",
        )
        cluster.execute("CREATE TABLE marker (id int PRIMARY KEY, at timestamptz)")
        insert_markers(cluster, 1, 3)  # returns once pg_receivewal has flushed it
        committed = current_lsn(cluster)
        (partial,) = stream.streamer.dir.partials()
        name = parse_wal_file_name(partial.name)
        upto = snapshot_partial(stream.streamer.dir.path / partial.name, stream_home.root / "s")
        assert name.segno(16 << 20) * (16 << 20) + upto >= committed
