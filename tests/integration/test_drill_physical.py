"""Physical drills against real servers: base backup + WAL restored into a server of the
drill's own, to a point, proven; and each way such a restore can lie fails the drill,
naming the cause.

One history per module: a ``wal_level = logical`` server archiving through ``wal-push``,
pgbench (with foreign keys) writing throughout, a session committing a marker row every
20 ms; a base backup, then a logical backup whose snapshot comes from a temporary logical
slot (so it records its exact LSN), then more writes.  Fault tests put back what they
break.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from apscheduler.schedulers.background import BackgroundScheduler
from psycopg import sql

from drbackup.actions.backup_physical import backup_physical
from drbackup.actions.backup_postgres import backup_target
from drbackup.actions.drill import drill_history, run_drill
from drbackup.actions.drill_points import resolve_point
from drbackup.actions.restore_physical import restore_physical
from drbackup.actions.wal_check import analyze_archive
from drbackup.drill.plan import AmcheckPlan, DrillPlan, ScratchPlan
from drbackup.drill.points import PointChoice
from drbackup.repository.wal import WalArchive
from drbackup.scheduler.source_heartbeat import install_heartbeats
from drbackup.sources.postgres.cluster import EphemeralCluster
from drbackup.sources.postgres.recovery import LSN, RecoveryTarget
from drbackup.sources.postgres.slot_snapshot import SlotSnapshot, slot_snapshot
from drbackup.sources.postgres.wal import format_lsn, parse_lsn
from tests.fixtures.walarchive import (
    ARCHIVE_SETTINGS,
    DRBACKUP,
    make_wal_home,
    switch_wal,
    wait_archived,
)

LOGICAL = {**ARCHIVE_SETTINGS, "wal_level": "logical", "max_replication_slots": "4"}


@dataclass
class History:
    home: object
    cluster: EphemeralCluster
    base: object  # the base backup's manifest
    logical: object  # the logical backup's manifest


class MarkerWriter(threading.Thread):
    """One marker row every ``every`` seconds, each its own transaction."""

    def __init__(self, cluster: EphemeralCluster, every: float = 0.02, first: int = 1):
        super().__init__(name="marker-writer", daemon=True)
        self.cluster, self.stop, self.every = cluster, threading.Event(), every
        self.count = first - 1

    def run(self) -> None:
        with self.cluster.connect() as conn:
            while not self.stop.wait(self.every):
                self.count += 1
                conn.execute("INSERT INTO marker (id) VALUES (%s)", (self.count,))


def _wait_until(condition, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


@pytest.fixture(scope="module")
def history():
    home = make_wal_home()
    doc = yaml.safe_load(home.config_path.read_text())
    doc["postgres"]["app"].update(heartbeat=True, heartbeat_interval="2s")
    home.config_path.write_text(yaml.safe_dump(doc))
    settings = {**LOGICAL, "archive_command": home.archive_command(), "archive_timeout": "1"}
    cluster = EphemeralCluster(fast=True, settings=settings).start()
    beats = BackgroundScheduler(timezone="UTC")  # the daemon's heartbeat jobs, all along
    try:
        home.set_dsn(cluster.dsn())
        assert install_heartbeats(beats, home.app(), lambda *a, **k: None) == ["app"]
        beats.start()
        yield _write_history(home, cluster)
    finally:
        beats.shutdown()
        cluster.destroy()
        shutil.rmtree(home.root, ignore_errors=True)


def _write_history(home, cluster: EphemeralCluster) -> History:
    cluster.execute("CREATE TABLE marker (id int PRIMARY KEY, at timestamptz DEFAULT now())")
    cluster.execute("CREATE UNLOGGED TABLE scratchpad AS SELECT generate_series(1, 50) AS id")
    pgbench = str(cluster.bin_dir / "pgbench")
    init = [pgbench, "-i", "-s", "1", "-q", "--foreign-keys", cluster.dsn()]
    subprocess.run(init, check=True, capture_output=True)
    load = subprocess.Popen(
        [pgbench, "-c", "2", "-j", "1", "-T", "120", "-n", cluster.dsn()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    writer = MarkerWriter(cluster)
    writer.start()
    try:
        _wait_until(lambda: writer.count >= 20, what="markers")
        _wait_until(lambda: _heartbeats(cluster) >= 1, what="the first heartbeat")
        base = backup_physical(home.app(), "app")  # under load
        _wait_until(lambda: writer.count >= 100, what="markers")
        logical = backup_target(home.app(), "app")  # under load, from a logical slot
        _wait_until(lambda: writer.count >= 200, what="markers")
        _wait_until(lambda: _heartbeats(cluster) >= 5, what="heartbeats")
    finally:
        writer.stop.set()
        writer.join()
        load.terminate()
        load.wait()
    wait_archived(cluster, switch_wal(cluster))
    # From here on a segment every 10 s, not every second: the heartbeats go on writing,
    # and every drill replays the WAL from the base backup on.
    cluster.execute("ALTER SYSTEM SET archive_timeout = '10s'")
    cluster.execute("SELECT pg_reload_conf()")
    return History(home, cluster, base, logical)


def _heartbeats(cluster: EphemeralCluster) -> int:
    found = cluster.execute("SELECT to_regclass('drbackup.heartbeat') IS NOT NULL")[0][0]
    return cluster.execute("SELECT count(*) FROM drbackup.heartbeat")[0][0] if found else 0


@pytest.fixture
def base_dir():
    """A short directory the server's user can reach (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="drb-pdrill-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def drill(history: History, base: Path, *, after_restore=None, **plan):
    plan = DrillPlan(
        targets=["app"],
        name="physical",
        scratch=ScratchPlan(ephemeral=True, base_dir=base),
        **plan,
    )
    return run_drill(history.home.app(), plan, after_restore=after_restore)


def checks(result, name: str) -> list:
    return [c for c in result.record.checks if c.name == name]


def failed(result) -> dict[str, str]:
    """The checks that did not pass (fail and warn), by name."""
    return {c.name: c.summary for c in result.record.checks if c.status != "pass"}


# -- the logical backup's LSN, and a drill to it ----------------------------------------------


def test_a_logical_backup_on_a_logical_source_records_its_slot_lsn(history):
    item = next(i for i in history.logical.items if i.type == "pg_dump")
    assert item.meta["snapshot_source"] == "logical replication slot"
    lsn = parse_lsn(item.meta["snapshot_lsn"])
    assert lsn > parse_lsn(history.base.meta["stop_lsn"])
    assert item.meta["system_identifier"] == history.base.meta["system_identifier"]
    # the temporary slot is gone with the backup's replication connection
    assert history.cluster.execute("SELECT count(*) FROM pg_replication_slots")[0][0] == 0


def test_a_physical_drill_to_the_fingerprint_lsn_compares_every_table_equal(history, base_dir):
    result = drill(history, base_dir)
    assert result.record.status == "pass", failed(result)
    target = result.record.targets[0]
    assert target.kind == "physical"
    (point,) = checks(result, "point")
    item = next(i for i in history.logical.items if i.type == "pg_dump")
    assert point.status == "pass" and item.meta["snapshot_lsn"] in point.summary
    # an unlogged table's rows are not in the WAL: compared empty, and said so
    assert point.evidence["unlogged_tables_compared_empty"] == ["public.scratchpad"]
    (tables,) = [c for c in checks(result, "tables") if c.database == "postgres"]
    assert tables.status == "pass" and tables.evidence["level"] == "full"
    assert tables.evidence["tables"] >= 5  # pgbench's four and the markers
    (recovery,) = checks(result, "recovery")
    assert recovery.status == "pass" and "WAL location (LSN)" in recovery.evidence["stop"]
    names = {c.name for c in result.record.checks}
    assert {"restore", "amcheck", "foreign_keys", "sequences", "rto", "rpo"} <= names
    amcheck = [c for c in checks(result, "amcheck") if c.status != "pass"]
    assert amcheck == []
    rto = checks(result, "rto")[0]
    assert "WAL fetch and replay" in rto.summary and rto.evidence["recovery_s"] > 0
    assert list(base_dir.iterdir()) == []  # server stopped, scratch removed


def test_the_point_lsn_excludes_a_commit_whose_record_starts_exactly_there(history, base_dir):
    """The LSN semantics, pinned: a snapshot at LSN L holds the transactions whose commit
    record starts before L.  A drill to a fingerprint point restores with
    recovery_target_inclusive = off: a commit whose record starts exactly at L is left out,
    while inclusive = on (one transaction more) would replay it."""
    lsn = _commit_at_a_known_lsn(history.cluster)
    wait_archived(history.cluster, switch_wal(history.cluster))
    status = analyze_archive(history.home.app().repository(), "app")
    point, _how, found = resolve_point(
        history.home.app().repository(), "app", PointChoice("fingerprint"), status
    )
    assert found is not None and point.kind == LSN and point.inclusive is False
    at_point = RecoveryTarget(LSN, lsn=lsn, inclusive=point.inclusive)
    assert _pinned_rows(history, base_dir / "off", at_point) == set()
    one_more = RecoveryTarget(LSN, lsn=lsn, inclusive=True)
    assert _pinned_rows(history, base_dir / "on", one_more) == {1}


def test_a_slot_snapshot_holds_exactly_the_commits_whose_record_starts_before_its_lsn(history):
    """The snapshot side of the LSN semantics, under a commit every few milliseconds: the
    last commit record starting before the consistent point is visible in the slot's
    snapshot, the first one starting at or after it is not."""
    cluster = history.cluster
    writer = MarkerWriter(cluster, every=0.002, first=1_000_000)
    writer.start()
    try:
        _wait_until(lambda: writer.count >= 1_000_050, what="markers")
        with (
            slot_snapshot(cluster.dsn(), None) as slot,
            cluster.connect(autocommit=False) as snap,
        ):
            assert isinstance(slot, SlotSnapshot), slot
            snap.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            snap.execute(
                sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(slot.snapshot_id))
            )
            at_slot = writer.count
            _wait_until(lambda: writer.count >= at_slot + 50, what="later markers")
            before, after = _commits_around(cluster, slot.lsn)

            def visible(xid: int) -> bool:
                query = "SELECT pg_visible_in_snapshot(%s::text::xid8, pg_current_snapshot())"
                return snap.execute(query, (xid,)).fetchone()[0]

            assert visible(before) and not visible(after), (format_lsn(slot.lsn), before, after)
    finally:
        writer.stop.set()
        writer.join()


def _commits_around(cluster: EphemeralCluster, lsn: int) -> tuple[int, int]:
    """The transaction ids of the last commit record starting before ``lsn`` and of the
    first starting at or after it (pg_waldump on the server's pg_wal)."""
    cluster.execute("SELECT pg_switch_wal()")
    segment = cluster.execute("SELECT pg_walfile_name(%s::pg_lsn)", params=(format_lsn(lsn),))
    argv = [str(cluster.bin_dir / "pg_waldump"), "-p", str(cluster.data_dir / "pg_wal")]
    argv += ["-r", "Transaction", segment[0][0]]
    out = subprocess.run(argv, capture_output=True, text=True).stdout
    commits = []
    for line in out.splitlines():
        match = re.search(r"tx:\s+(\d+), lsn: ([0-9A-F]+/[0-9A-F]+),.*desc: COMMIT", line)
        if match:
            commits.append((parse_lsn(match.group(2)), int(match.group(1))))
    before = [xid for at, xid in commits if at < lsn]
    after = [xid for at, xid in commits if at >= lsn]
    assert before and after, f"no commits on both sides of {format_lsn(lsn)}"
    return before[-1], after[0]


def _commit_at_a_known_lsn(cluster: EphemeralCluster) -> int:
    """An LSN at which a commit record starts (checked with pg_waldump)."""
    cluster.execute("CREATE TABLE IF NOT EXISTS pinned (id int)")
    for _attempt in range(20):
        cluster.execute("TRUNCATE pinned")
        with cluster.connect(autocommit=False) as conn:
            conn.execute("INSERT INTO pinned VALUES (1)")
            lsn = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
            conn.commit()
        if _record_at(cluster, str(lsn)).startswith("COMMIT"):
            return parse_lsn(str(lsn))
    raise AssertionError("no commit record landed at the insert position read before it")


def _record_at(cluster: EphemeralCluster, lsn: str) -> str:
    cluster.execute("SELECT pg_switch_wal()")  # the segment must be complete for pg_waldump
    argv = [str(cluster.bin_dir / "pg_waldump"), "-p", str(cluster.data_dir / "pg_wal")]
    out = subprocess.run([*argv, "-s", lsn, "-n", "1"], capture_output=True, text=True)
    line = out.stdout.strip()
    desc = line.split("desc:", 1)[-1].strip() if "desc:" in line else ""
    return desc if f"lsn: {lsn}," in line else ""


def _pinned_rows(history: History, into: Path, point: RecoveryTarget) -> set[int]:
    with restore_physical(history.home.app(), "app", into, point, start=True) as restore:
        assert restore.outcome.reached, restore.outcome
        with restore.server.connect() as conn:
            return {r[0] for r in conn.execute("SELECT id FROM pinned")}


def test_drills_at_three_random_seconds_pass_with_heartbeats_bracketing_each(history, base_dir):
    for _ in range(3):
        result = drill(history, base_dir, point=PointChoice("random"))
        assert result.record.status == "pass", failed(result)
        (beat,) = checks(result, "heartbeat")
        assert beat.status == "pass" and beat.evidence["first_after"] is None, beat.summary
        assert result.record.targets[0].selection.startswith("random second ")
        (recovery,) = checks(result, "recovery")
        assert "recovery stopping before commit" in recovery.evidence["stop"]


# -- each way a physical restore can lie fails the drill, naming the cause -------------------


def test_a_table_changed_after_restore_fails_the_point_check_naming_it(history, base_dir):
    def wrong_target(dsn: str) -> None:
        if dsn.endswith("dbname=postgres"):
            _execute(dsn, "DELETE FROM marker WHERE id = (SELECT max(id) FROM marker)")

    result = drill(history, base_dir, after_restore=wrong_target)
    problems = failed(result)
    assert "public.marker" in problems["point"], problems
    assert "public.marker" in problems["tables"]
    assert list(base_dir.iterdir()) == []


def test_referenced_rows_deleted_in_the_restore_fail_the_foreign_key_check(history, base_dir):
    def orphan(dsn: str) -> None:
        if dsn.endswith("dbname=postgres"):
            _execute(
                dsn,
                "SET session_replication_role = replica; DELETE FROM pgbench_branches",
            )

    result = drill(history, base_dir, after_restore=orphan, point=PointChoice("latest"))
    problems = failed(result)
    assert "pgbench_accounts_bid_fkey" in problems["foreign_keys"], problems
    assert "orphan rows" in problems["foreign_keys"]


def test_an_orphan_and_an_inconsistent_index_in_one_restore_both_fail_for_it(history, base_dir):
    """The foreign keys and amcheck run side by side (drill/beside.py): neither finding is
    lost, and each names the database it was found in."""

    def break_two_ways(dsn: str) -> None:
        if dsn.endswith("dbname=postgres"):
            _execute(
                dsn,
                "SET session_replication_role = replica; DELETE FROM pgbench_branches; "
                "CREATE FUNCTION shifted(i integer) RETURNS integer IMMUTABLE "
                "LANGUAGE plpgsql AS 'BEGIN RETURN i; END'; "
                "CREATE INDEX marker_shifted ON marker (shifted(id)); "
                "CREATE OR REPLACE FUNCTION shifted(i integer) RETURNS integer IMMUTABLE "
                "LANGUAGE plpgsql AS 'BEGIN RETURN i + 1000000; END'",
            )

    result = drill(
        history,
        base_dir,
        after_restore=break_two_ways,
        point=PointChoice("latest"),
        amcheck=AmcheckPlan(heapallindexed=True),
    )
    problems = failed(result)
    assert "pgbench_accounts_bid_fkey" in problems["foreign_keys"], problems
    assert "marker_shifted" in problems["amcheck"], problems
    for name in ("foreign_keys", "amcheck"):
        (check,) = [c for c in checks(result, name) if c.status == "fail"]
        assert (check.target, check.database) == ("app", "postgres")
    assert list(base_dir.iterdir()) == []


def test_a_wal_segment_missing_inside_the_window_fails_recovery_naming_it(history, base_dir):
    app = history.home.app()
    archive = WalArchive(app.repository(), "app")
    cluster = history.base.meta["cluster"]
    stop = parse_lsn(history.base.meta["stop_lsn"])
    segments = [s for s in archive.list_files(cluster) if s.is_segment]
    after = [s for s in segments if _segment_start(s.name) > stop]
    assert len(after) >= 3, [s.name for s in segments]
    missing = after[len(after) // 2]
    data = app.storage.get(missing.key)
    app.storage.delete(missing.key)
    try:
        result = drill(history, base_dir, point=PointChoice("latest"))
    finally:
        app.storage.put(missing.key, io.BytesIO(data))
    problems = failed(result)
    assert f"WAL segment {missing.name} is missing" in problems["recovery"], problems
    assert "last replayed commit" in problems["recovery"]
    assert list(base_dir.iterdir()) == []


def _segment_start(name: str, size: int = 16 << 20) -> int:
    return (int(name[8:16], 16) << 32) + int(name[16:24], 16) * size


def test_a_corrupted_base_backup_object_fails_the_restore_naming_it(history, base_dir):
    app = history.home.app()
    item = next(i for i in history.base.items if i.name == "base.tar")
    key = item.objects[len(item.objects) // 2].key
    original = app.storage.get(key)
    data = bytearray(original)
    data[len(data) // 2] ^= 0x40
    app.storage.put(key, io.BytesIO(bytes(data)))
    try:
        result = drill(history, base_dir, point=PointChoice("latest"))
    finally:
        app.storage.put(key, io.BytesIO(original))
    problems = failed(result)
    assert problems["restore"].startswith(f"backup object corrupted: {key}"), problems
    assert "not met: the restore failed" in problems["rto"]
    assert list(base_dir.iterdir()) == []


def test_a_sigkilled_physical_drill_leaves_nothing_after_the_next_drill(history, base_dir):
    plan = history.home.root / "physical-plan.yaml"
    plan.write_text(
        yaml.safe_dump(
            {
                "targets": ["app"],
                "kind": "physical",
                "point": "latest",
                "scratch": {"ephemeral": True, "base_dir": str(base_dir)},
            }
        )
    )
    argv = [str(DRBACKUP), "-c", str(history.home.config_path), "drill", "run", str(plan)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        pid_file = _wait_until(
            lambda: list(base_dir.glob("*/data/postmaster.pid")), 120, "the restored server"
        )[0]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    scratch = pid_file.parent.parent
    assert scratch.exists()  # nothing could clean up
    result = drill(history, base_dir, point=PointChoice("latest"))
    assert result.record.status == "pass", failed(result)
    assert list(base_dir.iterdir()) == []
    assert not any(_serves(pid, scratch) for pid in _pids())


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _serves(pid: int, directory: Path) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/cwd").startswith(str(directory))
    except OSError:
        return False


# -- history -----------------------------------------------------------------------------------


def test_history_shows_physical_drills_with_their_own_rto_trend(history, base_dir):
    drill(history, base_dir, point=PointChoice("latest"))
    data = drill_history(history.home.app())
    kinds = {e["kind"] for e in data["drills"]}
    assert "physical" in kinds
    assert "app (physical)" in data["trend"]


def _execute(dsn: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql)
