"""The catalog on a real PostgreSQL server: same rows, same time zones, same rebuild as SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from drbackup.catalog import Catalog
from drbackup.catalog.models import Base
from drbackup.repository.keyring import Secrets
from drbackup.repository.repo import Repository
from drbackup.storage.local import LocalStorage
from tests.fixtures.pg import PgDatabase

IST = timezone(timedelta(hours=5, minutes=30))
# A session time zone far from UTC: rows must read back identical all the same.
KOLKATA = "?options=-c%20TimeZone%3DAsia/Kolkata"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    root = tmp_path / "repo"
    root.mkdir()
    return Repository.init(
        LocalStorage(root), Secrets(passphrase="pw"), scrypt_params={"n": 1024, "r": 8, "p": 1}
    )


def make_backup(repo: Repository, target: str = "app"):
    with repo.new_backup(target, "postgres") as w:
        w.recovery_point = datetime.now(IST)
        w.add_stream(target, "pg_dump", iter([b"data"]), meta={"database": target})
        w.meta["server_version"] = "15.18"
        return w.commit()


def test_postgresql_url_opens_with_psycopg(pg_db: PgDatabase):
    assert pg_db.dsn.startswith("postgresql://")
    with Catalog.open(pg_db.dsn) as cat:
        assert cat.engine.url.drivername == "postgresql+psycopg"
        assert cat.list_backups() == [] and cat.runs() == []
    tables = {row[0] for row in pg_db.execute("SELECT tablename FROM pg_tables")}
    assert {"catalog_info", "repositories", "backups", "runs"} <= tables
    with Catalog.open(pg_db.dsn) as cat:  # opening again: tables exist, nothing changes
        assert cat.list_backups() == []


def test_backups_and_rebuild_on_postgres(pg_db: PgDatabase, repo: Repository):
    first, second = make_backup(repo), make_backup(repo, target="crm")
    with Catalog.open(pg_db.dsn) as cat:
        cat.record_backup(repo.id, repo.url, first)
        cat.mark_verified(first.backup_id, False, ["app: missing object"])
        result = cat.rebuild_from(repo)
        assert (result.added, result.removed, result.unchanged) == (1, 0, 1)
        assert cat.get_backup(first.backup_id).status == "damaged"  # kept across rebuild

        repo.delete_backup(first.ref)
        result = cat.rebuild_from(repo)
        assert (result.added, result.removed, result.unchanged) == (0, 1, 1)
        (row,) = cat.list_backups()
        assert row.backup_id == second.backup_id
        assert row.summary == {"server_version": "15.18", "databases": ["crm"]}


def test_dropping_the_catalog_loses_nothing(pg_db: PgDatabase, repo: Repository):
    for target in ("app", "crm", "app"):
        make_backup(repo, target)
    with Catalog.open(pg_db.dsn) as cat:
        cat.rebuild_from(repo)
        before = cat.list_backups()
        Base.metadata.drop_all(cat.engine)
    with Catalog.open(pg_db.dsn) as cat:
        assert cat.list_backups() == []
        assert cat.rebuild_from(repo).added == 3
        assert cat.list_backups() == before


def test_times_are_utc_whatever_the_session_time_zone(pg_db: PgDatabase, repo: Repository):
    started = datetime(2024, 3, 31, 1, 30, 15, 123456, tzinfo=IST)
    manifest = make_backup(repo)
    with Catalog.open(pg_db.dsn) as cat:
        run_id = cat.record_run("drill", "app", started, started + timedelta(minutes=5), "ok")
        utc_row = cat.record_backup(repo.id, repo.url, manifest)
    with Catalog.open(pg_db.dsn + KOLKATA) as cat:
        with cat.engine.connect() as conn:
            assert conn.execute(text("SHOW TimeZone")).scalar_one() == "Asia/Kolkata"
        (run,) = cat.runs()
        assert (run.id, run.started_at, run.started_at.tzinfo) == (run_id, started, UTC)
        assert cat.get_backup(manifest.backup_id) == utc_row
        assert [r.id for r in cat.runs(since=started)] == [run_id]
        assert cat.runs(since=started + timedelta(microseconds=1)) == []
    stored = pg_db.execute("SELECT started_at AT TIME ZONE 'UTC' FROM runs")[0][0]
    assert stored == datetime(2024, 3, 30, 20, 0, 15, 123456)


def test_runs_on_postgres(pg_db: PgDatabase):
    with Catalog.open(pg_db.dsn) as cat:
        run_id = cat.start_run("backup", "app", details={"trigger": "schedule"})
        done = cat.finish_run(run_id, "ok", backup_id="20240101T000000Z-abcdef")
        assert (done.status, done.backup_id, done.details) == (
            "ok",
            "20240101T000000Z-abcdef",
            {"trigger": "schedule"},
        )
        assert [r.id for r in cat.runs(kind="backup", status="ok")] == [run_id]
