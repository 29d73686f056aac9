"""Bucket snapshots against the moto S3 server on loopback, as source and as repository.

Round trips keep content, content type, user metadata, standard headers and tags; a second
snapshot of an unchanged bucket transfers and uploads nothing; point-in-time restores pick
the right snapshot; objects that change or vanish while a snapshot runs are recorded; a
corrupted blob fails the bucket drill naming the object; gc finds unreferenced blobs,
respects the grace period and never races a running snapshot.
"""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from drbackup.actions.context import AppContext
from drbackup.actions.gc import collect_garbage
from drbackup.actions.restore_minio import restore_minio, verify_snapshot_blobs
from drbackup.actions.restore_postgres import parse_time
from drbackup.actions.snapshot_minio import SnapshotOptions, snapshot_target, take_snapshot
from drbackup.config import load_config
from drbackup.drill.bucket import (
    SCRATCH_PREFIX,
    SCRATCH_TAG,
    find_missing_objects,
    run_bucket_drill,
)
from drbackup.drill.scratch import scratch_marker
from drbackup.errors import (
    LockedError,
    RestoreError,
    SourceError,
    StorageUnreachableError,
    UsageError,
)
from drbackup.repository.keyring import Secrets
from drbackup.repository.locks import RepositoryLock, list_locks
from drbackup.repository.manifest import LOCK_PREFIX, blob_key
from drbackup.repository.repo import Repository
from drbackup.sources.buckets.client import BucketClient
from drbackup.sources.buckets.index import open_index

FAST = {"n": 1024, "r": 8, "p": 1}
PASSPHRASE = "bucket tests"
SMALL = 64 * 1024  # objects above this take the streaming two-pass path in these tests
UNCHANGED_OBJECTS = int(os.environ.get("DRBACKUP_TEST_UNCHANGED_OBJECTS", "300"))


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def s3(s3_server, s3_storage):
    """boto3 client on the (freshly reset) server; the repository bucket already exists."""
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
    return "photos"


@pytest.fixture
def app(tmp_path, s3_server, s3_bucket, repo, photos):
    """A configuration whose repository is ``repo`` and minio target ``files`` -> photos."""
    for name, value in (("id", "testing"), ("secret", "testing")):
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
"""
    )
    env = {"DRBACKUP_PASSPHRASE": PASSPHRASE, "HOME": str(tmp_path)}
    return AppContext(load_config(tmp_path / "drbackup.yaml", env=env))


def put(s3, bucket: str, key: str, body: bytes, **extra) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)


def put_many(s3, bucket: str, count: int, size: int = 200) -> None:
    def one(i: int) -> None:
        put(s3, bucket, f"objects/{i:06d}", hashlib.sha256(str(i).encode()).digest() * (size // 32))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def body(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def index_of(repo, manifest, bucket: str = "photos") -> dict:
    with open_index(repo.open_item, manifest, bucket) as entries:
        return {e.key: e for e in entries}


def snap(repo, source, buckets=("photos",), **options):
    return take_snapshot(
        repo, source, "files", list(buckets), options=SnapshotOptions(small_object=SMALL, **options)
    )


def fill_varied(s3, bucket: str) -> dict[str, bytes]:
    """Objects with every attribute a restore must keep; returns key -> content."""
    contents = {
        "docs/report.pdf": b"%PDF-1.7 " + os.urandom(3000),
        "docs/notes.txt": b"plain text\n" * 50,
        "big/video.bin": os.urandom(3 * SMALL + 123),  # streams in two passes
        "empty": b"",
        "unicode/résumé ünïcode.txt": "héllo wörld\n".encode(),
        "spaces and+plus/a b.txt": b"x",
        "folder/": b"",  # a console "folder" marker is an object too
    }
    put(
        s3,
        bucket,
        "docs/report.pdf",
        contents["docs/report.pdf"],
        ContentType="application/pdf",
        Metadata={"owner": "alice", "project": "dr"},
        Tagging="class=confidential&retain=7y",
        CacheControl="max-age=60",
        ContentDisposition='attachment; filename="report.pdf"',
    )
    put(s3, bucket, "docs/notes.txt", contents["docs/notes.txt"], ContentType="text/plain")
    put(s3, bucket, "big/video.bin", contents["big/video.bin"], Tagging="kind=video")
    for key in ("empty", "unicode/résumé ünïcode.txt", "spaces and+plus/a b.txt", "folder/"):
        put(s3, bucket, key, contents[key])
    return contents


# --- round trip -------------------------------------------------------------------------


def test_round_trip_keeps_content_type_metadata_headers_and_tags(app, repo, source, s3, photos):
    contents = fill_varied(s3, photos)
    manifest = snapshot_target(app, "files", options=SnapshotOptions(small_object=SMALL))
    assert manifest.kind == "bucket"
    assert manifest.meta["objects"] == len(contents)
    assert manifest.meta["bytes"] == sum(map(len, contents.values()))

    result = restore_minio(app, "files", into_bucket="restored")
    assert (result.objects, result.bytes, result.created_bucket) == (
        len(contents),
        manifest.meta["bytes"],
        True,
    )
    for key, data in contents.items():
        assert body(s3, "restored", key) == data, key
    head = s3.head_object(Bucket="restored", Key="docs/report.pdf")
    assert head["ContentType"] == "application/pdf"
    assert head["Metadata"] == {"owner": "alice", "project": "dr"}
    assert head["CacheControl"] == "max-age=60"
    assert head["ContentDisposition"] == 'attachment; filename="report.pdf"'
    tags = s3.get_object_tagging(Bucket="restored", Key="docs/report.pdf")["TagSet"]
    assert {t["Key"]: t["Value"] for t in tags} == {"class": "confidential", "retain": "7y"}
    tags = s3.get_object_tagging(Bucket="restored", Key="big/video.bin")["TagSet"]
    assert tags == [{"Key": "kind", "Value": "video"}]
    assert s3.head_object(Bucket="restored", Key="docs/notes.txt")["ContentType"] == "text/plain"


def test_dry_run_lists_and_writes_nothing(app, repo, source, s3, photos):
    contents = fill_varied(s3, photos)
    snapshot_target(app, "files")
    buckets_before = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    result = restore_minio(app, "files", into_bucket="restored", dry_run=True, prefix="docs/")
    assert [p["key"] for p in result.planned] == ["docs/notes.txt", "docs/report.pdf"]
    assert result.bytes == len(contents["docs/notes.txt"]) + len(contents["docs/report.pdf"])
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == buckets_before


def test_non_empty_destination_is_refused_without_force(app, repo, source, s3, photos):
    put(s3, photos, "a", b"snapshot content")
    snapshot_target(app, "files")
    s3.create_bucket(Bucket="busy")
    put(s3, "busy", "a", b"newer content")
    with pytest.raises(RestoreError) as exc:
        restore_minio(app, "files", into_bucket="busy")
    assert exc.value.message == "destination bucket busy is not empty (it holds 'a')"
    assert body(s3, "busy", "a") == b"newer content"
    restore_minio(app, "files", into_bucket="busy", force=True)
    assert body(s3, "busy", "a") == b"snapshot content"


# --- incremental ------------------------------------------------------------------------


def timed_snapshots(repo, source, s3, photos, count: int):
    """(first, second, seconds of first, of second, of a bare listing) on ``count`` objects."""
    put_many(s3, photos, count)
    started = time.perf_counter()
    first = snap(repo, source)
    first_s = time.perf_counter() - started
    started = time.perf_counter()
    second = snap(repo, source)
    second_s = time.perf_counter() - started
    started = time.perf_counter()
    assert sum(1 for _ in source.list_objects(photos)) == count
    list_s = time.perf_counter() - started
    return first, second, first_s, second_s, list_s


def report_times(record_property, count, first_s, second_s, list_s) -> None:
    ratio, beyond = second_s / first_s, (second_s - list_s) / first_s
    record_property("time_ratio", round(ratio, 4))
    record_property("beyond_listing_ratio", round(beyond, 4))
    print(
        f"\n{count} objects: first {first_s:.2f}s, second {second_s:.2f}s ({ratio:.1%}), "
        f"bare listing {list_s:.2f}s; second minus listing {beyond:.1%} of the first"
    )


def test_unchanged_bucket_second_snapshot_uploads_nothing(
    repo, source, s3, photos, record_property
):
    first, second, first_s, second_s, list_s = timed_snapshots(
        repo, source, s3, photos, UNCHANGED_OBJECTS
    )
    stats = second.meta["buckets"]["photos"]
    assert second.meta["uploaded_bytes"] == 0
    assert (stats["transferred"], stats["transferred_bytes"], stats["uploaded_blobs"]) == (0, 0, 0)
    assert stats["reused"] == stats["objects"] == UNCHANGED_OBJECTS
    assert second.meta["previous_snapshot"] == first.backup_id
    assert index_of(repo, second) == index_of(repo, first)
    report_times(record_property, UNCHANGED_OBJECTS, first_s, second_s, list_s)


@pytest.mark.slow
def test_unchanged_5000_objects_second_snapshot_costs_its_listing(
    repo, source, s3, photos, record_property
):
    # The second snapshot must list the bucket, and moto lists slowly: its listing alone
    # costs about 6% of a first snapshot's GET and PUT per object, so the bound is on what
    # the snapshot adds to its listing.  bench/snapshot.py prints both ratios.
    _, second, first_s, second_s, list_s = timed_snapshots(repo, source, s3, photos, 5000)
    assert second.meta["uploaded_bytes"] == 0
    report_times(record_property, 5000, first_s, second_s, list_s)
    assert second_s - list_s <= 0.05 * first_s, f"first {first_s:.2f}s, second {second_s:.2f}s"


def test_changes_are_transferred_and_identical_content_deduplicated(repo, source, s3, photos):
    put(s3, photos, "keep", b"same")
    put(s3, photos, "edit", b"version 1")
    put(s3, photos, "drop", b"to be deleted")
    first = snap(repo, source)
    put(s3, photos, "edit", b"version 2")
    s3.delete_object(Bucket=photos, Key="drop")
    put(s3, photos, "new", b"same")  # content already stored under "keep"
    s3.create_bucket(Bucket="copies")
    put(s3, "copies", "edit-copy", b"version 2")  # same content as the edit, another bucket

    second = snap(repo, source, buckets=("photos", "copies"))
    photos_stats = second.meta["buckets"]["photos"]
    assert (photos_stats["reused"], photos_stats["transferred"]) == (1, 2)
    assert photos_stats["uploaded_blobs"] == 1  # "version 2"; "new" deduplicated
    assert photos_stats["deduplicated"] == 1
    copies = second.meta["buckets"]["copies"]
    assert (copies["deduplicated"], copies["uploaded_blobs"]) == (1, 0)
    entries = index_of(repo, second)
    assert sorted(entries) == ["edit", "keep", "new"]
    assert entries["new"].blob == entries["keep"].blob
    assert index_of(repo, second, "copies")["edit-copy"].blob == entries["edit"].blob
    assert index_of(repo, first)["edit"].blob != entries["edit"].blob


def test_include_and_exclude_prefixes(repo, source, s3, photos):
    for key in ("a/1", "a/skip/2", "b/3", "c/4"):
        put(s3, photos, key, key.encode())
    manifest = take_snapshot(
        repo, source, "files", [photos], include=["a/", "b/", "a/x/"], exclude=["a/skip/"]
    )
    assert sorted(index_of(repo, manifest)) == ["a/1", "b/3"]


class MeddlingClient(BucketClient):
    """Changes the bucket right before chosen reads: ``plan[key]`` holds one action per read."""

    def __init__(self, *args, plan, **kwargs):
        super().__init__(*args, **kwargs)
        self.plan = plan

    def open_object(self, bucket, key, *, if_match=None):
        actions = self.plan.get(key)
        if actions:
            action = actions.pop(0)
            if action:
                action()
        return super().open_object(bucket, key, if_match=if_match)


def test_objects_changing_or_vanishing_during_the_snapshot_are_recorded(
    repo, s3_server, s3, photos
):
    for key in ("a", "changed", "gone"):
        put(s3, photos, key, b"before " + key.encode())
    put(s3, photos, "unstable", os.urandom(2 * SMALL))

    def rewrite(key):
        return lambda: put(s3, photos, key, b"after " + os.urandom(2 * SMALL))

    plan = {
        "changed": [rewrite("changed")],  # after the listing: read again, newer version kept
        "gone": [lambda: s3.delete_object(Bucket=photos, Key="gone")],
        # changes between the two passes of a large object, on the read and the re-read
        "unstable": [None, rewrite("unstable"), None, rewrite("unstable")],
    }
    host = s3_server.endpoint_url.removeprefix("http://")
    client = MeddlingClient(host, "testing", "testing", secure=False, plan=plan)
    manifest = snap(repo, client)

    stats = manifest.meta["buckets"]["photos"]
    assert stats["vanished"] == {"count": 1, "keys": ["gone"]}
    assert stats["changed_during_snapshot"] == {"count": 1, "keys": ["unstable"]}
    assert stats["reread"] == {"count": 2, "keys": ["changed", "unstable"]}
    entries = index_of(repo, manifest)
    assert sorted(entries) == ["a", "changed"]
    assert entries["changed"].sha256 == hashlib.sha256(body(s3, photos, "changed")).hexdigest()


def test_interrupted_snapshot_stops_early_and_leaves_no_backup(repo, s3_server, s3, photos):
    put_many(s3, photos, 150)
    reads = []

    class Interrupting(BucketClient):
        def open_object(self, bucket, key, *, if_match=None):
            reads.append(key)
            if len(reads) == 5:
                # Ctrl-C, delivered to the main thread (main() turns SIGTERM into the same)
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            return super().open_object(bucket, key, if_match=if_match)

    host = s3_server.endpoint_url.removeprefix("http://")
    with pytest.raises(KeyboardInterrupt):
        snap(repo, Interrupting(host, "testing", "testing", secure=False), workers=2)
    assert len(reads) < 50  # the index stream stopped; it did not read the whole bucket
    assert repo.list_refs() == []
    assert list(repo._storage.list("data/")) == list(repo._storage.list(LOCK_PREFIX)) == []


def test_missing_source_bucket_fails_before_writing(repo, source, s3):
    with pytest.raises(SourceError) as exc:
        take_snapshot(repo, source, "files", ["nope"])
    assert exc.value.message == f"bucket nope does not exist on {source.endpoint}"
    assert list(repo._storage.list("")) == [next(iter(repo._storage.list("drbackup.repo")))]


# --- point in time ----------------------------------------------------------------------


def test_point_in_time_picks_the_newest_snapshot_at_or_before(app, repo, source, s3, photos):
    put(s3, photos, "doc", b"monday")
    monday = snapshot_target(app, "files")
    put(s3, photos, "doc", b"tuesday")
    tuesday = snapshot_target(app, "files")

    between = parse_time(monday.finished_at)
    result = restore_minio(app, "files", into_bucket="as-of-monday", point_in_time=between)
    assert result.selection.manifest.backup_id == monday.backup_id
    assert body(s3, "as-of-monday", "doc") == b"monday"

    later = parse_time(tuesday.recovery_point)
    result = restore_minio(app, "files", into_bucket="as-of-tuesday", point_in_time=later)
    assert result.selection.manifest.backup_id == tuesday.backup_id
    assert body(s3, "as-of-tuesday", "doc") == b"tuesday"

    with pytest.raises(UsageError) as exc:
        before = parse_time(monday.recovery_point) - timedelta(seconds=1)
        restore_minio(app, "files", into_bucket="nothing", point_in_time=before)
    assert exc.value.message.startswith("no backup of files has a recovery point at or before")


class _BlobsGone:
    """The repository's storage, whose blob reads fail as a server gone away would."""

    def __init__(self, storage):
        self._storage = storage

    def __getattr__(self, name):
        return getattr(self._storage, name)

    def open(self, key: str):
        if key.startswith("blobs/"):
            raise StorageUnreachableError(f"cannot read {key}: s3 endpoint unreachable (test)")
        return self._storage.open(key)


def test_repository_gone_mid_restore_stops_as_unreachable(app, s3, photos):
    """Not 'N objects failed' (exit 1, 'verify shows what is damaged') for every object
    left: the run stops as unreachable (exit 4), naming the endpoint problem."""
    put_many(s3, photos, 20)
    snapshot_target(app, "files")
    repo = app.repository()
    repo._storage = _BlobsGone(repo._storage)
    with pytest.raises(StorageUnreachableError, match="unreachable"):
        restore_minio(app, "files", into_bucket="half")


# --- drills -----------------------------------------------------------------------------


def drill(repo, source, manifest):
    return run_bucket_drill(repo, source, manifest, rto_s=3600, rpo_s=86400, how="latest")


def scratch_buckets(s3) -> list[str]:
    return [b["Name"] for b in s3.list_buckets()["Buckets"] if b["Name"].startswith(SCRATCH_PREFIX)]


def test_bucket_drill_passes_on_an_intact_snapshot(repo, source, s3, photos):
    fill_varied(s3, photos)
    manifest = snap(repo, source)
    assert verify_snapshot_blobs(repo, manifest) == []
    result = drill(repo, source, manifest)
    assert result.status == "pass", [c.summary for c in result.checks if c.status != "pass"]
    assert [c.name for c in result.checks] == [
        "restore",
        "checksums",
        "objects",
        "bytes",
        "cleanup",
        "rto",
        "rpo",
    ]
    assert scratch_buckets(s3) == []


def test_corrupted_blob_fails_the_drill_naming_the_object(repo, s3_bucket, source, s3, photos):
    fill_varied(s3, photos)
    manifest = snap(repo, source)
    victim = index_of(repo, manifest)["docs/report.pdf"]
    key = f"repo/{blob_key(victim.blob)}"
    data = bytearray(body(s3, s3_bucket, key))
    data[len(data) // 2] ^= 0x01
    put(s3, s3_bucket, key, bytes(data))

    problems = verify_snapshot_blobs(repo, manifest)
    assert len(problems) == 1 and problems[0].startswith("photos: object docs/report.pdf: ")

    result = drill(repo, source, manifest)
    assert result.status == "fail"
    failed = {c.name: c.summary for c in result.failed}
    assert set(failed) == {"restore", "checksums", "objects", "bytes", "rto"}
    # counts in the summaries (they travel to the catalog and chat); keys in the evidence
    assert failed["restore"] == "photos: 1 of 7 objects failed to restore"
    assert failed["checksums"] == "photos: 1 of 7 objects differ from the snapshot"
    evidence = {c.name: c.evidence for c in result.failed}
    assert [f["key"] for f in evidence["restore"]["failures"]] == ["docs/report.pdf"]
    assert evidence["checksums"]["problems"][0].startswith("object docs/report.pdf: ")
    assert failed["objects"] == "photos: 6 objects restored, the manifest says 7"
    assert scratch_buckets(s3) == []  # removed even though the drill failed


def test_a_bucket_drill_removes_only_scratch_buckets_it_marked(repo, source, s3, photos):
    # A bucket merely named like a crashed drill's scratch (older than 12 hours) was once
    # emptied and deleted by the next drill.  Now only a marked one goes.
    put(s3, photos, "doc", b"content")
    manifest = snap(repo, source)
    users = "drbackup-drill-20200101000000-abcdef"  # a user's bucket with a scratch name
    s3.create_bucket(Bucket=users)
    put(s3, users, "precious", b"keep me")
    dead = "drbackup-drill-20200101000000-0a0a0a"  # a scratch bucket of a killed drill
    s3.create_bucket(Bucket=dead)
    marker = scratch_marker("20200101T000000Z-0a0a0a", dead)
    s3.put_bucket_tagging(Bucket=dead, Tagging={"TagSet": [{"Key": SCRATCH_TAG, "Value": marker}]})
    put(s3, dead, "restored", b"half a restore")
    renamed = "drbackup-drill-20200101000000-0b0b0b"  # a marker naming another bucket
    s3.create_bucket(Bucket=renamed)
    s3.put_bucket_tagging(
        Bucket=renamed, Tagging={"TagSet": [{"Key": SCRATCH_TAG, "Value": marker}]}
    )
    result = run_bucket_drill(
        repo,
        source,
        manifest,
        rto_s=3600,
        rpo_s=86400,
        how="latest",
        drill_id="20261123T020000Z-a1b2c3",
    )
    assert result.status == "pass", [c.summary for c in result.checks if c.status != "pass"]
    assert result.stale_removed == [dead]
    assert sorted(scratch_buckets(s3)) == sorted([users, renamed])
    assert body(s3, users, "precious") == b"keep me"
    (restore,) = [c for c in result.checks if c.name == "restore"]
    assert restore.evidence["scratch_marked"] is True


def test_find_missing_objects_streams_the_index(repo, source, s3, photos):
    for key in ("a", "b", "d"):
        put(s3, photos, key, key.encode())
    manifest = snap(repo, source)
    refs = [("other", "x"), ("photos", "a"), ("photos", "b"), ("photos", "c"), ("photos", "e")]
    missing = list(find_missing_objects(repo, manifest, refs))
    assert missing == [("other", "x"), ("photos", "c"), ("photos", "e")]
    with pytest.raises(UsageError):
        list(find_missing_objects(repo, manifest, [("photos", "b"), ("photos", "a")]))


# --- gc and locks -----------------------------------------------------------------------


def orphan_one_blob(repo, source, s3, photos):
    """Two snapshots, the first deleted: its old version of "doc" is referenced by none."""
    put(s3, photos, "doc", b"old version")
    put(s3, photos, "kept", b"kept in both")
    first = snap(repo, source)
    put(s3, photos, "doc", b"new version")
    second = snap(repo, source)
    orphan = blob_key(index_of(repo, first)["doc"].blob)
    repo.delete_backup(first.ref)
    return orphan, second


def test_gc_dry_run_reports_unreferenced_blobs_and_deletes_nothing(repo, source, s3, photos):
    orphan, second = orphan_one_blob(repo, source, s3, photos)
    result = collect_garbage(repo, dry_run=True, grace_s=0)
    assert [b.key for b in result.unreferenced] == [orphan]
    assert (result.blobs, result.referenced, result.missing) == (3, 2, 0)
    assert repo._storage.exists(orphan)

    young = collect_garbage(repo, dry_run=True)  # default grace: 24h
    assert (young.unreferenced, young.young) == ([], 1)


def test_gc_never_deletes_referenced_or_young_blobs(repo, source, s3, photos):
    orphan, second = orphan_one_blob(repo, source, s3, photos)
    kept = collect_garbage(repo, grace_s=3600)
    assert (kept.deleted, kept.young) == (0, 1)
    assert repo._storage.exists(orphan)

    swept = collect_garbage(repo, grace_s=0)
    assert (swept.deleted, [b.key for b in swept.unreferenced]) == (1, [orphan])
    assert not repo._storage.exists(orphan)
    for entry in index_of(repo, second).values():
        assert repo._storage.exists(blob_key(entry.blob))
    assert list(repo._storage.list(LOCK_PREFIX)) == []


def test_gc_refuses_to_delete_while_a_snapshot_lock_is_live(repo, source, s3, photos):
    orphan, _ = orphan_one_blob(repo, source, s3, photos)
    with RepositoryLock(repo, "snapshot", "20261123T000000Z-abcdef").acquire("gc"):
        with pytest.raises(LockedError) as exc:
            collect_garbage(repo, grace_s=0)
        assert exc.value.message.startswith(
            "refusing to delete blobs: a snapshot is running (snapshot 20261123T000000Z-abcdef (live"
        )
        assert repo._storage.exists(orphan)
        assert [i.key for i in repo._storage.list(LOCK_PREFIX)] == [
            "locks/snapshot-20261123T000000Z-abcdef"
        ]
        dry = collect_garbage(repo, dry_run=True, grace_s=0)
        assert dry.note == "1 snapshot(s) running: their new blobs show as unreferenced"
    assert list(repo._storage.list(LOCK_PREFIX)) == []


def wait_until_older(repo, key: str, seconds: float) -> None:
    """Poll until the storage clock says ``key`` is more than ``seconds`` old."""
    written = repo._storage.stat(key).mtime
    deadline = time.monotonic() + seconds + 10
    while time.time() - written <= seconds + 1:  # +1: S3 times have 1 s resolution
        assert time.monotonic() < deadline, f"{key} never got {seconds}s old"
        time.sleep(0.1)


def test_gc_removes_a_stale_snapshot_lock_and_proceeds(repo, source, s3, photos):
    orphan, _ = orphan_one_blob(repo, source, s3, photos)
    lock = RepositoryLock(repo, "snapshot", "20261123T000000Z-dead00", stale_after=1)
    lock.acquire("gc")
    lock._stop.set()  # a dead (or paused) process: nobody refreshes it any more
    wait_until_older(repo, lock.key, 1)
    result = collect_garbage(repo, grace_s=0, stale_after=1, refresh_every=0.2)
    assert result.stale_locks_removed == ["locks/snapshot-20261123T000000Z-dead00"]
    assert result.deleted == 1
    with pytest.raises(LockedError) as exc:  # the paused snapshot cannot commit
        lock.check(max_age=0)
    assert exc.value.message.startswith("snapshot lock 20261123T000000Z-dead00 was lost: it ")


def test_snapshot_refuses_while_gc_deletes_and_leaves_nothing(repo, source, s3, photos):
    put(s3, photos, "a", b"a")
    with RepositoryLock(repo, "gc", "20261123T000000Z-0c0c0c").acquire("snapshot"):
        with pytest.raises(LockedError) as exc:
            snap(repo, source)
        assert exc.value.message.startswith("cannot snapshot while gc deletes blobs (gc ")
    assert repo.list_refs() == []
    assert list(repo._storage.list(LOCK_PREFIX)) == []


def test_snapshot_lock_is_held_while_running_and_removed_after(repo, source, s3, photos):
    put(s3, photos, "a", b"a")
    seen = []

    class Watching(BucketClient):
        def open_object(self, bucket, key, *, if_match=None):
            seen.extend(list_locks(repo._storage, time.time()))
            return super().open_object(bucket, key, if_match=if_match)

    watching = Watching(source.endpoint.removeprefix("http://"), "testing", "testing", secure=False)
    manifest = snap(repo, watching)
    assert [lock.key for lock in seen] == [f"locks/snapshot-{manifest.backup_id}"]
    assert list(repo._storage.list(LOCK_PREFIX)) == []


# --- public-key mode --------------------------------------------------------------------


def test_public_key_writers_snapshot_without_reading(s3_storage, source, s3, photos):
    admin = Repository.init(
        s3_storage, Secrets(passphrase=PASSPHRASE), public_key_mode=True, scrypt_params=FAST
    )
    public = base64.b64decode(admin.header["encryption"]["public_key"])
    writer = Repository.open(s3_storage, Secrets(public_key=public))
    put(s3, photos, "a", b"alpha")
    put(s3, photos, "b", b"beta")
    first = snap(writer, source)
    second = snap(writer, source)
    stats = second.meta["buckets"]["photos"]
    # without the private key the previous index is unreadable: every object is read
    # again, but no content is uploaded twice
    assert second.meta["incremental"] is False
    assert (stats["transferred"], stats["deduplicated"], second.meta["uploaded_bytes"]) == (2, 2, 0)
    reader = Repository.open(s3_storage, Secrets(passphrase=PASSPHRASE))
    manifest = reader.load_manifest(first.ref)
    with reader.open_blob(index_of(reader, manifest)["b"].blob) as blob:
        assert blob.read() == b"beta"
