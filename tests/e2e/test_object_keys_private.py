"""Bucket object keys stay out of what is stored and sent (issue 14, item 14).

Object keys are users' data (``people/<name>-passport.jpg``).  The operator's own stderr
may name one; the catalog's run errors, ``drbackup report`` (sent to chat channels) and the
daemon's job records name the bucket and a count instead.  A failing snapshot (the source
refuses one object, through the fault proxy) and a failing restore (a bucket drill over a
corrupted blob) are run as a user runs them, and everything recorded is searched for the
key.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from drbackup.actions.context import AppContext
from drbackup.catalog import Catalog
from drbackup.config import load_config
from drbackup.repository.manifest import blob_key
from drbackup.sources.buckets.index import open_index
from tests.e2e.conftest import PASSPHRASE, cli_argv, write_secret

SECRET_KEY = "people/alice-passport.jpg"
SECRET_PART = "alice-passport"


@pytest.fixture
def setting(tmp_path, monkeypatch, s3_server, s3_bucket, fault_proxy, run_cli):
    """Target ``media`` (bucket ``photos``, read through the fault proxy), a local repository
    and SQLite catalog; the config exported as DRBACKUP_CONFIG."""
    s3 = s3_server.client()
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key="docs/a.txt", Body=b"alpha")
    s3.put_object(Bucket="photos", Key=SECRET_KEY, Body=b"\xff\xd8" * 500)
    config = {
        "repository": {"url": str(tmp_path / "repo")},
        "catalog": f"sqlite:///{tmp_path / 'catalog.db'}",
        "minio": {
            "media": {
                "endpoint": fault_proxy.url,
                "access_key_file": str(write_secret(tmp_path / "id", s3_server.access_key_id)),
                "secret_key_file": str(
                    write_secret(tmp_path / "secret", s3_server.secret_access_key)
                ),
                "buckets": ["photos"],
            }
        },
    }
    path = tmp_path / "drbackup.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRBACKUP_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("DRBACKUP_CONFIG", str(path))
    assert run_cli("init", "--scrypt-log-n", "10").code == 0
    return {"path": path, "catalog": config["catalog"], "s3": s3, "tmp": tmp_path}


def recorded_texts(catalog_url: str) -> list[str]:
    """Every run row of the catalog, errors and details, as text."""
    with Catalog.open(catalog_url) as catalog:
        return [
            json.dumps([r.kind, r.target, r.status, r.error, r.details]) for r in catalog.runs()
        ]


def assert_private(texts: list[str]) -> None:
    leaked = [t for t in texts if SECRET_PART in t]
    assert leaked == []


def test_a_failing_snapshot_records_and_reports_no_object_key(setting, fault_proxy, run_cli):
    fault_proxy.add("status", method="GET", path=SECRET_PART, status=403, code="AccessDenied")

    failed = run_cli("snapshot", "minio", "media")
    assert failed.code != 0
    assert SECRET_KEY in failed.stderr  # the operator's terminal may name it

    runs = recorded_texts(setting["catalog"])
    assert any('"snapshot", "media", "failed"' in t for t in runs), runs
    assert any("an object in bucket photos" in t for t in runs), runs  # bucket, not key
    assert_private(runs)
    for fmt in ("text", "json", "markdown"):
        report = run_cli("report", "--format", fmt)
        assert "snapshot" in report.stdout  # the failed run is reported...
        assert_private([report.stdout, report.stderr])  # ...without the key

    # The daemon (a worker process, the job's record, the chat message's text) likewise.
    schedules = setting["tmp"] / "schedules"
    schedules.mkdir()
    (schedules / "jobs.yaml").write_text(
        "jobs: {nightly: {kind: snapshot, cron: '0 1 * * *', targets: [media]}}\n"
    )
    once = subprocess.run(
        cli_argv("daemon", "--schedules", str(schedules), "--once", "nightly"),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert once.returncode != 0
    runs = recorded_texts(setting["catalog"])
    assert any('"job", "nightly", "failed"' in t for t in runs), runs
    assert_private(runs)


def test_a_failing_bucket_restore_records_and_reports_no_object_key(setting, run_cli):
    assert run_cli("snapshot", "minio", "media").code == 0
    repo = AppContext(load_config(str(setting["path"]))).repository()
    manifest = repo.load_manifest(repo.list_refs("media")[-1])
    with open_index(repo.open_item, manifest, "photos") as entries:
        blob = {e.key: e.blob for e in entries}[SECRET_KEY]
    path = setting["tmp"] / "repo" / blob_key(blob)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    restored = run_cli("restore", "minio", "media", "--into-bucket", "restored")
    assert restored.code == 1
    assert SECRET_KEY in restored.stderr  # the operator's terminal names it

    drilled = run_cli("drill-bucket", "media")  # the restore a schedule runs, recorded
    assert drilled.code == 3
    assert SECRET_KEY in drilled.stdout  # on the terminal, from the evidence
    runs = recorded_texts(setting["catalog"])
    assert any('"drill", "media", "failed"' in t for t in runs), runs
    assert any("photos: 1 of 2 objects failed to restore" in t for t in runs), runs
    assert_private(runs)
    report = run_cli("report", "--format", "json")
    assert_private([report.stdout, report.stderr])
