"""``prune`` against real storage (a directory and moto's S3 server on loopback).

Backups are real (encrypted objects, manifests written last) with fabricated recovery
points; their ids carry the current time, so several made in one second sort randomly by
id.  The policy orders by recovery point, and the tests compare with what the pure policy
says, so the two orders never need to agree.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from drbackup.actions.gc import collect_garbage
from drbackup.actions.prune import (
    DRILL_REASON,
    GOOD_REASON,
    find_leftovers,
    prune_repository,
    prune_target,
    prune_targets,
)
from drbackup.catalog import Catalog
from drbackup.cli.prune import prune as prune_command
from drbackup.config.retention import RetentionSettings
from drbackup.errors import StorageError, UsageError
from drbackup.repository.keyring import Secrets
from drbackup.repository.manifest import DATA_PREFIX
from drbackup.repository.repo import Repository
from drbackup.repository.reports import report_key
from drbackup.retention.policy import BackupInfo, apply_policy
from tests.fixtures.s3server import TEST_PART_SIZE

FAST = {"n": 1024, "r": 8, "p": 1}
SECRETS = Secrets(passphrase="pw")
BASE = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)
LATER = timedelta(hours=25)  # past the default 24h grace for leftovers


@pytest.fixture(params=["local", "s3"])
def storage(request):
    return request.getfixturevalue(f"{request.param}_storage")


@pytest.fixture
def repo(storage) -> Repository:
    return Repository.init(storage, SECRETS, scrypt_params=FAST)


def make_backup(repo, recovery_point: datetime, *, target="app", kind="postgres") -> str:
    writer = repo.new_backup(target, kind)
    writer.add_stream("db", "pg_dump", iter([b"rows of " + recovery_point.isoformat().encode()]))
    writer.recovery_point = recovery_point
    return writer.commit().backup_id


def make_timeline(repo, count: int, step: timedelta, target="app") -> dict[str, datetime]:
    return {
        make_backup(repo, BASE + i * step, target=target): BASE + i * step for i in range(count)
    }


def expected_survivors(timeline: dict[str, datetime], settings, protected=None) -> set[str]:
    infos = [BackupInfo(b, "app", t) for b, t in timeline.items()]
    return set(apply_policy(infos, settings.policy(), protected=protected).kept_ids)


def keys(storage, prefix="") -> set[str]:
    return {info.key for info in storage.list(prefix)}


def data_dirs(storage, target="app") -> set[str]:
    return {key.split("/")[2] for key in keys(storage, f"{DATA_PREFIX}{target}/")}


def verify_all(repo) -> None:
    fresh = Repository.open(repo._storage, SECRETS)
    for ref in fresh.list_refs():
        assert fresh.verify(fresh.load_manifest(ref)) == [], ref


class FailingDataDeletes:
    """Storage whose deletes of data objects fail: a prune dying after a manifest delete."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def delete(self, key: str) -> None:
        if key.startswith(DATA_PREFIX):
            raise StorageError(f"cannot delete {key}: injected failure")
        self._inner.delete(key)


# --- decisions and deletions --------------------------------------------------------------


def test_dry_run_deletes_nothing(repo, storage):
    timeline = make_timeline(repo, 6, timedelta(days=1))
    uncommitted = repo.new_backup("app", "postgres")
    uncommitted.add_stream("db", "pg_dump", iter([b"half a backup"]))
    before = keys(storage)
    report = prune_repository(
        repo, {"app": RetentionSettings(keep_last=2)}, dry_run=True, now=datetime.now(UTC) + LATER
    )
    assert keys(storage) == before
    result = report.targets[0]
    assert len(result.keep) == 2
    assert {b.backup_id for b in result.remove} == set(timeline) - {
        b.backup_id for b, _ in result.keep
    }
    assert [r["action"] for r in result.to_dict()["remove"]] == ["would remove"] * 4
    assert result.removed == []
    assert [(left.backup_id, left.action) for left in result.leftovers] == [
        (uncommitted.backup_id, "would remove")
    ]


def test_prune_keeps_exactly_the_policy_survivors(repo, storage, tmp_path):
    timeline = make_timeline(repo, 30, timedelta(hours=7))
    settings = RetentionSettings(keep_last=2, keep_daily=3, keep_weekly=2)
    expected = expected_survivors(timeline, settings)
    with Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        report = prune_repository(repo, {"app": settings}, catalog=catalog)
        runs = catalog.runs(kind="prune")
    result = report.targets[0]
    assert result.error is None
    assert {ref.backup_id for ref in repo.list_refs("app")} == expected
    assert set(result.removed) == set(timeline) - expected
    assert data_dirs(storage) == expected  # the data of removed backups is gone too
    verify_all(repo)
    newest = max(timeline, key=timeline.get)
    reasons = dict((b.backup_id, r) for b, r in result.keep)[newest]
    assert reasons[:3] == [
        "newest backup",
        "keep_last #1",
        f"keep_daily {timeline[newest]:%Y-%m-%d}",
    ]
    assert [(run.target, run.status, run.details["removed"]) for run in runs] == [
        ("app", "ok", len(timeline) - len(expected))
    ]


def test_targets_are_pruned_independently(repo):
    app = make_timeline(repo, 4, timedelta(days=1))
    other = make_timeline(repo, 3, timedelta(days=1), target="other")
    report = prune_repository(
        repo, {"app": RetentionSettings(keep_last=1), "other": RetentionSettings(keep_last=2)}
    )
    assert [len(t.removed) for t in report.targets] == [3, 1]
    assert {r.backup_id for r in repo.list_refs("app")} == {max(app, key=app.get)}
    assert len(repo.list_refs("other")) == 2 and set(other)


def test_interrupted_prune_leaves_a_valid_repository_and_the_next_one_cleans_up(repo, storage):
    timeline = make_timeline(repo, 5, timedelta(days=1))
    settings = RetentionSettings(keep_last=2)
    failing = Repository.open(FailingDataDeletes(storage), SECRETS)
    report = prune_repository(failing, {"app": settings})
    result = report.targets[0]
    assert "injected failure" in result.error.message
    with pytest.raises(StorageError, match=r"prune failed for 1 part\(s\): app: .*injected"):
        report.raise_for_errors()
    # The manifest went first: the backup no longer exists; its data is an ignored leftover.
    survivors = {ref.backup_id for ref in repo.list_refs("app")}
    assert len(survivors) == 4
    half_deleted = (set(timeline) - survivors).pop()
    assert half_deleted in data_dirs(storage)
    verify_all(repo)
    # The next prune removes the remaining expired backups and the leftover data.
    report = prune_repository(repo, {"app": settings}, now=datetime.now(UTC) + LATER)
    result = report.targets[0]
    assert result.error is None
    assert {ref.backup_id for ref in repo.list_refs("app")} == expected_survivors(
        timeline, settings
    )
    assert [(left.backup_id, left.action) for left in result.leftovers] == [
        (half_deleted, "removed")
    ]
    assert data_dirs(storage) == {ref.backup_id for ref in repo.list_refs("app")}
    verify_all(repo)


def test_running_backup_is_never_removed_within_the_grace_period(repo, storage):
    make_timeline(repo, 3, timedelta(days=1))
    running = repo.new_backup("app", "postgres")  # no manifest yet: looks like a leftover
    running.add_stream("db", "pg_dump", iter([b"still dumping"]))
    settings = RetentionSettings(keep_last=1)
    result = prune_repository(repo, {"app": settings}).targets[0]
    assert [(left.backup_id, left.action) for left in result.leftovers] == [
        (running.backup_id, "kept (younger than grace)")
    ]
    running.recovery_point = BASE + timedelta(days=9)
    running.commit()  # the backup finishes after prune: it is whole and readable
    fresh = Repository.open(storage, SECRETS)
    manifest = fresh.load_manifest(fresh.resolve(running.backup_id))
    assert fresh.verify(manifest) == []


def test_abandoned_backup_data_is_removed_after_the_grace_period(repo, storage):
    make_timeline(repo, 2, timedelta(days=1))
    abandoned = repo.new_backup("app", "postgres")
    abandoned.add_stream("db", "pg_dump", iter([b"x" * 1000]))
    abandoned.add_stream("globals", "globals.sql", iter([b"roles"]))
    settings = {"app": RetentionSettings(keep_last=5, leftover_grace=timedelta(hours=2))}
    result = prune_repository(repo, settings, now=datetime.now(UTC) + timedelta(hours=3)).targets[0]
    (left,) = result.leftovers
    assert (left.backup_id, left.objects, left.action) == (abandoned.backup_id, 2, "removed")
    assert find_leftovers(storage, "app", {r.backup_id for r in repo.list_refs("app")}) == {}
    assert len(repo.list_refs("app")) == 2


def test_unreadable_manifest_is_kept_and_reported(repo, storage):
    timeline = make_timeline(repo, 3, timedelta(days=1))
    oldest = min(timeline, key=timeline.get)
    storage.put(f"manifests/app/{oldest}", _Reader(b"DRBK garbage"))
    result = prune_repository(repo, {"app": RetentionSettings(keep_last=1)}).targets[0]
    assert list(result.unreadable) == [oldest]
    assert oldest in {ref.backup_id for ref in repo.list_refs("app")}
    assert len(result.removed) == 1


def test_backup_behind_the_last_passing_drill_is_protected(repo):
    timeline = make_timeline(repo, 5, timedelta(days=1))
    by_age = sorted(timeline, key=timeline.get)
    _store_drill(repo, "20250301T000000Z-aaaaaa", by_age[0], "pass")
    _store_drill(repo, "20250302T000000Z-bbbbbb", by_age[1], "warn")  # the last passing one
    _store_drill(repo, "20250303T000000Z-cccccc", by_age[2], "fail")
    result = prune_repository(repo, {"app": RetentionSettings(keep_last=1)}).targets[0]
    survivors = {ref.backup_id for ref in repo.list_refs("app")}
    assert survivors == {by_age[-1], by_age[1]}
    reasons = dict((b.backup_id, r) for b, r in result.keep)
    assert reasons[by_age[1]] == [DRILL_REASON.format(drill_id="20250302T000000Z-bbbbbb")]


def test_newest_backup_not_known_damaged_is_protected(repo, tmp_path):
    timeline = make_timeline(repo, 4, timedelta(days=1))
    by_age = sorted(timeline, key=timeline.get)
    with Catalog.open(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        for ref in repo.list_refs("app"):
            catalog.record_backup(repo.id, repo.url, repo.load_manifest(ref))
        catalog.mark_verified(by_age[-1], False, ["0000-00000: authentication failed"])
        result = prune_repository(
            repo, {"app": RetentionSettings(keep_last=1)}, catalog=catalog
        ).targets[0]
        remaining = {r.backup_id for r in catalog.list_backups("app", repo.id)}
    assert {ref.backup_id for ref in repo.list_refs("app")} == {by_age[-1], by_age[-2]}
    assert dict((b.backup_id, r) for b, r in result.keep)[by_age[-2]] == [GOOD_REASON]
    assert remaining == {by_age[-1], by_age[-2]}  # the catalog forgot the removed backups


def test_removing_bucket_snapshots_runs_blob_collection(repo):
    make_backup(repo, BASE, kind="bucket")
    make_backup(repo, BASE + timedelta(days=1), kind="bucket")
    report = prune_repository(repo, {"app": RetentionSettings(keep_last=1)})
    assert report.blobs is not None and report.blobs["ran"] is True
    dry = prune_repository(repo, {"app": RetentionSettings(keep_last=1)}, dry_run=True)
    assert dry.blobs is None


# --- S3 Object Lock -----------------------------------------------------------------------


@pytest.fixture
def lock_bucket(s3_server, s3_bucket) -> str:
    name = f"drbackup-lock-{uuid.uuid4().hex[:12]}"
    s3_server.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
    return name


def _s3(s3_server, bucket, **kw):
    from drbackup.storage.s3 import S3Storage

    return S3Storage(bucket, "repo", part_size=TEST_PART_SIZE, **s3_server.storage_options(), **kw)


def test_object_locked_backups_are_reported_and_skipped(s3_server, lock_bucket):
    plain = _s3(s3_server, lock_bucket)
    locked = _s3(s3_server, lock_bucket, object_lock=("GOVERNANCE", 1))
    repo = Repository.init(plain, SECRETS, scrypt_params=FAST)
    unlocked_old = make_backup(repo, BASE)
    locked_repo = Repository.open(locked, SECRETS)
    locked_mid = make_backup(locked_repo, BASE + timedelta(days=1))
    newest = make_backup(locked_repo, BASE + timedelta(days=2))
    leftover = locked_repo.new_backup("app", "postgres")
    leftover.add_stream("db", "pg_dump", iter([b"interrupted"]))

    dry = prune_repository(repo, {"app": RetentionSettings(keep_last=1)}, dry_run=True)
    assert set(dry.targets[0].locked) == {locked_mid}

    report = prune_repository(
        repo, {"app": RetentionSettings(keep_last=1)}, now=datetime.now(UTC) + LATER
    )
    report.raise_for_errors()  # locks are reported, not errors
    result = report.targets[0]
    assert result.removed == [unlocked_old]
    assert list(result.locked) == [locked_mid]
    assert result.locked[locked_mid] > datetime.now(UTC) + timedelta(hours=23)
    assert result.to_dict()["remove"][0]["action"] in ("removed", "locked")
    assert [(left.backup_id, left.action) for left in result.leftovers] == [
        (leftover.backup_id, "locked")
    ]
    assert {ref.backup_id for ref in repo.list_refs("app")} == {locked_mid, newest}
    verify_all(repo)


def test_legal_hold_counts_as_locked_forever(s3_server, lock_bucket):
    storage = _s3(s3_server, lock_bucket)
    repo = Repository.init(storage, SECRETS, scrypt_params=FAST)
    old, _ = make_backup(repo, BASE), make_backup(repo, BASE + timedelta(days=1))
    s3_server.client().put_object_legal_hold(
        Bucket=lock_bucket, Key=f"repo/manifests/app/{old}", LegalHold={"Status": "ON"}
    )
    assert storage.locked_until(f"manifests/app/{old}") == datetime.max.replace(tzinfo=UTC)
    result = prune_repository(repo, {"app": RetentionSettings(keep_last=1)}).targets[0]
    assert list(result.locked) == [old] and result.removed == []


# --- entry points and the command -------------------------------------------------------------


def _app(repo, targets: dict[str, RetentionSettings]):
    cfgs = {name: SimpleNamespace(retention=settings) for name, settings in targets.items()}

    def target(name):
        if name not in cfgs:
            raise UsageError(f"unknown target '{name}'")
        return cfgs[name]

    config = SimpleNamespace(targets=cfgs, target=target)
    return SimpleNamespace(config=config, repository=lambda: repo, catalog=None)


def test_a_named_target_without_policy_is_refused(repo):
    app = _app(repo, {"app": RetentionSettings(), "other": RetentionSettings(keep_last=1)})
    with pytest.raises(UsageError, match="target 'app' has no retention policy"):
        prune_targets(app, ["app"])
    # Unnamed, targets without a policy keep everything and say so.
    make_timeline(repo, 2, timedelta(days=1))
    report = prune_targets(app)
    assert report.targets[0].note == "no retention policy: every backup is kept"
    assert len(repo.list_refs("app")) == 2
    with pytest.raises(UsageError, match="no target has a retention policy"):
        prune_targets(_app(repo, {"app": RetentionSettings()}))


def test_prune_target_returns_the_result_and_raises_failures(repo, storage):
    make_timeline(repo, 3, timedelta(days=1))
    result = prune_target(_app(repo, {"app": RetentionSettings(keep_last=1)}), "app")
    assert len(result.removed) == 2
    make_timeline(repo, 2, timedelta(days=1))
    failing = Repository.open(FailingDataDeletes(storage), SECRETS)
    with pytest.raises(StorageError, match="injected failure"):
        prune_target(_app(failing, {"app": RetentionSettings(keep_last=1)}), "app")


@pytest.mark.parametrize("storage", ["local"], indirect=True)
def test_cli_dry_run_lists_what_goes_and_why_the_rest_stays(repo):
    timeline = make_timeline(repo, 4, timedelta(days=1))
    state = SimpleNamespace(app=_app(repo, {"app": RetentionSettings(keep_daily=2)}))
    out = CliRunner().invoke(prune_command, ["--dry-run"], obj=state)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == "target app: keep 2 daily (UTC)"
    by_age = sorted(timeline, key=timeline.get)
    assert (
        f"  keep    {by_age[3]}  postgres  2025-03-04 02:00:00Z  newest backup, keep_daily 2025-03-04"
        in lines
    )
    assert f"  keep    {by_age[2]}  postgres  2025-03-03 02:00:00Z  keep_daily 2025-03-03" in lines
    assert f"  remove  {by_age[1]}  postgres  2025-03-02 02:00:00Z" in lines
    assert lines[-1] == "dry run: 2 backup(s) would be removed, 2 kept"
    assert len(repo.list_refs("app")) == 4

    out = CliRunner().invoke(prune_command, ["--json"], obj=state)
    doc = json.loads(out.output)
    assert doc["dry_run"] is False
    (target,) = doc["targets"]
    assert [k["reasons"] for k in target["keep"]][1] == ["keep_daily 2025-03-03"]
    assert sorted(r["backup_id"] for r in target["remove"]) == sorted(by_age[:2])
    assert {r["action"] for r in target["remove"]} == {"removed"}
    assert len(repo.list_refs("app")) == 2


# --- helpers ---------------------------------------------------------------------------------


def _store_drill(repo, drill_id: str, backup_id: str, status: str) -> None:
    report = {
        "drill_id": drill_id,
        "status": status,
        "started_at": BASE.isoformat(),
        "targets": [{"target": "app", "backup_id": backup_id, "status": status}],
        "checks": [],
    }
    repo.put_document(report_key("app", drill_id), report)


class _Reader:
    def __init__(self, data: bytes):
        self._data = data

    def read(self, n: int = -1) -> bytes:
        data, self._data = (self._data, b"") if n < 0 else (self._data[:n], self._data[n:])
        return data


# --- links in a local repository --------------------------------------------------------------


def test_prune_and_gc_never_follow_a_link_out_of_a_local_repository(local_storage, tmp_path):
    """Links inside a local repository to a directory outside it: one looks like the data of
    an interrupted backup, one sits inside a backup the policy expires, one among the blobs.
    Prune and gc delete what is theirs, leave every outside file intact and name each link."""
    repo = Repository.init(local_storage, SECRETS, scrypt_params=FAST)
    timeline = make_timeline(repo, 3, timedelta(days=1))
    oldest = min(timeline, key=timeline.get)
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = {name: f"precious {name}".encode() for name in ("0000-00000", "notes.txt")}
    for name, content in precious.items():
        (outside / name).write_bytes(content)
    blob_id = "ab" + "0" * 62
    (outside / blob_id).write_bytes(b"precious blob")
    root = Path(local_storage.url)
    links = {
        f"{DATA_PREFIX}app/20200101T000000Z-abcdef": outside,  # a "leftover", long expired
        f"{DATA_PREFIX}app/{oldest}/more": outside,  # inside a backup prune removes
        "blobs/ab": outside,  # a blob directory: gc
    }
    (root / "blobs").mkdir()
    for key, target in links.items():
        (root / key).symlink_to(target)

    settings = {"app": RetentionSettings(keep_last=1)}
    report = prune_repository(repo, settings, now=datetime.now(UTC) + timedelta(days=30))
    gc = collect_garbage(repo, grace_s=0)

    assert {p.name: p.read_bytes() for p in outside.iterdir()} == {
        **precious,
        blob_id: b"precious blob",
    }
    result = report.targets[0]
    assert oldest in result.removed and len(repo.list_refs("app")) == 1
    assert result.leftovers == []  # the link is not a leftover: nothing was read through it
    assert gc.deleted == 0 and gc.blobs == 0
    named = [w.split(" ", 1)[0] for w in report.warnings + gc.warnings]
    assert sorted(named) == sorted(links)
    assert all(root.joinpath(key).is_symlink() for key in links)  # left for the user

    # The command prints them after its decisions (the next prune meets the links again).
    out = CliRunner().invoke(prune_command, [], obj=SimpleNamespace(app=_app(repo, settings)))
    assert out.exit_code == 0, out.output
    warned = [line.split(" ")[1] for line in out.stderr.splitlines() if line.startswith("warning:")]
    assert warned == sorted(k for k in links if k.startswith(DATA_PREFIX))
