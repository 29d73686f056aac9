"""The commit protocol under faults: no backup or snapshot ever lists as valid without its data.

A writer stores its data, confirms every object is present right before the manifest PUT,
and when that PUT raises it reads the manifest back before any cleanup: present means
committed, proven absent means the data may go, unknown means the data stays and the run
exits 4 naming the backup.  A writer holds a lease that prune respects, and refuses to
commit when its data or lease was removed under it.  The faults come from the S3 fault
proxy (tests/fixtures/faultproxy.py); backups and bucket snapshots alike.
"""

from __future__ import annotations

import io
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from drbackup.actions.gc import collect_garbage
from drbackup.actions.prune import prune_repository
from drbackup.actions.snapshot_minio import take_snapshot
from drbackup.config.retention import RetentionSettings
from drbackup.drill.bucket import run_bucket_drill
from drbackup.errors import DrbackupError, IntegrityError, StorageError
from drbackup.repository.keyring import Secrets
from drbackup.repository.repo import Repository
from drbackup.sources.buckets.client import BucketClient

FAST = {"n": 1024, "r": 8, "p": 1}
SECRETS = Secrets(passphrase="commit tests")
MANIFEST_PUT = {"method": "PUT", "path": r"/repo/manifests/"}
OLD_ID = "20250301T020000Z-0aa0aa"  # a backup that started long ago
# A grace far shorter than the backup: prune runs "5 minutes later", when the data is past
# the grace but the lease (renewed every minute) is not past its expiry.
SHORT_GRACE = {"app": RetentionSettings(keep_last=5, leftover_grace=timedelta(seconds=1))}


def SOON() -> datetime:  # noqa: N802 - reads as a constant at the call
    return datetime.now(UTC) + timedelta(minutes=5)


@pytest.fixture
def repo(proxied_s3_storage) -> Repository:
    return Repository.init(proxied_s3_storage, SECRETS, scrypt_params=FAST)


@pytest.fixture
def source(s3_server) -> BucketClient:
    s3 = s3_server.client()
    s3.create_bucket(Bucket="photos")
    for key, body in (("a", b"alpha"), ("b", b"beta"), ("c/d", b"delta" * 100)):
        s3.put_object(Bucket="photos", Key=key, Body=body)
    host = s3_server.endpoint_url.removeprefix("http://")
    return BucketClient(host, "testing", "testing", secure=False, label="files")


def keys(storage, prefix: str) -> list[str]:
    return [info.key for info in storage.list(prefix)]


def assert_nothing_lies(repo: Repository) -> list[str]:
    """Every listed backup loads and verifies; returns their ids."""
    fresh = Repository.open(repo._storage, SECRETS)
    listed = []
    for ref in fresh.list_refs():
        manifest = fresh.load_manifest(ref)
        assert fresh.verify(manifest) == [], f"{ref.target}/{ref.backup_id} lists but is damaged"
        listed.append(ref.backup_id)
    return listed


def drill_passes(repo, source, manifest) -> bool:
    result = run_bucket_drill(repo, source, manifest, rto_s=3600, rpo_s=86400, how="latest")
    assert result.status == "pass", [c.summary for c in result.checks if c.status != "pass"]
    return True


def start_backup(repo: Repository, body: bytes = b"rows" * 1000):
    writer = repo.new_backup("app", "postgres")
    writer.add_stream("db", "pg_dump", iter([body]))
    writer.add_stream("globals", "globals.sql", iter([b"roles"]))
    return writer


# --- item 1: an uncertain manifest PUT ----------------------------------------------------


def test_manifest_reply_lost_is_resolved_as_committed(repo, fault_proxy):
    fault_proxy.add("drop_response", **MANIFEST_PUT)  # every attempt lands, no reply comes
    with start_backup(repo) as writer:
        manifest = writer.commit()
    assert assert_nothing_lies(repo) == [manifest.backup_id]
    assert keys(repo._storage, "leases/") == []
    assert fault_proxy.requests("GET", rf"/repo/manifests/app/{manifest.backup_id}$")


def test_stat_after_the_manifest_put_failing_never_deletes_the_data(repo, fault_proxy):
    fault_proxy.add("reset_request", method="HEAD", path=r"/repo/manifests/")
    with start_backup(repo) as writer:
        manifest = writer.commit()
    assert assert_nothing_lies(repo) == [manifest.backup_id]


def test_unresolvable_outcome_keeps_the_data_and_exits_4_naming_the_backup(repo, fault_proxy):
    fault_proxy.add("drop_response", **MANIFEST_PUT)
    fault_proxy.add("reset_request", path=r"/repo/manifests/")  # read-back: storage gone
    writer = start_backup(repo)
    with pytest.raises(DrbackupError) as exc, writer:
        writer.commit()
    ref = f"app/{writer.backup_id}"
    assert exc.value.exit_code == 4
    assert exc.value.message.startswith(f"backup {ref}: cannot tell whether its manifest was ")
    assert exc.value.message.endswith("its data is kept")
    assert "'drbackup list --target app'" in exc.value.hint
    assert f"'drbackup verify {ref}'" in exc.value.hint and "'drbackup prune'" in exc.value.hint
    fault_proxy.clear()
    assert len(keys(repo._storage, f"data/app/{writer.backup_id}/")) == 2
    assert assert_nothing_lies(repo) == [writer.backup_id]  # the PUT had landed: whole


def test_manifest_put_that_never_landed_removes_data_and_lease(repo, fault_proxy):
    fault_proxy.add("reset_request", **MANIFEST_PUT)
    writer = start_backup(repo)
    with pytest.raises(StorageError), writer:
        writer.commit()
    fault_proxy.clear()
    assert assert_nothing_lies(repo) == []
    assert keys(repo._storage, "data/") == keys(repo._storage, "leases/") == []


# --- item 2: data or lease removed under a writer ----------------------------------------


def test_data_removed_under_the_writer_is_not_committed(repo):
    writer = start_backup(repo)
    removed = writer.items[1].objects[0].key
    repo._storage.delete(removed)  # an older prune, or a hand
    with pytest.raises(IntegrityError) as exc, writer:
        writer.commit()
    assert exc.value.message == (
        f"backup app/{writer.backup_id}: data object {removed} is missing right before the "
        "commit (removed under the running backup); not committed"
    )
    assert assert_nothing_lies(repo) == []
    assert keys(repo._storage, "data/") == keys(repo._storage, "leases/") == []


def test_data_shrunk_under_the_writer_is_not_committed(repo):
    writer = start_backup(repo)
    damaged = writer.items[0].objects[0].key
    repo._storage.put(damaged, io.BytesIO(b"short"))
    with pytest.raises(IntegrityError) as exc, writer:
        writer.commit()
    assert f"data object {damaged} has 5 bytes in storage, " in exc.value.message
    assert assert_nothing_lies(repo) == []


def test_lease_removed_under_the_writer_is_not_committed(repo):
    writer = start_backup(repo)
    (lease,) = keys(repo._storage, "leases/app/")
    assert lease == f"leases/app/{writer.backup_id}"
    repo._storage.delete(lease)  # what prune does to a lease it judged expired
    with pytest.raises(DrbackupError) as exc, writer:
        writer.commit()
    assert exc.value.message == (
        f"backup app/{writer.backup_id} lost its lease: it was removed by another process "
        "(prune took the backup for an abandoned one); not committed"
    )
    assert assert_nothing_lies(repo) == []


def test_a_paused_writer_loses_its_lease_and_never_rewrites_it(repo):
    repo.lease_timing = (0.05, 0.4)  # renew every 50 ms; lost after 0.2 s without renewal
    writer = start_backup(repo)
    writer._lease._stop.set()  # paused: no renewal happens any more
    deadline = time.monotonic() + 10
    while writer._lease.fresh():  # poll until past the writer's own limit
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(DrbackupError) as exc, writer:
        writer.commit()
    assert exc.value.message.startswith(
        f"backup app/{writer.backup_id} lost its lease: it was not renewed for "
    )
    assert assert_nothing_lies(repo) == []


# --- item 2: prune respects a live lease ---------------------------------------------------


def test_prune_never_removes_a_stalled_writer_and_the_backup_commits_whole(repo, fault_proxy):
    """The issue's case: a grace shorter than a slow backup (a manifest PUT held)."""
    writer = start_backup(repo)
    held = fault_proxy.hold(**MANIFEST_PUT)
    committed = []
    thread = threading.Thread(target=lambda: committed.append(writer.commit()))
    thread.start()
    held.wait_arrived()
    result = prune_repository(repo, SHORT_GRACE, now=SOON()).targets[0]
    (left,) = result.leftovers
    assert (left.backup_id, left.lease) == (writer.backup_id, "live")
    assert left.action.startswith("kept (writer alive: lease renewed ")
    held.release()
    thread.join(30)
    assert [m.backup_id for m in committed] == assert_nothing_lies(repo) == [writer.backup_id]


@pytest.mark.parametrize("storage_kind", ["local", "s3"])
def test_prune_removes_a_dead_writers_data_and_lease_past_the_grace(request, storage_kind):
    storage = request.getfixturevalue(f"{storage_kind}_storage")
    repo = Repository.init(storage, SECRETS, scrypt_params=FAST)
    dead = start_backup(repo)
    dead._lease.stop()  # killed: nothing renews the lease any more
    settings = {"app": RetentionSettings(keep_last=5, leftover_grace=timedelta(hours=2))}
    kept = prune_repository(repo, settings).targets[0]
    assert [(left.backup_id, left.action) for left in kept.leftovers] == [
        (dead.backup_id, "kept (younger than grace)")
    ]
    later = datetime.now(UTC) + timedelta(hours=3)
    result = prune_repository(repo, settings, now=later).targets[0]
    (left,) = result.leftovers
    assert (left.objects, left.lease, left.action) == (2, "expired", "removed")
    assert keys(storage, "data/") == keys(storage, "leases/") == []


# --- item 12: local temporaries of killed writes -------------------------------------------


def _aged(path, hours: float = 30) -> None:
    past = time.time() - hours * 3600
    os.utime(path, (past, past))


def _temporary(root, relative: str, hours: float | None = 30):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"partial write of a killed process")
    if hours is not None:
        _aged(path, hours)
    return path


def test_prune_cleans_temporaries_of_killed_writes_but_never_a_live_writers(local_storage):
    repo = Repository.init(local_storage, SECRETS, scrypt_params=FAST)
    root = local_storage.root
    live = start_backup(repo)  # a live writer, stalled on its next object for 30 h
    stalled = _temporary(root, f"data/app/{live.backup_id}/.tmp-live01")
    young = _temporary(root, "blobs/ab/.tmp-young1", hours=None)
    dead_data = _temporary(root, f"data/app/{OLD_ID}/.tmp-dead01")
    stray = [
        _temporary(root, "blobs/ab/.tmp-dead02"),
        _temporary(root, "manifests/app/.tmp-dead03"),
        _temporary(root, ".tmp-dead04"),
    ]
    settings = {"app": RetentionSettings(keep_last=5)}
    report = prune_repository(repo, settings)
    assert stalled.exists() and young.exists() and live.commit()
    assert not dead_data.exists() and not dead_data.parent.exists()
    assert [path for path in stray if path.exists()] == []
    (left,) = [left for left in report.targets[0].leftovers if left.backup_id == OLD_ID]
    assert (left.objects, left.temporaries, left.action) == (0, 1, "removed")
    assert sorted(t["key"] for t in report.temporaries if t["action"] == "removed") == [
        ".tmp-dead04",
        "blobs/ab/.tmp-dead02",
        "manifests/app/.tmp-dead03",
    ]
    assert assert_nothing_lies(repo) == [live.backup_id]


def test_dry_run_reports_temporaries_and_removes_none(local_storage):
    repo = Repository.init(local_storage, SECRETS, scrypt_params=FAST)
    stray = _temporary(local_storage.root, "blobs/ab/.tmp-dead02")
    report = prune_repository(repo, {"app": RetentionSettings(keep_last=5)}, dry_run=True)
    assert report.temporaries == [
        {
            "key": "blobs/ab/.tmp-dead02",
            "age_s": pytest.approx(30 * 3600, abs=60),
            "action": "would remove",
        }
    ]
    assert stray.exists()


# --- bucket snapshots ----------------------------------------------------------------------


def test_snapshot_manifest_reply_lost_is_committed_and_gc_keeps_working(repo, source, fault_proxy):
    fault_proxy.add("drop_response", **MANIFEST_PUT)
    manifest = take_snapshot(repo, source, "files", ["photos"])
    fault_proxy.clear()
    assert assert_nothing_lies(repo) == [manifest.backup_id]
    result = collect_garbage(repo, grace_s=0)
    assert (result.snapshots, result.referenced, result.deleted) == (1, 3, 0)
    assert drill_passes(repo, source, manifest)


def test_snapshot_unresolvable_outcome_keeps_index_and_blobs(repo, source, fault_proxy):
    fault_proxy.add("drop_response", **MANIFEST_PUT)
    fault_proxy.add("reset_request", path=r"/repo/manifests/")
    with pytest.raises(DrbackupError) as exc:
        take_snapshot(repo, source, "files", ["photos"])
    assert exc.value.exit_code == 4
    fault_proxy.clear()
    (listed,) = assert_nothing_lies(repo)
    assert exc.value.message.startswith(f"backup files/{listed}: cannot tell whether ")
    assert collect_garbage(repo, grace_s=0).deleted == 0


def test_prune_never_removes_a_running_snapshots_index(repo, source, fault_proxy):
    held = fault_proxy.hold(**MANIFEST_PUT)
    done = []
    thread = threading.Thread(
        target=lambda: done.append(take_snapshot(repo, source, "files", ["photos"]))
    )
    thread.start()
    held.wait_arrived()
    settings = {"files": SHORT_GRACE["app"]}
    (left,) = prune_repository(repo, settings, now=SOON()).targets[0].leftovers
    assert left.action.startswith("kept (writer alive")
    held.release()
    thread.join(30)
    assert [m.backup_id for m in done] == assert_nothing_lies(repo)
    assert drill_passes(repo, source, done[0])


def test_gc_never_fails_because_of_a_snapshot_whose_index_is_gone(repo, source, fault_proxy):
    kept = take_snapshot(repo, source, "files", ["photos"])
    broken = take_snapshot(repo, source, "files", ["photos"])
    for record in broken.items[0].objects:
        repo._storage.delete(record.key)  # damage from outside (an older drbackup, a hand)
    result = collect_garbage(repo, grace_s=0)
    assert result.broken == [f"files/{broken.backup_id}"]
    assert (result.snapshots, result.deleted) == (1, 0)
    assert drill_passes(repo, source, kept)
