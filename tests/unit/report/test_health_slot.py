"""The health rules for a streaming replication slot: missing, lost, inactive, retaining."""

from __future__ import annotations

import json

from drbackup.report.health import Status
from drbackup.report.render import render
from drbackup.sources.postgres.slots import SlotState
from tests.unit.report.test_health import NOW, REPO, healthy, messages
from tests.unit.report.test_health_wal import wal

GIB = 1 << 30


def slot(**changes) -> dict:
    base = {"name": "drbackup_app", "exists": True, "active": True, "restart_lsn": 0x5000000}
    return SlotState(**(base | changes)).to_dict()


def test_an_active_slot_within_its_limit_is_ok():
    facts = healthy(wal=wal(slot=slot(retained_bytes=16 << 20), slot_max_retained=GIB))
    assert messages(facts) == (Status.OK, [])


def test_a_slot_retaining_too_much_wal_is_a_warning_with_the_bytes():
    facts = healthy(wal=wal(slot=slot(retained_bytes=3 * GIB), slot_max_retained=GIB))
    assert messages(facts) == (
        Status.WARNING,
        [
            "WARNING: replication slot drbackup_app retains 3.0 GiB of WAL on the server "
            "(over 1.0 GiB): its client lags or is gone"
        ],
    )


def test_an_inactive_slot_is_a_warning_naming_where_it_holds_wal_from():
    facts = healthy(wal=wal(slot=slot(active=False, retained_bytes=1024), slot_max_retained=GIB))
    assert messages(facts) == (
        Status.WARNING,
        [
            "WARNING: replication slot drbackup_app is inactive: nothing streams from it, and "
            "the server keeps WAL from 0/5000000 on"
        ],
    )


def test_a_missing_slot_is_a_warning_and_a_lost_one_critical():
    missing = SlotState("drbackup_app", exists=False).to_dict()
    assert messages(healthy(wal=wal(slot=missing, slot_max_retained=GIB))) == (
        Status.WARNING,
        ["WARNING: replication slot drbackup_app does not exist: no WAL is streamed"],
    )
    lost = slot(wal_status="lost", active=False)
    assert messages(healthy(wal=wal(slot=lost, slot_max_retained=GIB))) == (
        Status.CRITICAL,
        [
            "CRITICAL: replication slot drbackup_app is lost: the server removed WAL it had "
            "not streamed"
        ],
    )


def test_the_retained_bytes_are_in_json_and_prometheus():
    from prometheus_client.parser import text_string_to_metric_families

    from drbackup.report.health import build_report

    facts = healthy(wal=wal(slot=slot(retained_bytes=5 * GIB), slot_max_retained=GIB))
    report = build_report(REPO, [facts], NOW)
    data = json.loads(render(report, "json"))["targets"][0]["wal"]
    assert data["slot"]["retained_bytes"] == 5 * GIB
    assert data["slot"]["restart_lsn"] == "0/5000000"
    assert data["slot_max_retained_bytes"] == GIB
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(render(report, "prometheus"))
        for s in family.samples
    }
    assert samples["drbackup_health_wal_slot_retained_bytes"] == 5 * GIB
