"""The daemon streams WAL: two replicas on one PostgreSQL catalog, one pg_receivewal.

Each replica has its own spool (as two pods would), so only the catalog's claim keeps the
second from streaming; when the first stops (SIGTERM: pg_receivewal stopped, what it wrote
uploaded, the claim released) the second takes over, and the archive has no gap.
"""

from __future__ import annotations

import shutil

import yaml

from drbackup.actions.wal_check import analyze_archive
from tests.fixtures.walarchive import make_wal_home
from tests.fixtures.walstream import STREAM_SETTINGS, current_lsn, wait_streamed, wait_until
from tests.integration.test_daemon import daemons, write_schedule  # noqa: F401 - fixture
from tests.integration.test_wal_stream import insert_markers


def replica_config(home, name: str, catalog: str):
    doc = yaml.safe_load(home.config_path.read_text())
    doc["catalog"] = catalog
    target = doc["postgres"]["app"]
    target["backup_kinds"] = ["physical"]  # streaming is then the default capture
    target["wal"] = {"spool_dir": str(home.root / f"spool-{name}"), "flush_interval": "1s"}
    path = home.root / f"{name}.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def slot_pid(cluster) -> int | None:
    rows = cluster.execute("SELECT active_pid FROM pg_replication_slots")
    return rows[0][0] if rows else None


def test_two_replicas_stream_one_target_once_and_the_second_takes_over(
    pg_cluster_factory,
    pg_db,
    daemons,  # noqa: F811 - fixture
):
    home = make_wal_home()
    try:
        source = pg_cluster_factory(settings={**STREAM_SETTINGS, "synchronous_commit": "on"})
        source.execute("CREATE TABLE marker (id int PRIMARY KEY, at timestamptz)")
        home.set_dsn(source.dsn())
        schedules = write_schedule(
            home.root / "schedules", 'jobs: {report: {kind: report, cron: "0 0 1 1 *"}}\n'
        )
        first = daemons(replica_config(home, "a", pg_db.dsn), schedules)
        first.wait_event("wal_stream_receiver_started", target="app")
        second = daemons(replica_config(home, "b", pg_db.dsn), schedules)
        second.wait_event("wal_stream_claim_waiting", target="app")
        insert_markers(source, 1, 100)
        wait_streamed(home, current_lsn(source))
        assert second.count("wal_stream_started") == 0  # it never streamed beside the first
        assert len(source.execute("SELECT 1 FROM pg_stat_replication")) == 1
        held_by_first = slot_pid(source)
        assert held_by_first is not None

        assert first.stop() == 0
        assert first.count("wal_stream_stopped", target="app") == 1
        second.wait_event("wal_stream_receiver_started", target="app")
        insert_markers(source, 101, 200)
        source.execute("SELECT pg_switch_wal()")
        insert_markers(source, 201, 210)
        wait_streamed(home, current_lsn(source))
        wait_until(lambda: slot_pid(source) not in (None, held_by_first), "the second's client")
        status = analyze_archive(home.app().repository(), "app")
        assert status.gaps == [] and status.breaks == []
        _, text = second.get("/metrics")
        assert 'drbackup_wal_stream_up{target="app"} 1.0' in text
        assert 'drbackup_wal_slot_active{slot="drbackup_app",target="app"}' in text
    finally:
        shutil.rmtree(home.root, ignore_errors=True)
