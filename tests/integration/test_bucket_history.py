"""Versioned buckets: every change between two snapshots is captured, and a restore to a
second reproduces the bucket as it was then (moto's S3 server on loopback, versioning on).

Writes, overwrites (new metadata and tags), deletes and a re-creation happen at known
seconds between two snapshots; restores to five chosen seconds are compared with the
expected bucket object by object: keys, content, content type, metadata and tags.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime

import pytest

from drbackup.actions.context import AppContext
from drbackup.actions.restore_minio import restore_minio
from drbackup.actions.snapshot_minio import SnapshotOptions, take_snapshot
from drbackup.config import load_config
from drbackup.repository.keyring import Secrets
from drbackup.repository.repo import Repository
from drbackup.sources.buckets.client import BucketClient
from drbackup.sources.buckets.versions import open_history

FAST = {"n": 1024, "r": 8, "p": 1}
PASSPHRASE = "history tests"


@pytest.fixture
def s3(s3_server, s3_storage):
    return s3_server.client()


@pytest.fixture
def repo(s3_storage) -> Repository:
    return Repository.init(s3_storage, Secrets(passphrase=PASSPHRASE), scrypt_params=FAST)


@pytest.fixture
def source(s3_server, s3) -> BucketClient:
    host = s3_server.endpoint_url.removeprefix("http://")
    return BucketClient(host, "testing", "testing", secure=False, label="files")


@pytest.fixture
def photos(s3) -> str:
    s3.create_bucket(Bucket="photos")
    s3.put_bucket_versioning(Bucket="photos", VersioningConfiguration={"Status": "Enabled"})
    return "photos"


EVENTS_TOKEN = "s3cr3t-events-token"


@pytest.fixture
def app(tmp_path, s3_server, s3_bucket, repo, photos) -> AppContext:
    return history_app(tmp_path, s3_server, s3_bucket)


def history_app(tmp_path, s3_server, s3_bucket, extra: str = "") -> AppContext:
    """A config whose repository is ``repo`` and minio target ``files`` -> photos."""
    for name, value in (("id", "testing"), ("secret", "testing"), ("token", EVENTS_TOKEN)):
        (tmp_path / name).write_text(value + "\n")
        (tmp_path / name).chmod(0o600)
    (tmp_path / "drbackup.yaml").write_text(
        f"""
repository:
  url: s3://{s3_bucket}/repo
  s3:
    endpoint_url: {s3_server.endpoint_url}
    region: us-east-1
    access_key_id_file: {tmp_path / "id"}
    secret_access_key_file: {tmp_path / "secret"}
catalog: sqlite:///{tmp_path / "catalog.db"}
minio:
  files:
    endpoint: {s3_server.endpoint_url}
    access_key_file: {tmp_path / "id"}
    secret_key_file: {tmp_path / "secret"}
    buckets: [photos]
{extra}"""
    )
    env = {"DRBACKUP_PASSPHRASE": PASSPHRASE, "HOME": str(tmp_path)}
    return AppContext(load_config(tmp_path / "drbackup.yaml", env=env))


def snap(repo, source):
    return take_snapshot(repo, source, "files", ["photos"], options=SnapshotOptions())


def next_second() -> datetime:
    """Poll until the wall clock enters a new second (S3 times have second resolution);
    that second, which the next change is made in."""
    start = int(time.time())
    while int(time.time()) == start:
        time.sleep(0.01)
    return datetime.fromtimestamp(int(time.time()), UTC)


def bucket_state(s3, bucket: str) -> dict:
    """key -> (content, content type, metadata, tags) of every object in ``bucket``."""
    state = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            got = s3.get_object(Bucket=bucket, Key=obj["Key"])
            tags = s3.get_object_tagging(Bucket=bucket, Key=obj["Key"])["TagSet"]
            state[obj["Key"]] = (
                got["Body"].read(),
                got["ContentType"],
                got["Metadata"],
                {t["Key"]: t["Value"] for t in tags},
            )
    return state


class Timeline:
    """Changes made to the source at known seconds, and the bucket expected after each."""

    def __init__(self, s3, bucket: str):
        self.s3, self.bucket = s3, bucket
        self.model: dict = {}
        self.points: list[tuple[datetime, dict]] = []

    def put(self, key, content: bytes, ctype="text/plain", meta=None, tags=None):
        extra = {"Tagging": "&".join(f"{k}={v}" for k, v in tags.items())} if tags else {}
        self.s3.put_object(
            Bucket=self.bucket, Key=key, Body=content, ContentType=ctype,
            Metadata=meta or {}, **extra,
        )  # fmt: skip
        self.model[key] = (content, ctype, meta or {}, tags or {})

    def delete(self, key):
        self.s3.delete_object(Bucket=self.bucket, Key=key)
        self.model.pop(key)

    def at_new_second(self, *changes) -> datetime:
        second = next_second()
        for change in changes:
            change()
        assert int(time.time()) == int(second.timestamp()), "changes spilled into next second"
        self.points.append((second, dict(self.model)))
        return second


def test_restore_to_five_seconds_reproduces_the_bucket(app, repo, source, s3, photos):
    line = Timeline(s3, photos)
    line.at_new_second(
        lambda: line.put("a.txt", b"first a", meta={"owner": "ann"}, tags={"stage": "draft"}),
        lambda: line.put("b.bin", b"\x00b" * 100, ctype="application/octet-stream"),
    )
    first = snap(repo, source)
    line.at_new_second(
        lambda: line.put("a.txt", b"second a", meta={"owner": "bob"}, tags={"stage": "final"})
    )
    line.at_new_second(lambda: line.delete("b.bin"))
    line.at_new_second(lambda: line.put("c/new.json", b"{}", ctype="application/json"))
    line.at_new_second(lambda: line.delete("a.txt"), lambda: line.put("b.bin", b"b is back"))
    second = snap(repo, source)

    history = second.meta["buckets"]["photos"]["history"]
    assert history["chained_from"] == first.backup_id
    assert history["since"] == first.meta["buckets"]["photos"]["history"]["since"]
    with open_history(repo.open_item, second, photos) as lines:
        captured = [(v.key, v.deleted) for v in lines]
    for change in [("a.txt", False), ("b.bin", True), ("c/new.json", False), ("a.txt", True)]:
        assert change in captured, change

    for n, (second_at, expected) in enumerate(line.points):
        result = restore_minio(app, "files", into_bucket=f"restored-{n}", point_in_time=second_at)
        assert result.history is not None and result.history["at"].startswith(
            second_at.strftime("%Y-%m-%dT%H:%M:%S")
        )
        assert bucket_state(s3, f"restored-{n}") == expected, f"at {second_at}"


def test_dry_run_lists_the_state_at_a_second(app, repo, source, s3, photos):
    line = Timeline(s3, photos)
    line.at_new_second(lambda: line.put("keep", b"k"), lambda: line.put("gone", b"g"))
    snap(repo, source)
    removed = line.at_new_second(lambda: line.delete("gone"))
    snap(repo, source)
    result = restore_minio(app, "files", into_bucket="plan", point_in_time=removed, dry_run=True)
    assert [p["key"] for p in result.planned] == ["keep"]
    assert "from the version history of snapshots" in result.selection.note
    assert not s3.list_buckets()["Buckets"] or "plan" not in [
        b["Name"] for b in s3.list_buckets()["Buckets"]
    ]


def test_unversioned_bucket_keeps_snapshot_state_restores(app, repo, source, s3, photos):
    s3.put_bucket_versioning(Bucket=photos, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=photos, Key="x", Body=b"x")
    manifest = snap(repo, source)
    assert "history" not in manifest.meta["buckets"]["photos"]
    assert [i.name for i in manifest.items] == ["index:photos"]
    result = restore_minio(
        app, "files", into_bucket="plain", point_in_time=datetime.now(UTC), dry_run=True
    )
    assert result.history is None and result.selection.manifest.backup_id == manifest.backup_id


def test_report_states_each_buckets_guarantee_and_warns_when_not_versioned(
    app, repo, source, s3, photos
):
    from drbackup.actions.report import gather_report
    from drbackup.report.health import Status

    s3.put_object(Bucket=photos, Key="x", Body=b"x")
    first = snap(repo, source)
    since = first.meta["buckets"]["photos"]["history"]["since"]
    findings = {f.message: f.status for f in gather_report(app, ["files"]).targets[0].findings}
    assert findings[f"bucket photos: every change since {since}"] == Status.OK

    s3.put_bucket_versioning(Bucket=photos, VersioningConfiguration={"Status": "Suspended"})
    snap(repo, source)
    report = gather_report(app, ["files"])
    findings = {f.message: f.status for f in report.targets[0].findings}
    text = "bucket photos: state at snapshot times only (not versioned: enable versioning"
    assert [s for m, s in findings.items() if m.startswith(text)] == [Status.WARNING]


def test_gc_keeps_the_blobs_of_noncurrent_versions(app, repo, source, s3, photos):
    from drbackup.actions.gc import collect_garbage

    line = Timeline(s3, photos)
    old = line.at_new_second(lambda: line.put("doc", b"the old content"))
    line.at_new_second(lambda: line.put("doc", b"the new content"))
    snap(repo, source)  # the old version is only in the history, not in the index
    result = collect_garbage(repo, grace_s=0)
    assert result.unreferenced == [] and result.deleted == 0
    restore_minio(app, "files", into_bucket="old", point_in_time=old)
    assert s3.get_object(Bucket="old", Key="doc")["Body"].read() == b"the old content"


def test_verify_reads_the_blobs_of_noncurrent_versions(repo, s3_bucket, source, s3, photos):
    from drbackup.actions.restore_minio import verify_snapshot_blobs
    from drbackup.repository.manifest import blob_key

    line = Timeline(s3, photos)
    line.at_new_second(lambda: line.put("doc", b"the old content"))
    line.at_new_second(lambda: line.put("doc", b"the new content"))
    manifest = snap(repo, source)
    assert verify_snapshot_blobs(repo, manifest) == []
    with open_history(repo.open_item, manifest, photos) as lines:
        digest = hashlib.sha256(b"the old content").hexdigest()
        old = next(v.entry for v in lines if v.entry.sha256 == digest)
    key = f"repo/{blob_key(old.blob)}"
    data = bytearray(s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    s3.put_object(Bucket=s3_bucket, Key=key, Body=bytes(data))
    problems = verify_snapshot_blobs(repo, manifest)
    assert problems and all(p.startswith("photos") and "doc" in p for p in problems)
    assert any(p.startswith("photos (history): ") for p in problems)


def test_show_states_each_buckets_guarantee(app, repo, source, s3, photos, capsys, monkeypatch):
    from tests.e2e.conftest import _run_in_process

    s3.put_object(Bucket=photos, Key="x", Body=b"x")
    manifest = snap(repo, source)
    since = manifest.meta["buckets"]["photos"]["history"]["since"]
    monkeypatch.setenv("DRBACKUP_PASSPHRASE", PASSPHRASE)
    config = app.config.source
    shown = _run_in_process(capsys, ("--config", config, "show", manifest.backup_id))
    assert shown.code == 0, shown.stderr
    assert f"history:         photos: every change since {since}\n" in shown.stdout
