"""Timelines: a point-in-time restore promotes onto a new timeline; the restored server goes
on writing and archiving (its WAL and its history file); a point-in-time restore on the new
timeline works.  On an S3 repository; the restored server is started by hand, so that
recovery fetches its WAL through ``restore_command`` as PostgreSQL runs it (the runbook's
path: a background fetcher started by the first ``wal-fetch``, as the server's user).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from drbackup.actions.backup_physical import backup_physical
from drbackup.actions.restore_physical import restore_physical
from drbackup.repository.wal import WalArchive
from drbackup.sources.postgres.cluster import resolve_run_as
from drbackup.sources.postgres.recovery import LATEST, RecoveryServer, RecoveryTarget
from tests.fixtures.walarchive import make_wal_home, switch_wal, wait_archived


@pytest.fixture
def s3_home(s3_server, s3_bucket):
    options = {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region}
    home = make_wal_home(repo_url=f"s3://{s3_bucket}/repo", s3=options)
    yield home
    shutil.rmtree(home.root, ignore_errors=True)


def _write(cluster, first: int, last: int) -> dt.datetime:
    """Rows first..last, one transaction each; the commit time of the last."""
    for i in range(first, last + 1):
        cluster.execute("INSERT INTO t VALUES (%s)", params=(i,))
    return cluster.execute(
        "SELECT pg_xact_commit_timestamp(xmin) FROM t WHERE i = %s", params=(last,)
    )[0][0]


def _pause_past(when: dt.datetime) -> None:
    """Wait until the clock is in the second after ``when`` (commits after it land there)."""
    boundary = when.replace(microsecond=0) + dt.timedelta(seconds=1)
    while dt.datetime.now(dt.UTC) < boundary:
        time.sleep(0.02)


def test_a_new_timeline_is_archived_and_restorable_to_a_point(s3_home, archiving_cluster):
    source = archiving_cluster(s3_home)
    source.execute("CREATE TABLE t (i int)")
    _write(source, 1, 10)
    backup_physical(s3_home.app(), "app")
    t1 = _write(source, 11, 20)
    _pause_past(t1)
    _write(source, 21, 30)  # after the first point: gone from the new timeline
    wait_archived(source, switch_wal(source))

    # 1. restore to the second of row 20; start it by hand, archiving, as a new primary
    first = s3_home.root / "first"
    restore_physical(
        s3_home.app(),
        "app",
        first,
        RecoveryTarget.at_time(t1.replace(microsecond=0)),
        config_path=str(s3_home.config_path),
    )
    run_dir = Path(tempfile.mkdtemp(prefix="drbackup-tl-"))
    settings = {"archive_mode": "on", "archive_command": s3_home.archive_command()}
    promoted = RecoveryServer(
        first, run_dir, superuser="postgres", settings=settings, start_timeout=120
    )
    if (run_as := resolve_run_as()) is not None:
        os.chown(run_dir, run_as.uid, run_as.gid)
    try:
        promoted.start()
        assert promoted.execute("SELECT max(i) FROM t") == [(20,)]
        timeline = promoted.execute("SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
        assert timeline.startswith("00000002")
        t2 = _write(promoted, 101, 110)
        _pause_past(t2)
        _write(promoted, 111, 120)
        wait_archived(promoted, switch_wal(promoted))
    finally:
        promoted.destroy()

    archive = WalArchive(s3_home.app().repository(), "app")
    names = [s.name for s in archive.list_files(archive.current_cluster())]
    assert "00000002.history" in names
    assert any(n.startswith("00000002") and len(n) == 24 for n in names)

    # 2. a point-in-time restore on timeline 2, from the base backup taken on timeline 1
    point = RecoveryTarget.at_time(t2.replace(microsecond=0))
    with restore_physical(
        s3_home.app(), "app", s3_home.root / "second", point, start=True
    ) as again:
        assert again.outcome.reached and again.outcome.timeline == 2
        assert again.outcome.new_timeline == 3
        rows = {r[0] for r in again.server.execute("SELECT i FROM t")}
        assert rows == set(range(1, 21)) | set(range(101, 111))

    # 3. the old timeline stays reachable by naming it
    old = RecoveryTarget(LATEST, timeline="1")
    with restore_physical(s3_home.app(), "app", s3_home.root / "third", old, start=True) as back:
        assert {r[0] for r in back.server.execute("SELECT i FROM t")} == set(range(1, 31))
