"""The catalog on SQLite: backups, runs, rebuilding from a repository, time zones, summaries."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text, update

from drbackup.catalog import Catalog, summarize
from drbackup.catalog.models import BackupRow
from drbackup.errors import UsageError
from drbackup.repository.keyring import Secrets
from drbackup.repository.repo import Repository
from drbackup.storage.local import LocalStorage

IST = timezone(timedelta(hours=5, minutes=30))
FINGERPRINT = {
    "level": "rows",
    "tables": {"public.users": {"rows": 3}, "public.orders": {"rows": 4}},
}


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    root = tmp_path / "repo"
    root.mkdir()
    return Repository.init(
        LocalStorage(root), Secrets(passphrase="pw"), scrypt_params={"n": 1024, "r": 8, "p": 1}
    )


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "catalog.db"


@pytest.fixture
def catalog(catalog_path: Path):
    with Catalog.open(f"sqlite:///{catalog_path}") as cat:
        yield cat


def make_backup(repo: Repository, target: str = "app", database: str = "app"):
    with repo.new_backup(target, "postgres") as w:
        w.recovery_point = datetime.now(IST)
        w.add_stream(database, "pg_dump", iter([b"data" * 10]), meta={"database": database})
        w.add_stream("globals", "globals_sql", iter([b"create role x;"]))
        w.meta["server_version"] = "15.18"
        w.meta["fingerprint"] = FINGERPRINT
        return w.commit()


# --- backups --------------------------------------------------------------------------------


def test_record_list_get_forget(catalog, repo):
    first, second = make_backup(repo), make_backup(repo, target="crm", database="crm")
    catalog.record_backup(repo.id, repo.url, second)
    catalog.record_backup(repo.id, repo.url, first)

    listed = catalog.list_backups()
    assert [b.backup_id for b in listed] == [first.backup_id, second.backup_id]  # newest last
    assert [b.backup_id for b in catalog.list_backups(target="crm")] == [second.backup_id]
    assert catalog.list_backups(repository_id="0" * 32) == []

    got = catalog.get_backup(first.backup_id)
    assert got == listed[0]
    assert (got.repository_id, got.repository_url, got.target, got.kind) == (
        repo.id,
        repo.url,
        "app",
        "postgres",
    )
    assert (got.size, got.stored_size, got.item_count) == (first.size, first.stored_size, 2)
    assert got.started_at == datetime.fromisoformat(first.started_at)
    assert (got.status, got.last_verified_at, got.verify_result) == ("ok", None, None)
    assert got.summary == {
        "server_version": "15.18",
        "databases": ["app"],
        "fingerprint": {"tables": 2, "rows": 7},
    }

    assert catalog.forget_backup(first.backup_id) is True
    assert catalog.forget_backup(first.backup_id) is False
    assert catalog.get_backup(first.backup_id) is None
    assert [b.backup_id for b in catalog.list_backups()] == [second.backup_id]


def test_recording_again_keeps_verification(catalog, repo):
    manifest = make_backup(repo)
    catalog.record_backup(repo.id, repo.url, manifest)
    catalog.mark_verified(manifest.backup_id, False, ["app: chunk 3 failed authentication"])
    again = catalog.record_backup(repo.id, repo.url, manifest)
    assert again.status == "damaged"
    assert again.verify_result == ["app: chunk 3 failed authentication"]
    assert len(catalog.list_backups()) == 1


def test_record_refuses_a_manifest_of_another_repository(catalog, repo):
    with pytest.raises(ValueError, match="manifest of repository"):
        catalog.record_backup("f" * 32, repo.url, make_backup(repo))


def test_mark_verified(catalog, repo):
    manifest = make_backup(repo)
    catalog.record_backup(repo.id, repo.url, manifest)
    at = datetime(2024, 5, 1, 12, 0, tzinfo=IST)

    damaged = catalog.mark_verified(manifest.backup_id, False, ["app: missing"], at=at)
    assert (damaged.status, damaged.verify_result) == ("damaged", ["app: missing"])
    assert damaged.last_verified_at == at and damaged.last_verified_at.tzinfo == UTC

    healed = catalog.mark_verified(manifest.backup_id, True, [])
    assert (healed.status, healed.verify_result) == ("ok", [])
    assert healed.last_verified_at > at


def test_mark_verified_unknown_backup(catalog):
    with pytest.raises(UsageError) as info:
        catalog.mark_verified("20240101T000000Z-abcdef", True, [])
    assert str(info.value) == "backup 20240101T000000Z-abcdef is not in the catalog"
    assert info.value.hint == "run 'drbackup catalog rebuild'"


# --- runs -----------------------------------------------------------------------------------


def test_record_and_filter_runs(catalog):
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    first = catalog.record_run(
        "backup",
        "app",
        t0,
        t0 + timedelta(minutes=2),
        "ok",
        backup_id="20240101T000000Z-abcdef",
        details={"bytes": 10},
    )
    second = catalog.record_run(
        "drill",
        "app",
        t0 + timedelta(hours=1),
        t0 + timedelta(hours=2),
        "failed",
        error="check row_counts failed",
    )
    catalog.record_run("backup", "crm", t0 + timedelta(hours=3), t0 + timedelta(hours=4), "ok")
    assert second > first

    runs = catalog.runs()
    assert [(r.kind, r.target, r.status) for r in runs] == [
        ("backup", "app", "ok"),
        ("drill", "app", "failed"),
        ("backup", "crm", "ok"),
    ]
    assert (runs[0].backup_id, runs[0].details, runs[1].error) == (
        "20240101T000000Z-abcdef",
        {"bytes": 10},
        "check row_counts failed",
    )
    assert [r.id for r in catalog.runs(since=t0 + timedelta(hours=1))] == [second, runs[2].id]
    assert [r.id for r in catalog.runs(target="app", status="failed")] == [second]
    assert [r.target for r in catalog.runs(kind="backup")] == ["app", "crm"]


def test_start_and_finish_run(catalog):
    run_id = catalog.start_run("backup", "app", details={"trigger": "schedule"})
    (running,) = catalog.runs(status="running")
    assert (running.id, running.finished_at) == (run_id, None)

    done = catalog.finish_run(run_id, "failed", error="pg_dump exited 1", details={"bytes": 0})
    assert (done.status, done.error) == ("failed", "pg_dump exited 1")
    assert done.details == {"trigger": "schedule", "bytes": 0}
    assert done.finished_at >= done.started_at
    assert catalog.runs(status="running") == []


def test_run_errors(catalog):
    now = datetime.now(UTC)
    with pytest.raises(
        ValueError,
        match="a finished run's status is one of ok, failed, interrupted, refused, not 'done'",
    ):
        catalog.record_run("backup", "app", now, now, "done")
    with pytest.raises(ValueError, match="naive datetime"):
        catalog.record_run("backup", "app", datetime(2024, 1, 1), now, "ok")
    with pytest.raises(UsageError, match="no run 999 in the catalog"):
        catalog.finish_run(999, "ok")
    for status in ("interrupted", "refused"):  # how a run ended without failing on its own
        catalog.record_run("backup", "app", now, now, status, error="why")
    assert [r.status for r in catalog.runs(target="app")] == ["interrupted", "refused"]


def test_runs_from_several_threads(catalog):
    now = datetime.now(UTC)

    def work() -> None:
        for _ in range(10):
            catalog.finish_run(catalog.start_run("verify", "app", started_at=now), "ok")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(catalog.runs(status="ok")) == 40


# --- rebuilding from the repository ---------------------------------------------------------


def test_rebuild_adds_removes_and_is_idempotent(catalog, repo):
    first, second = make_backup(repo), make_backup(repo, target="crm")
    result = catalog.rebuild_from(repo)
    assert (result.added, result.removed, result.updated, result.unchanged) == (2, 0, 0, 0)

    again = catalog.rebuild_from(repo)
    assert (again.added, again.removed, again.updated, again.unchanged) == (0, 0, 0, 2)

    repo.delete_backup(first.ref)
    third = make_backup(repo)
    result = catalog.rebuild_from(repo)
    assert (result.added, result.removed, result.updated, result.unchanged) == (1, 1, 0, 1)
    assert [b.backup_id for b in catalog.list_backups()] == [second.backup_id, third.backup_id]


def test_rebuild_repository_wins_and_verification_stays(catalog, repo):
    manifest = make_backup(repo)
    catalog.record_backup(repo.id, repo.url, manifest)
    catalog.mark_verified(manifest.backup_id, True, [])
    before = catalog.get_backup(manifest.backup_id)
    with catalog.engine.begin() as conn:
        conn.execute(update(BackupRow).values(size=1, summary={"databases": ["wrong"]}))

    result = catalog.rebuild_from(repo)
    assert (result.updated, result.unchanged) == (1, 0)
    assert catalog.get_backup(manifest.backup_id) == before


def test_rebuild_forgets_rows_of_deleted_backups_only_in_its_repository(catalog, repo, tmp_path):
    other_root = tmp_path / "other"
    other_root.mkdir()
    other = Repository.init(
        LocalStorage(other_root),
        Secrets(passphrase="pw"),
        scrypt_params={"n": 1024, "r": 8, "p": 1},
    )
    kept = make_backup(other)
    catalog.record_backup(other.id, other.url, kept)
    catalog.record_backup(repo.id, repo.url, make_backup(repo))
    repo.delete_backup(repo.list_refs()[0])

    assert catalog.rebuild_from(repo).removed == 1
    assert [b.backup_id for b in catalog.list_backups()] == [kept.backup_id]


def test_rebuild_marks_an_unreadable_manifest_damaged(catalog, repo):
    manifest = make_backup(repo)
    catalog.record_backup(repo.id, repo.url, manifest)
    path = repo._storage.root / manifest.ref.manifest_key
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))

    result = catalog.rebuild_from(repo)
    assert (result.added, result.removed, result.unchanged) == (0, 0, 0)
    assert len(result.unreadable) == 1
    assert result.unreadable[0].startswith(f"app/{manifest.backup_id}: ")
    row = catalog.get_backup(manifest.backup_id)
    assert row.status == "damaged" and row.verify_result == [result.unreadable[0].split(": ", 1)[1]]


def test_deleting_the_catalog_loses_nothing(catalog_path, repo):
    manifests = [make_backup(repo), make_backup(repo, target="crm", database="crm")]
    with Catalog.open(str(catalog_path)) as cat:
        for m in manifests:  # as the backup action does
            cat.record_backup(repo.id, repo.url, m)
        before = cat.list_backups()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{catalog_path}{suffix}").unlink(missing_ok=True)

    with Catalog.open(str(catalog_path)) as cat:
        assert cat.list_backups() == []
        assert cat.rebuild_from(repo).added == 2
        assert cat.list_backups() == before  # every field, timestamps to the microsecond


# --- time zones -----------------------------------------------------------------------------


def test_times_round_trip_as_utc(catalog, catalog_path, repo):
    started = datetime(2024, 3, 31, 1, 30, 15, 123456, tzinfo=IST)
    run_id = catalog.record_run("restore", "app", started, started + timedelta(seconds=1), "ok")
    (run,) = catalog.runs()
    assert run.id == run_id and run.started_at == started
    assert run.started_at.tzinfo == UTC and run.started_at.hour == 20  # 01:30 IST = 20:00 UTC

    manifest = make_backup(repo)  # recovery point given in IST
    row = catalog.record_backup(repo.id, repo.url, manifest)
    assert row.recovery_point == datetime.fromisoformat(manifest.recovery_point)
    assert row.recovery_point.tzinfo == UTC

    with catalog.engine.connect() as conn:
        stored = conn.execute(text("SELECT started_at FROM runs")).scalar_one()
    assert stored == "2024-03-30 20:00:15.123456"  # SQLite holds UTC


# --- summary --------------------------------------------------------------------------------


def test_summary_takes_only_small_non_secret_facts(repo):
    with repo.new_backup("app", "postgres") as w:
        w.add_stream(
            "app",
            "pg_dump",
            iter([b"x"]),
            meta={
                "database": "app",
                "fingerprint": {"tables": {"public.secret_table": {"rows": 5}}},
            },
        )
        w.add_stream("crm", "pg_dump", iter([b"x"]), meta={"database": "crm"})
        w.meta.update(
            server_version="16.4",
            dsn="postgresql://u:pw@h/app",
            big="x" * 10_000,
            databases=["app", "crm", "empty"],
            bucket="b" * 300,
        )
        manifest = w.commit()
    summary = summarize(manifest)
    assert summary == {
        "server_version": "16.4",
        "databases": ["app", "crm", "empty"],
        "fingerprint": {"tables": 1, "rows": 5},
    }
    assert "secret_table" not in repr(summary)
