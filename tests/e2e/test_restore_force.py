"""``restore postgres --force`` never destroys the target before the backup is restored.

Issue 14, item 3.  --force restores into a new database with a generated name and swaps
names only after pg_restore succeeded; a damaged or missing object, or pg_restore's own
errors, leave the target exactly as it was (its data, its open sessions) and no database of
ours behind.  A restore in progress marks its database, so a killed one is named by the
next restore, which also removes what a killed --force left.  Every database and session is
observed on the real server.
"""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest

from drbackup.sources.postgres.restore_marker import parse_marker
from drbackup.sources.postgres.target import RESTORE_LOCK_KEY
from tests.e2e.conftest import wait_for
from tests.e2e.test_postgres_backup_restore import (
    SHOP_SQL,
    assert_restored_equal,
    backup,
    dump_item,
    manifest_of,
    restore,
    scalar,
)

OURS = (
    "SELECT datname FROM pg_database WHERE datname LIKE 'drbackup\\_restore\\_%%'"
    " OR datname LIKE %s ORDER BY datname"
)


@pytest.fixture
def target_db(pg_cluster):
    """``target_db()``: a new database name and its dsn; dropped (with anything named after
    it by a restore) after the test."""
    names: list[str] = []

    def make() -> tuple[str, str]:
        names.append(f"e2e_force_{uuid.uuid4().hex[:10]}")
        return names[-1], pg_cluster.dsn(names[-1])

    yield make
    for name in names:
        for (left,) in pg_cluster.execute(OURS, params=(name + "\\_replaced\\_%",)):
            pg_cluster.drop_database(left)
        pg_cluster.drop_database(name)


def ours(pg_cluster, name: str) -> list[str]:
    """Databases a restore into ``name`` made: new ones, and replaced ones."""
    return [n for (n,) in pg_cluster.execute(OURS, params=(name + "\\_replaced\\_%",))]


def comment_of(pg_cluster, name: str) -> str | None:
    query = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s"
    rows = pg_cluster.execute(query, params=(name,))
    return rows[0][0] if rows else None


def shop_in_use(run_cli, pg_db, make_target) -> tuple[dict, str, str]:
    """A backup of the shop database, restored into a target that then diverged from it
    (1000 of 2000 orders left): (manifest, target name, dsn)."""
    pg_db.execute(SHOP_SQL)
    manifest = manifest_of(run_cli, backup(run_cli)["backup_id"])
    name, into = make_target()
    created = restore(run_cli, into, "--create")
    assert created.code == 0, created.stderr
    with psycopg.connect(into, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE id % 2 = 0")
    return manifest, name, into


# --------------------------------------------------------------------------- faults


def corrupt(local_root, key: str) -> None:
    path = local_root / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("fault", ["corrupted", "missing"])
def test_force_with_a_damaged_backup_leaves_the_target_intact(
    local_repo_config, pg_db, pg_cluster, run_cli, target_db, fault, jobs, tmp_path
):
    manifest, name, into = shop_in_use(run_cli, pg_db, target_db)
    key = dump_item(manifest)["objects"][0]["key"]
    if fault == "corrupted":
        corrupt(local_repo_config.local_root, key)
    else:
        (local_repo_config.local_root / key).unlink()

    with psycopg.connect(into, autocommit=True) as session:  # someone works in the target
        result = restore(run_cli, into, "--force", "--jobs", jobs, "--spool-dir", tmp_path)
        assert session.execute("SELECT count(*) FROM orders").fetchone()[0] == 1000
    assert result.code == 1
    assert result.stdout == ""
    first, hint = result.error_lines[0], result.error_lines[-1]
    if fault == "corrupted":
        assert first.startswith(f"drbackup: error: {key}: chunk ")
        assert "failed authentication" in first
    else:
        assert first == f"drbackup: error: object not found: {key}"
    assert hint.startswith(f"hint: the target database {name} was not changed")
    assert scalar(into, "SELECT count(*) FROM orders") == 1000  # its data, as it was
    assert ours(pg_cluster, name) == []  # the partial new database was dropped
    assert comment_of(pg_cluster, name) is None  # and the target carries no marker


def test_force_when_pg_restore_reports_errors_leaves_the_target_intact(
    local_repo_config, pg_db, pg_cluster, run_cli, target_db
):
    """The BRIEF's trap (a CHECK reading an unqualified table) under --force."""
    pg_db.execute(
        "CREATE TABLE allowed_codes (code text PRIMARY KEY);"
        "INSERT INTO allowed_codes VALUES ('a'), ('b');"
        "CREATE FUNCTION code_is_allowed(c text) RETURNS boolean LANGUAGE sql STABLE"
        " AS $$ SELECT EXISTS (SELECT 1 FROM allowed_codes WHERE code = c) $$;"
        "CREATE TABLE items (id integer PRIMARY KEY, code text CHECK (code_is_allowed(code)));"
        "INSERT INTO items VALUES (1, 'a'), (2, 'b');"
    )
    backup(run_cli)
    name, into = target_db()
    pg_cluster.create_database(name)
    pg_cluster.execute("CREATE TABLE precious (v text); INSERT INTO precious VALUES ('x')", name)

    result = restore(run_cli, into, "--force")
    assert result.code == 1
    assert result.error_lines[0] == (
        f"drbackup: error: restore of {pg_db.name} into {name} failed: "
        "pg_restore reported 1 error(s)"
    )
    assert (
        result.error_lines[-1] == f"hint: the target database {name} was not changed; fix the cause"
    )
    assert scalar(into, "SELECT v FROM precious") == "x"
    assert ours(pg_cluster, name) == []


# --------------------------------------------------------------------------- success


def test_force_replaces_the_data_keeps_the_comment_and_drops_the_old(
    local_repo_config, pg_db, pg_cluster, run_cli, target_db, tmp_path
):
    """Spooled (--jobs 2) and with --with-globals: the new database is prepared (created,
    marked, roles checked) while the archive is spooled, and swapped in after."""
    manifest, name, into = shop_in_use(run_cli, pg_db, target_db)
    pg_cluster.execute(f"COMMENT ON DATABASE {name} IS 'the shop, restored for audits'")

    forced = restore(
        run_cli, into, "--force", "--with-globals", "--jobs", "2", "--spool-dir", tmp_path,
        "--json",
    )  # fmt: skip
    assert forced.code == 0, forced.stderr
    record = forced.json()
    assert record["roles_created"] == []  # the same server: every role is there
    assert record["replaced"] == (
        f"replaced the existing database {name} (9 objects) after the restore succeeded"
    )
    assert (record["kept_old"], record["removed"], record["warnings"]) == (None, [], [])
    assert_restored_equal(manifest, into)
    assert scalar(into, "SELECT count(*) FROM orders") == 2000
    assert ours(pg_cluster, name) == []  # the previous database is gone
    assert comment_of(pg_cluster, name) == "the shop, restored for audits"


def test_keep_old_keeps_the_previous_database_and_says_its_name(
    local_repo_config, pg_db, pg_cluster, run_cli, target_db
):
    manifest, name, into = shop_in_use(run_cli, pg_db, target_db)

    kept = restore(run_cli, into, "--force", "--keep-old")
    assert kept.code == 0, kept.stderr
    lines = kept.stdout.splitlines()
    assert lines[1] == (
        f"replaced the existing database {name} (9 objects) after the restore succeeded"
    )
    match = re.fullmatch(r"the previous database is kept as (\S+)", lines[2])
    assert match, lines
    old = match.group(1)
    assert re.fullmatch(re.escape(name) + r"_replaced_\d{8}t\d{6}z_[0-9a-f]{6}", old)
    assert_restored_equal(manifest, into)
    assert scalar(pg_cluster.dsn(old), "SELECT count(*) FROM orders") == 1000  # its old data
    marker = parse_marker(comment_of(pg_cluster, old))
    assert (marker.role, marker.target, marker.keep) == ("old", name, True)

    # A kept database is never taken for a leftover: the next --force leaves it alone.
    again = restore(run_cli, into, "--force")
    assert again.code == 0, again.stderr
    assert "removed" not in again.stdout
    assert ours(pg_cluster, name) == [old]

    # --quiet says nothing on success but where it kept a database the user must drop.
    quiet = restore(run_cli, into, "--force", "--keep-old", "--quiet")
    assert (quiet.code, quiet.stdout) == (0, ""), quiet.stderr
    (note,) = quiet.error_lines
    kept_quietly = note.removeprefix("drbackup: note: the previous database is kept as ")
    assert set(ours(pg_cluster, name)) == {old, kept_quietly}
    assert scalar(pg_cluster.dsn(old), "SELECT count(*) FROM orders") == 1000

    usage = restore(run_cli, into, "--keep-old")
    assert usage.code == 2
    assert usage.error_lines == [
        "drbackup: error: --keep-old goes with --force",
        "hint: add --force, or drop --keep-old",
    ]


def test_a_second_restore_into_the_same_database_is_refused_while_one_runs(
    local_repo_config, pg_db, pg_cluster, run_cli, target_db
):
    pg_db.execute(SHOP_SQL)
    backup(run_cli)
    name, into = target_db()
    with pg_cluster.connect() as holder:  # what a running restore holds
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (RESTORE_LOCK_KEY, name))
        refused = restore(run_cli, into, "--create")
    assert refused.code == 1
    assert refused.error_lines == [
        f"drbackup: error: another restore into database {name} is running",
        "hint: wait for it to end: the server releases its lock when it exits, however it ends",
    ]
    assert pg_cluster.execute(
        "SELECT count(*) FROM pg_database WHERE datname = %s", params=(name,)
    ) == [(0,)]


# --------------------------------------------------------------------------- kill -9


RESTORING = (
    "SELECT datname FROM pg_stat_activity WHERE application_name = 'pg_restore'"
    " AND state = 'active' AND query LIKE 'COPY public.accounts %%' AND datname = %s"
)


def kill_while_copying(spawn_cli, cluster, database_of_restore, *args) -> None:
    """Start ``restore postgres app *args``, SIGKILL it while pg_restore loads the big
    table into the database ``database_of_restore()`` names, and wait for its sessions."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as watcher:
        proc = spawn_cli("restore", "postgres", "app", *args)

        def copying():
            db = database_of_restore()
            return (db and watcher.execute(RESTORING, (db,)).fetchone()) or proc.poll() is not None

        wait_for(copying, 120, "pg_restore's COPY of the big table", interval=0.005)
        proc.kill()
        _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == -9, f"the restore ended before it was killed: {stderr}"
        # The orphaned pg_restore dies on its closed stdin; the server ends its session.
        loading = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pg_restore'"
        wait_for(lambda: watcher.execute(loading).fetchone()[0] == 0, 60, "pg_restore to end")


def test_killed_force_restore_leaves_the_target_and_the_next_one_removes_the_leftover(
    local_repo_config, big_db, pg_cluster, run_cli, spawn_cli, target_db
):
    local_repo_config.set_target("app", big_db.dsn)
    manifest = manifest_of(run_cli, backup(run_cli)["backup_id"])
    name, into = target_db()
    pg_cluster.create_database(name)
    pg_cluster.execute("CREATE TABLE precious (v text); INSERT INTO precious VALUES ('x')", name)

    def new_database():
        found = [n for n in ours(pg_cluster, name) if n.startswith("drbackup_restore_")]
        return found[0] if found else None

    kill_while_copying(spawn_cli, pg_cluster, new_database, "--into", into, "--force")
    assert scalar(into, "SELECT v FROM precious") == "x"  # the target is untouched
    left = new_database()
    marker = parse_marker(comment_of(pg_cluster, left))
    assert (marker.role, marker.target) == ("new", name)
    assert marker.backup == f"app/{manifest['backup_id']}"

    refused = restore(run_cli, into)  # without --force: the target is not empty
    assert refused.code == 1
    assert (
        refused.error_lines[0] == f"drbackup: error: target database {name} is not empty (1 object)"
    )

    forced = restore(run_cli, into, "--force")
    assert forced.code == 0, forced.stderr
    assert forced.stdout.splitlines()[1] == (
        f"removed the partial restore {left} ({marker.describe()}), left by an interrupted restore"
    )
    assert ours(pg_cluster, name) == []
    assert_restored_equal(manifest, into)


def test_killed_restore_in_place_is_named_as_partial_by_the_next(
    local_repo_config, big_db, pg_cluster, run_cli, spawn_cli, target_db
):
    local_repo_config.set_target("app", big_db.dsn)
    manifest = manifest_of(run_cli, backup(run_cli)["backup_id"])
    name, into = target_db()

    kill_while_copying(spawn_cli, pg_cluster, lambda: name, "--into", into, "--create")
    marker = parse_marker(comment_of(pg_cluster, name))
    assert (marker.role, marker.target) == ("target", name)
    assert marker.backup == f"app/{manifest['backup_id']}"

    again = restore(run_cli, into)  # before issue 14: "is not empty (N objects)"
    assert again.code == 1
    assert again.error_lines == [
        f"drbackup: error: target database {name} holds a partial restore by drbackup "
        f"({marker.describe()}) that did not finish",
        "hint: restore again with --force to replace it (swapped in once the new restore "
        f'succeeded), or drop it: DROP DATABASE "{name}"',
    ]

    forced = restore(run_cli, into, "--force")
    assert forced.code == 0, forced.stderr
    assert forced.stdout.splitlines()[1] == (
        f"replaced the partial restore in {name} ({marker.describe()}) after the restore succeeded"
    )
    assert_restored_equal(manifest, into)
    assert comment_of(pg_cluster, name) is None  # no marker once a restore succeeded
    assert ours(pg_cluster, name) == []
