"""``drill run`` with minio targets: a bucket drill's checks in the same signed report as the
postgres targets', stored per target, in the history and the catalog; a corrupted blob fails
the drill naming the object; scratch buckets are removed even on Ctrl-C.

Real PostgreSQL (the session cluster), the moto S3 server on loopback as the source bucket,
a local repository.
"""

from __future__ import annotations

import os

import pytest

from drbackup.actions.backup_postgres import backup_target
from drbackup.actions.context import AppContext
from drbackup.actions.drill import drill_history, run_drill
from drbackup.actions.snapshot_minio import snapshot_target
from drbackup.catalog.drills import list_drills
from drbackup.codec import keys
from drbackup.config import load_config
from drbackup.drill import bucket as bucket_drill
from drbackup.drill.plan import BackupChoice, DrillPlan
from drbackup.drill.report import failure_summary, render_text
from drbackup.drill.signing import trusted_key, verify_report
from drbackup.repository.manifest import blob_key
from drbackup.repository.reports import report_key
from drbackup.sources.buckets.index import open_index
from tests.e2e.conftest import _run_in_process, make_repo_config, minio_target

OBJECTS = {"a.txt": b"alpha", "b/c.png": b"\x89PNG" * 50, "b/d.pdf": b"%PDF-1.7", "z": b"z"}
BUCKET_CHECKS = ["restore", "checksums", "objects", "bytes", "cleanup", "rto", "rpo"]


@pytest.fixture
def setup(request, tmp_path, monkeypatch, pg_db, s3_server, s3_bucket):
    """Postgres target ``app`` (pg_db), minio target ``files`` (bucket photos), a signing key."""
    s3 = s3_server.client()
    s3.create_bucket(Bucket="photos")
    for key, body in OBJECTS.items():
        s3.put_object(Bucket="photos", Key=key, Body=body, ContentType="application/x-test")
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2);")
    cfg = make_repo_config("local", request, tmp_path, monkeypatch, pg_db.dsn)
    key_file = tmp_path / "drill-signing.key"
    key_file.write_text(keys.b64(os.urandom(32)) + "\n")
    cfg.data["drill"] = {"signing_key_file": str(key_file), "scratch_on_source_server": True}
    cfg.data["minio"] = {"files": minio_target(s3_server, tmp_path, ["photos"])}
    cfg.write()
    app = AppContext(load_config(str(cfg.path)))
    backup_target(app, "app")
    manifest = snapshot_target(app, "files")
    return type(
        "Setup", (), {"app": app, "cfg": cfg, "s3": s3, "key_file": key_file, "snap": manifest}
    )


@pytest.fixture
def run_cli(capsys):
    return lambda *args: _run_in_process(capsys, args)


def scratch_buckets(s3) -> list[str]:
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    return [n for n in names if n.startswith(bucket_drill.SCRATCH_PREFIX)]


def corrupt(setup, key: str) -> None:
    repo = setup.app.repository()
    with open_index(repo.open_item, setup.snap, "photos") as entries:
        blob = {e.key: e.blob for e in entries}[key]
    path = setup.cfg.local_root / blob_key(blob)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def both_plan(**fields) -> DrillPlan:
    return DrillPlan(targets=["app", "files"], name="both", **fields)


def test_postgres_and_minio_targets_share_one_signed_report(setup):
    result = run_drill(setup.app, both_plan())
    report = result.report
    assert not result.failed, failure_summary(report)
    assert [t["target"] for t in report["targets"]] == ["app", "files"]
    files = report["targets"][1]
    assert files["kind"] == "bucket" and files["backup_id"] == setup.snap.backup_id
    assert [b["bucket"] for b in files["buckets"]] == ["photos"]
    assert files["timings"]["total_s"] is not None and files["objectives"]["rto_s"] > 0
    assert [c["name"] for c in report["checks"] if c["target"] == "files"] == BUCKET_CHECKS
    assert {c["name"] for c in report["checks"] if c["target"] == "app"} >= {"restore", "tables"}
    assert scratch_buckets(setup.s3) == []

    verify_report(report, trusted_key(None, setup.key_file, None))
    repo = setup.app.repository()
    keys_ = [report_key(t, report["drill_id"]) for t in ("app", "files")]
    assert result.stored == keys_
    for key in keys_:
        assert repo.get_document(key) == report
    history = drill_history(setup.app)
    assert [e["target"] for e in history["drills"]] == ["app", "files"]
    assert history["trend"]["files"]["drills"] == 1
    assert {d["target"] for d in list_drills(setup.app.catalog)} == {"app", "files"}


def test_a_corrupted_blob_fails_the_drill_naming_the_object(setup):
    corrupt(setup, "b/d.pdf")
    result = run_drill(setup.app, both_plan())
    report = result.report
    assert result.failed
    status = {t["target"]: t["status"] for t in report["targets"]}
    assert status["files"] == "fail" and status["app"] != "fail"
    failed = {c["name"]: c for c in report["checks"] if c["status"] == "fail"}
    assert set(failed) == {"restore", "checksums", "objects", "bytes", "rto"}
    # The summary counts (it is recorded in the catalog and sent to chat); the evidence,
    # and the drill's own text report, name the object.
    restore = failed["restore"]
    assert restore["summary"].startswith("photos: 1 of ") and "b/d.pdf" not in restore["summary"]
    assert [f["key"] for f in restore["evidence"]["failures"]] == ["b/d.pdf"]
    assert "b/d.pdf" not in failure_summary(report)
    assert any("object b/d.pdf: " in line for line in render_text(report).splitlines())
    runs = [r for r in setup.app.catalog.runs() if r.kind == "drill" and r.target == "files"]
    assert runs and runs[-1].status == "failed" and "b/d.pdf" not in runs[-1].error
    assert scratch_buckets(setup.s3) == []  # removed although the drill failed
    verify_report(report, trusted_key(None, setup.key_file, None))


def test_plan_selection_rules_and_check_subset_apply(setup):
    snapshot_target(setup.app, "files")  # a newer snapshot: select the first by id
    plan = DrillPlan(
        targets=["files"], backup=BackupChoice("id", backup_id=setup.snap.backup_id), checks=["rto"]
    )
    report = run_drill(setup.app, plan).report
    assert report["targets"][0]["backup_id"] == setup.snap.backup_id
    names = [c["name"] for c in report["checks"]]
    assert names == ["restore", "checksums", "objects", "bytes", "cleanup", "rto"]  # no rpo


def test_ctrl_c_during_the_restore_still_removes_the_scratch_bucket(setup, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bucket_drill, "restore_entries", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_drill(setup.app, both_plan())
    assert scratch_buckets(setup.s3) == []
    assert list(setup.app.repository()._storage.list("reports/")) == []  # no report


def test_drill_run_target_and_plan_file_on_the_cli(setup, run_cli, tmp_path):
    ok = run_cli("drill", "run", "--target", "files")
    assert ok.code == 0, ok.stderr
    assert ok.stdout.splitlines()[0].endswith(": PASS - 7 passed, 0 warned, 0 failed")
    assert "target files: PASS" in ok.stdout

    plan = tmp_path / "plan.yaml"
    plan.write_text("name: both\ntargets: [app, files]\nbackup: random\n")
    corrupt(setup, "a.txt")
    failed = run_cli("drill", "run", str(plan), "--format", "json")
    assert failed.code == 3
    assert "object a.txt" in failed.error_lines[-1]
    assert {t["target"] for t in failed.json()["targets"]} == {"app", "files"}

    alias = run_cli("drill-bucket", "files", "--json")  # the same drill, stored too
    assert alias.code == 3
    assert alias.json()["status"] == "fail" and alias.json()["scratch_buckets"]
    history = run_cli("drill", "history", "--target", "files", "--json").json()
    assert len(history["drills"]) == 3
    assert scratch_buckets(setup.s3) == []
