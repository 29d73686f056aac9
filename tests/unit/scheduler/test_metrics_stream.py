"""The daemon's /metrics shows its streamers and their replication slots."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from drbackup.actions.wal_stream import StreamStatus
from drbackup.scheduler.http import Metrics
from drbackup.sources.postgres.slots import SlotState


def samples(metrics: Metrics) -> dict:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name.startswith(("drbackup_wal_stream", "drbackup_wal_slot"))
        and not s.name.endswith("_created")
    }


def test_a_streamer_reports_itself_and_its_slot():
    metrics = Metrics()
    metrics.record_stream_idle("app")
    status = StreamStatus("app", "drbackup_app", running=True, restarts=2, last_upload=1.8e9)
    status.spool_bytes, status.slot_max_retained = 16 << 20, 1 << 30
    status.slot_state = SlotState("drbackup_app", True, active=True, retained_bytes=5 << 20)
    metrics.record_stream(status)
    status.restarts = 3
    metrics.record_stream(status)  # counted once per restart
    t, ts = (("target", "app"),), (("slot", "drbackup_app"), ("target", "app"))
    assert samples(metrics) == {
        ("drbackup_wal_stream_up", t): 1.0,
        ("drbackup_wal_stream_restarts_total", t): 3.0,
        ("drbackup_wal_stream_last_upload_timestamp_seconds", t): 1.8e9,
        ("drbackup_wal_stream_spool_bytes", t): float(16 << 20),
        ("drbackup_wal_slot_retained_bytes", ts): float(5 << 20),
        ("drbackup_wal_slot_max_retained_bytes", ts): float(1 << 30),
        ("drbackup_wal_slot_active", ts): 1.0,
    }
    metrics.record_stream_idle("app")  # another replica streams now
    assert samples(metrics)[("drbackup_wal_stream_up", t)] == 0.0


def test_a_wal_check_run_reports_the_slot_too():
    metrics = Metrics()
    slot = SlotState("drbackup_app", True, active=False, retained_bytes=7).to_dict()
    details = {"window": {}, "gaps": [], "breaks": [], "slot": slot, "slot_max_retained": 9}
    metrics.record_wal("wal-check", "app", details)
    got = samples(metrics)
    ts = (("slot", "drbackup_app"), ("target", "app"))
    assert got[("drbackup_wal_slot_active", ts)] == 0.0
    assert got[("drbackup_wal_slot_retained_bytes", ts)] == 7.0
    assert got[("drbackup_wal_slot_max_retained_bytes", ts)] == 9.0
