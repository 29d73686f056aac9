"""Streaming across a timeline switch: drbackup streams from a standby that is promoted.

pg_receivewal follows the switch as it defines it: the old timeline's last segment stays a
``.partial`` for good, the new timeline's history file is written, and streaming goes on on
the new timeline.  All of it lands in the repository, and a restore from a base backup taken
on the old timeline replays across the switch to the newest row.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from drbackup.actions.backup_physical import backup_physical
from drbackup.actions.wal_check import analyze_archive
from drbackup.sources.postgres.wal import parse_lsn
from tests.fixtures.walarchive import make_wal_home
from tests.fixtures.walstream import (
    STREAM_SETTINGS,
    current_lsn,
    streaming,
    wait_streamed,
    wait_until,
)
from tests.integration.test_wal_stream import insert_markers, restored_markers, stored_files

SETTINGS = {**STREAM_SETTINGS, "synchronous_commit": "on", "hot_standby": "on"}


def start_standby(pg_cluster_factory, primary):
    base = Path(tempfile.mkdtemp(prefix="drbackup-standby-"))
    argv = [str(primary.bin_dir / "pg_basebackup"), "-D", str(base / "data"), "-R"]
    subprocess.run([*argv, "-d", primary.dsn()], check=True, capture_output=True, timeout=120)
    return pg_cluster_factory(base_dir=base, settings=SETTINGS)


def replayed(standby, lsn: int) -> bool:
    got = standby.execute("SELECT pg_last_wal_replay_lsn()")[0][0]
    return got is not None and parse_lsn(str(got)) >= lsn


def test_streaming_follows_a_promotion_onto_the_new_timeline(pg_cluster_factory):
    home = make_wal_home(capture="stream", flush_interval="1s")
    try:
        primary = pg_cluster_factory(settings=SETTINGS)
        primary.execute("CREATE TABLE marker (id int PRIMARY KEY, at timestamptz)")
        standby = start_standby(pg_cluster_factory, primary)
        home.set_dsn(standby.dsn())  # drbackup streams from the standby
        with streaming(home) as stream:
            stream.wait_for(lambda: stream.streamer.status.running, "pg_receivewal")
            home.set_dsn(primary.dsn())  # the base backup is the primary's (timeline 1)
            backup_physical(home.app(), "app")
            home.set_dsn(standby.dsn())
            insert_markers(primary, 1, 50)
            lsn = current_lsn(primary)
            wait_until(lambda: replayed(standby, lsn), "the standby to replay")
            wait_streamed(home, lsn)
            assert standby.execute("SELECT pg_promote()")[0][0] is True
            insert_markers(standby, 51, 60)  # on timeline 2
            wait_streamed(home, current_lsn(standby))
            stream.wait_for(
                lambda: any(f.name == "00000002.history" for f in stored_files(home)),
                "the history file",
            )
        names = [f.name for f in stored_files(home)]
        ended = [n for n in names if n.startswith("00000001") and n.endswith(".partial")]
        assert ended, names  # timeline 1's last segment, as pg_receivewal left it
        assert any(n.startswith("00000002") and len(n) >= 24 for n in names), names
        status = analyze_archive(home.app().repository(), "app")
        assert status.gaps == [] and status.breaks == [], status.to_dict()
        assert sorted(status.timelines) == [1, 2]
        assert restored_markers(home, home.root / "restored") == list(range(1, 61))
    finally:
        shutil.rmtree(home.root, ignore_errors=True)
