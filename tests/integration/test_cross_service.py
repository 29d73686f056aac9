"""Cross-service consistency: ``backup all`` records one recovery point of a PostgreSQL backup
and the bucket snapshot taken after it; a drill's reference check proves every object the
restored rows name is in the paired snapshot, and names the dangling ones.

Real PostgreSQL (the session cluster) and the moto S3 server on loopback as the source
bucket; a local repository.
"""

from __future__ import annotations

import pytest

from drbackup.actions.backup_postgres import backup_target
from drbackup.actions.context import AppContext
from drbackup.actions.drill import run_drill
from drbackup.actions.snapshot_minio import snapshot_target
from drbackup.config import load_config
from drbackup.drill.plan import DrillPlan, ReferenceCheck
from drbackup.repository.recovery_points import list_recovery_point_ids
from tests.e2e.conftest import _run_in_process, make_repo_config, minio_target

OBJECTS = {"a.txt": b"alpha", "b/c.png": b"\x89PNG", "b/d.pdf": b"%PDF", "z-last": b"z"}

SCHEMA_SQL = """
CREATE TABLE attachments (id serial PRIMARY KEY, bucket text, key text NOT NULL);
INSERT INTO attachments (bucket, key) VALUES
    ('photos', 'b/d.pdf'), ('photos', 'a.txt'), ('photos', 'z-last'), ('photos', 'b/c.png'),
    ('photos', 'a.txt'), (NULL, 'not-a-reference');
"""


@pytest.fixture
def setup(request, tmp_path, monkeypatch, pg_db, s3_server, s3_bucket):
    """Target ``app`` (pg_db with ``attachments``), minio target ``files`` (bucket photos)."""
    s3 = s3_server.client()
    s3.create_bucket(Bucket="photos")
    for key, body in OBJECTS.items():
        s3.put_object(Bucket="photos", Key=key, Body=body)
    pg_db.execute(SCHEMA_SQL)
    cfg = make_repo_config("local", request, tmp_path, monkeypatch, pg_db.dsn)
    cfg.data["minio"] = {"files": minio_target(s3_server, tmp_path, ["photos"])}
    cfg.data["drill"] = {"scratch_on_source_server": True}  # scratch: the session cluster
    cfg.write()
    app = AppContext(load_config(str(cfg.path)))
    return type("Setup", (), {"app": app, "db": pg_db, "cfg": cfg})


@pytest.fixture
def run_cli(capsys):
    """``run_cli("recovery-points", "--json")``: the CLI in this process, output captured."""
    return lambda *args: _run_in_process(capsys, args)


def reference_drill(setup, **fields):
    reference = ReferenceCheck(
        name="attachments",
        target="app",
        query="SELECT bucket, key FROM attachments;",
        snapshot_target="files",
        **fields,
    )
    plan = DrillPlan(targets=["app"], name="xs", checks=["restore"], references=[reference])
    result = run_drill(setup.app, plan)
    return {c["name"]: c for c in result.report["checks"]}, result


def test_backup_all_records_one_recovery_point_with_both_members(setup, run_cli):
    result = run_cli("backup", "all", "--json")
    assert result.code == 0, result.stderr
    doc = result.json()
    assert [(m["target"], m["kind"]) for m in doc["members"]] == [
        ("app", "postgres"),
        ("files", "bucket"),
    ]
    refs = {(r.target, r.backup_id) for r in setup.app.repository().list_refs()}
    assert {(m["target"], m["backup_id"]) for m in doc["members"]} == refs
    assert list_recovery_point_ids(setup.app.repository()) == [doc["id"]]

    listed = run_cli("recovery-points", "--json")
    assert listed.code == 0, listed.stderr
    assert listed.json() == [doc]
    text = run_cli("recovery-points")
    assert text.stdout.splitlines()[0].split() == ["ID", "FINISHED", "MEMBERS"]
    assert doc["id"] in text.stdout


def test_backup_all_names_an_unknown_target(setup, run_cli):
    result = run_cli("backup", "all", "--targets", "app,filez")
    assert result.code != 0
    assert (
        result.error_lines[0] == "drbackup: error: unknown target 'filez' (did you mean 'files'?)"
    )


def test_reference_check_passes_when_every_object_exists(setup, run_cli):
    doc = run_cli("backup", "all", "--json").json()
    checks, result = reference_drill(setup)
    check = checks["references:attachments"]
    assert check["status"] == "pass", check["summary"]
    snapshot_id = doc["members"][1]["backup_id"]
    assert check["summary"] == f"all 5 referenced objects are in snapshot files/{snapshot_id}"
    assert check["evidence"]["pairing"] == f"recovery point {doc['id']}"
    assert not result.failed


def test_reference_check_fails_naming_the_dangling_reference(setup, run_cli):
    setup.db.execute(
        "INSERT INTO attachments (bucket, key) VALUES ('photos', 'never/uploaded.png'), "
        "('other', 'x')"
    )
    doc = run_cli("backup", "all", "--json").json()
    checks, result = reference_drill(setup)
    check = checks["references:attachments"]
    snapshot_id = doc["members"][1]["backup_id"]
    assert check["status"] == "fail"
    # buckets and counts only (the summary is recorded in the catalog and sent to chat);
    # the evidence names the objects
    assert check["summary"] == (
        f"2 of 7 referenced objects missing from snapshot files/{snapshot_id} (other: 1, photos: 1)"
    )
    assert check["evidence"]["dangling_objects"] == ["other/x", "photos/never/uploaded.png"]
    assert result.failed


def test_without_a_recovery_point_the_snapshot_is_paired_by_time(setup):
    setup.db.execute("INSERT INTO attachments (bucket, key) VALUES ('photos', 'late.txt')")
    early = snapshot_target(setup.app, "files")  # before late.txt was uploaded
    backup_target(setup.app, "app")
    checks, _ = reference_drill(setup)
    check = checks["references:attachments"]
    assert check["status"] == "fail"
    assert check["evidence"]["snapshot_id"] == early.backup_id
    assert check["evidence"]["pairing"].startswith("newest snapshot at or before")
    assert check["summary"].endswith(" (photos: 1)")
    assert check["evidence"]["dangling_objects"] == ["photos/late.txt"]


def test_no_snapshot_to_pair_fails_the_check(setup):
    backup_target(setup.app, "app")
    snapshot_target(setup.app, "files")  # later than the backup + tolerance 0
    checks, _ = reference_drill(setup, tolerance=0.001)
    check = checks["references:attachments"]
    assert check["status"] == "fail"
    assert check["summary"].startswith("no snapshot of files to pair with backup ")
