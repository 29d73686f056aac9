"""``restore postgres --jobs 2`` end to end: the decrypted archive is spooled to a file while
the target database is prepared (created, globals applied), then ``pg_restore -j2`` runs.

Whatever happens, the spool directory is left empty; a refused target is refused before any
of the archive is read; a damaged object fails naming it, on the threaded decoding path too;
a preparation that fails mid-spool is the error reported and nothing is restored.
"""

from __future__ import annotations

import io
import uuid

import psycopg
import pytest

from drbackup.actions import restore_postgres as action
from drbackup.codec import pipeline
from drbackup.codec.aead import read_header
from drbackup.sources.postgres.archive import DataOffsets
from tests.e2e.conftest import load_awkward
from tests.e2e.test_postgres_backup_restore import (
    SHOP_SQL,
    assert_restored_equal,
    backup,
    dump_item,
    manifest_of,
    restore,
    scalar,
)


@pytest.fixture
def scratch_db(pg_cluster):
    """``scratch_db()``: a new database name and its dsn; dropped after the test."""
    names: list[str] = []

    def make() -> tuple[str, str]:
        names.append(f"e2e_spooled_{uuid.uuid4().hex[:10]}")
        return names[-1], pg_cluster.dsn(names[-1])

    yield make
    for name in names:
        pg_cluster.drop_database(name)


@pytest.fixture
def spool(tmp_path):
    path = tmp_path / "spool"
    path.mkdir()
    return path


def test_jobs_2_round_trip_with_globals(
    repo_config, pg_db, run_cli, scratch_db, spool, monkeypatch
):
    load_awkward(pg_db)
    patched = []  # (offsets found, data entries) of each spooled archive
    real_patch = DataOffsets.patch

    def patch(self, path):
        patched.append((real_patch(self, path), len(self.toc.data)))
        return patched[-1][0]

    monkeypatch.setattr(DataOffsets, "patch", patch)
    summary = backup(run_cli)
    manifest = manifest_of(run_cli, summary["backup_id"])
    name, into = scratch_db()
    restored = restore(
        run_cli, into, "--create", "--jobs", "2", "--spool-dir", spool, "--with-globals"
    )
    assert restored.code == 0, restored.stderr
    lines = restored.stdout.splitlines()
    assert lines[0].startswith(f"using latest backup {summary['backup_id']}")
    assert lines[1].startswith("globals: 0 role(s) created, ")
    assert lines[2].startswith(f"restored {pg_db.name} into postgresql://postgres@")
    assert_restored_equal(manifest, into)
    assert list(spool.iterdir()) == []
    # pg_restore -j2 read a TOC with every data block's position filled in (large objects
    # included), and the restored data is equal: the positions were right.
    [(filled, entries)] = patched
    assert filled == entries > 10


def test_jobs_2_refuses_the_target_before_reading_the_archive_and_force_replaces_it(
    local_repo_config, pg_db, run_cli, scratch_db, spool, monkeypatch
):
    pg_db.execute(SHOP_SQL)
    manifest = manifest_of(run_cli, backup(run_cli)["backup_id"])
    name, into = scratch_db()
    restores = []
    real = action.run_pg_restore
    monkeypatch.setattr(
        action, "run_pg_restore", lambda *a, **kw: restores.append(a) or real(*a, **kw)
    )

    missing = restore(run_cli, into, "--jobs", "2", "--spool-dir", spool)
    assert missing.code == 1
    assert missing.error_lines == [
        f"drbackup: error: target database {name} does not exist",
        "hint: add --create to create it",
    ]

    assert restore(run_cli, into, "--create").code == 0
    assert len(restores) == 1
    with psycopg.connect(into, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE id % 2 = 0")
    refused = restore(run_cli, into, "--jobs", "2", "--spool-dir", spool)
    assert refused.code == 1
    assert refused.error_lines == [
        f"drbackup: error: target database {name} is not empty (9 objects)",
        "hint: restore into an empty or new database (--create), "
        "or pass --force to replace it once the restore succeeded",
    ]
    assert len(restores) == 1  # no spool was started for either refusal
    assert scalar(into, "SELECT count(*) FROM orders") == 1000  # untouched
    assert list(spool.iterdir()) == []

    # --force: dropped and created again while the archive is spooled
    forced = restore(run_cli, into, "--force", "--jobs", "2", "--spool-dir", spool)
    assert forced.code == 0, forced.stderr
    assert_restored_equal(manifest, into)
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize("threaded", [True, False], ids=["threaded-decode", "default"])
def test_jobs_2_damaged_object_fails_naming_it(
    local_repo_config, pg_db, run_cli, scratch_db, spool, monkeypatch, threaded
):
    if threaded:  # the test database is small: use the helper threads from the first byte
        monkeypatch.setattr(pipeline, "PIPELINE_AFTER", 0)
    load_awkward(pg_db)
    manifest = manifest_of(run_cli, backup(run_cli)["backup_id"])
    (obj,) = dump_item(manifest)["objects"]
    path = local_repo_config.local_root / obj["key"]
    stored = bytearray(path.read_bytes())
    _, header = read_header(io.BytesIO(bytes(stored)), obj["key"])
    stored[len(header) + 100] ^= 0x01
    path.write_bytes(bytes(stored))

    _, into = scratch_db()
    result = restore(run_cli, into, "--create", "--jobs", "2", "--spool-dir", spool)
    assert result.code == 1
    assert result.stdout == ""
    backup_id = manifest["backup_id"]
    assert result.error_lines == [
        f"drbackup: error: {obj['key']}: chunk 0 failed authentication "
        "(corrupted, tampered, moved from another key, or wrong key)",
        f"hint: backup app/{backup_id} is damaged: 'drbackup verify {backup_id}' names what, "
        "'drbackup list' shows the others",
    ]
    assert list(spool.iterdir()) == []


def test_jobs_2_preparation_failure_restores_nothing(
    local_repo_config, pg_db, pg_cluster, run_cli, spool
):
    """A role that may log in but not create databases: the check passes (the target does
    not exist, --create), CREATE DATABASE fails while the archive is being spooled."""
    load_awkward(pg_db)
    backup(run_cli)
    role = f"e2e_nocreatedb_{uuid.uuid4().hex[:8]}"
    name = f"e2e_denied_{uuid.uuid4().hex[:8]}"
    pg_cluster.execute(f"CREATE ROLE {role} LOGIN")
    try:
        result = restore(
            run_cli, pg_cluster.dsn(name, user=role), "--create", "--jobs", "2",
            "--spool-dir", spool,
        )  # fmt: skip
        assert result.code == 1
        assert result.stdout == ""
        assert result.error_lines == [
            f"drbackup: error: cannot create target database {name}: "
            "permission denied to create database"
        ]
        exists = "SELECT count(*) FROM pg_database WHERE datname = %s"
        assert pg_cluster.execute(exists, params=(name,)) == [(0,)]
        assert list(spool.iterdir()) == []
    finally:
        pg_cluster.execute(f"DROP ROLE {role}")
