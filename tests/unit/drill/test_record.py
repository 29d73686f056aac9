"""The drill report record: one JSON form that round-trips, so stored reports still verify."""

from __future__ import annotations

import copy
import json
from datetime import timedelta

import pytest

from drbackup.codec import keys
from drbackup.drill.checks import CheckResult
from drbackup.drill.history import history_entries
from drbackup.drill.record import (
    BucketRestore,
    DrillReport,
    Objectives,
    TargetReport,
    Timings,
    as_report,
)
from drbackup.drill.signing import (
    canonical_json,
    load_signing_key,
    public_bytes,
    sign_report,
    verify_report,
)
from drbackup.errors import IntegrityError
from tests.unit.drill.test_report import STARTED, sample_report


def bucket_report() -> DrillReport:
    check = CheckResult("restore", "pass", "photos: 7 objects restored", {"bucket": "photos"})
    check.target = "files"
    target = TargetReport(
        target="files",
        kind="bucket",
        backup_id="20261123T010000Z-000002",
        recovery_point="2026-11-23T01:00:00+00:00",
        selection="latest snapshot",
        buckets=[BucketRestore("photos", "drbackup-drill-abc")],
        stale_scratch_removed=[],
        timings=Timings(restore_s=1.5, verification_s=0.5, total_s=2.0),
        objectives=Objectives(900.0, 86400.0),
    )
    return DrillReport.build(
        drill_id="20261123T020000Z-b1b2b3",
        plan="adhoc",
        started_at=STARTED,
        finished_at=STARTED + timedelta(seconds=3),
        repository={"id": "r1", "url": "/srv/repo"},
        targets=[target],
        checks=[check],
    )


def test_the_json_form_round_trips_for_database_and_bucket_targets():
    for document in (sample_report(), bucket_report().to_dict()):
        record = DrillReport.from_dict(document)
        assert record.to_dict() == document
        assert DrillReport.from_dict(record.to_dict()) == record
    files = bucket_report().to_dict()["targets"][0]
    assert "scratch" not in files and files["kind"] == "bucket"  # as docs/drills.md says
    assert "kind" not in sample_report()["targets"][0]


def test_a_signed_report_loaded_and_written_again_still_verifies(tmp_path):
    key_file = tmp_path / "signing.key"
    key_file.write_text(keys.b64(b"\x07" * 32) + "\n")
    key = load_signing_key(key_file)
    signed = sign_report(sample_report(), key)
    stored = json.loads(json.dumps(signed))  # as the repository hands it back
    again = DrillReport.from_dict(stored).to_dict()
    assert canonical_json(again) == canonical_json(signed)  # the signed bytes, unchanged
    assert verify_report(again, public_bytes(key))
    assert DrillReport.from_dict(stored).signature.key_id == signed["signature"]["key_id"]


def test_members_it_does_not_know_are_kept():
    document = sample_report()
    document["reviewed_by"] = "auditor"
    document["targets"][0]["ticket"] = "OPS-1"
    document["targets"][0]["timings"]["queue_s"] = 0.25
    assert DrillReport.from_dict(copy.deepcopy(document)).to_dict() == document


def test_readers_take_the_record_or_its_json_form():
    record = as_report(sample_report())
    assert as_report(record) is record
    assert history_entries(record) == history_entries(sample_report())
    (target,) = record.targets
    assert record.target("app") is target and record.target("other") is None
    assert [c.name for c in record.failed_checks("app")] == ["tables"]
    assert record.failed and target.status == "fail"
    assert record.started_at == STARTED and record.finished_at - record.started_at == timedelta(
        seconds=6
    )


def test_a_minimal_report_reads_with_defaults():
    minimal = {
        "drill_id": "20250302T000000Z-bbbbbb",
        "status": "pass",
        "started_at": STARTED.isoformat(),
        "targets": [{"target": "app", "backup_id": "20250301T000000Z-aaaaaa", "status": "pass"}],
        "checks": [],
    }
    record = DrillReport.from_dict(minimal)
    assert (record.finished_at, record.checks, record.plan) == (STARTED, [], None)
    assert record.target("app").backup_id == "20250301T000000Z-aaaaaa"


@pytest.mark.parametrize(
    "broken",
    [
        {"format": "drbackup-manifest", "drill_id": "x"},
        {"drill_id": "x", "started_at": "yesterday", "targets": []},
        {"drill_id": "x", "started_at": STARTED.isoformat()},
        {"drill_id": "x", "started_at": STARTED.isoformat(), "targets": [{"backup_id": "b"}]},
    ],
)
def test_what_is_not_a_report_is_an_integrity_error(broken):
    with pytest.raises(IntegrityError) as info:
        DrillReport.from_dict(broken)
    assert info.value.message.startswith("drill report x is not readable: ")
