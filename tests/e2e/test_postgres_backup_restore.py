"""Issue #3 end to end: ``backup postgres`` and ``restore postgres`` through the real CLI.

Every restore is proved, not trusted: the restored database's fingerprint (taken here) must
equal the one the backup took from the dump's own snapshot (``show ID --json --full``).
Tests using ``repo_config`` run on both repository kinds (local directory, S3 on moto).
"""

from __future__ import annotations

import stat
import subprocess
import threading
import uuid
from datetime import datetime

import psycopg
import pytest

from drbackup.sources.postgres.fingerprint import compare_fingerprints
from tests.e2e.conftest import fingerprint_of, load_awkward, wait_for

LOCK_TARGET_SQL = "SELECT pg_advisory_lock(hashtext('drbackup backup ' || 'app'))"
RESTORE_FAILED_HINT = (
    "hint: the target database is incomplete; fix the cause and restore again with --force"
)
MISSING_ROLE_HINT = RESTORE_FAILED_HINT + " (missing roles: add --with-globals or --no-owner)"


# --------------------------------------------------------------------------- helpers


def backup(run_cli, target: str = "app") -> dict:
    """Run ``backup postgres TARGET --json``; its summary record."""
    result = run_cli("backup", "postgres", target, "--json")
    assert result.code == 0, result.stderr
    assert result.stderr == ""
    return result.json()


def manifest_of(run_cli, backup_id: str) -> dict:
    result = run_cli("show", backup_id, "--json", "--full")
    assert result.code == 0, result.stderr
    return result.json()


def dump_item(manifest: dict) -> dict:
    (item,) = [i for i in manifest["items"] if i["type"] == "pg_dump"]
    return item


def restore(run_cli, into: str, *options: str):
    return run_cli("restore", "postgres", "app", "--into", into, *options)


def assert_restored_equal(manifest: dict, into: str) -> None:
    """The restored database holds exactly what the dump's snapshot held."""
    expected = dump_item(manifest)["meta"]["fingerprint"]
    assert expected["level"] == "full" and expected["tables"]
    diffs = compare_fingerprints(expected, fingerprint_of(into))
    assert [d.message for d in diffs] == []


def scalar(dsn: str, query: str, params=None):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(query, params).fetchone()[0]


@pytest.fixture
def scratch_db(pg_cluster):
    """A database name for restores on the session cluster; dropped after the test."""
    names: list[str] = []

    def make(suffix: str = "restored") -> tuple[str, str]:
        name = f"e2e_{suffix}_{uuid.uuid4().hex[:10]}"
        names.append(name)
        return name, pg_cluster.dsn(name)

    yield make
    for name in names:
        pg_cluster.drop_database(name)


# --------------------------------------------------------------------------- 1. round trip


def test_awkward_database_round_trip(repo_config, pg_db, run_cli, scratch_db, tmp_path):
    """backup → restore --create → fingerprint equal; verify, list --json, export readable."""
    load_awkward(pg_db)
    summary = backup(run_cli)
    backup_id = summary["backup_id"]
    manifest = manifest_of(run_cli, backup_id)
    assert [i["name"] for i in manifest["items"]] == [pg_db.name, "globals"]

    name, into = scratch_db()
    restored = restore(run_cli, into, "--create")
    assert restored.code == 0, restored.stderr
    lines = restored.stdout.splitlines()
    assert lines[0] == (
        f"using latest backup {backup_id}, recovery point {summary['recovery_point']}"
    )
    assert lines[1].startswith(f"restored {pg_db.name} into postgresql://postgres@")
    assert_restored_equal(manifest, into)

    verified = run_cli("verify", backup_id)
    assert verified.code == 0, verified.stderr
    assert verified.stdout.startswith(f"backup app/{backup_id} ok: 2 items, ")

    listed = run_cli("list", "--json")
    assert listed.code == 0, listed.stderr
    (record,) = listed.json()
    assert record["backup_id"] == backup_id and record["target"] == "app"
    point = datetime.fromisoformat(record["recovery_point"])
    started = datetime.fromisoformat(record["started_at"])
    finished = datetime.fromisoformat(record["finished_at"])
    assert started <= point <= finished

    archive = tmp_path / "app.dump"
    exported = run_cli("export", backup_id, "-o", archive)
    assert exported.code == 0, exported.stderr
    assert exported.stdout.splitlines() == [f"wrote {archive}", f"wrote {archive}.globals.sql"]
    toc = subprocess.run(
        [str(pg_db.cluster.bin_dir / "pg_restore"), "--list", str(archive)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert toc.returncode == 0, toc.stderr
    assert "TABLE DATA Ünïcode schema order items postgres" in toc.stdout
    assert "CREATE ROLE postgres;" in (tmp_path / "app.dump.globals.sql").read_text()
    # decrypted data and role password hashes: readable by their owner only, whatever umask
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.glob("app.dump*")} == {0o600}
    again = run_cli("export", backup_id, "-o", archive)
    assert (again.code, again.stderr) == (
        2,
        f"drbackup: error: {archive} exists; refusing to overwrite\n",
    )
    nowhere = tmp_path / "no-such-dir" / "app.dump"
    missing = run_cli("export", backup_id, "-o", nowhere)
    assert missing.code == 2 and missing.stderr.strip() == (
        f"drbackup: error: cannot write {nowhere}: directory {nowhere.parent} does not exist"
    )


# --------------------------------------------------------------------------- 2. under writes


class Writer(threading.Thread):
    """A pgbench-like client: each transaction adds 1 to an account and logs it in history,
    so ``sum(balance) = count(history)`` holds in every consistent snapshot."""

    def __init__(self, dsn: str, rows: int):
        super().__init__(name="e2e-writer", daemon=True)
        self.dsn, self.rows = dsn, rows
        self.stop = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.stop.is_set():
                    account = 1 + (self.commits * 7919) % self.rows
                    with conn.transaction():
                        conn.execute(
                            "UPDATE accounts SET balance = balance + 1 WHERE id = %s", (account,)
                        )
                        conn.execute(
                            "INSERT INTO history (account, delta) VALUES (%s, 1)", (account,)
                        )
                    self.commits += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def test_backup_under_concurrent_writes_is_one_snapshot(repo_config, big_db, run_cli, scratch_db):
    """Rows committed while the dump runs are in neither the dump nor its fingerprint."""
    from tests.e2e.conftest import BIG_ROWS

    repo_config.set_target("app", big_db.dsn)
    writer = Writer(big_db.dsn, BIG_ROWS)
    writer.start()
    try:
        wait_for(lambda: writer.commits >= 20 or writer.error, 30, "the writer to commit")
        summary = backup(run_cli)
        committed_by_end = writer.commits
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert writer.error is None, writer.error

    manifest = manifest_of(run_cli, summary["backup_id"])
    expected = dump_item(manifest)["meta"]["fingerprint"]
    in_dump = expected["tables"]["public.history"]["rows"]
    assert in_dump >= 20
    # The writer committed rows after the snapshot, while the backup was running.
    assert committed_by_end > in_dump
    live = compare_fingerprints(expected, fingerprint_of(big_db.dsn))
    assert {d.object for d in live} >= {"public.accounts", "public.history"}

    _, into = scratch_db()
    restored = restore(run_cli, into, "--create")
    assert restored.code == 0, restored.stderr
    assert_restored_equal(manifest, into)
    assert scalar(into, "SELECT count(*) FROM history") == in_dump
    assert scalar(into, "SELECT sum(balance) FROM accounts") == in_dump


# --------------------------------------------------------------------------- 3. point in time


def test_point_in_time_restores_the_newest_backup_at_or_before(
    repo_config, pg_db, run_cli, scratch_db
):
    pg_db.execute("CREATE TABLE markers (n integer PRIMARY KEY)")
    first = backup(run_cli)
    pg_db.execute("INSERT INTO markers VALUES (1)")
    second = backup(run_cli)
    pg_db.execute("INSERT INTO markers VALUES (2)")
    third = backup(run_cli)

    rp2 = datetime.fromisoformat(second["recovery_point"])
    rp3 = datetime.fromisoformat(third["recovery_point"])
    assert rp2 < rp3
    when = rp2 + (rp3 - rp2) / 2
    _, into = scratch_db("pit")
    restored = restore(run_cli, into, "--create", "--point-in-time", when.isoformat())
    assert restored.code == 0, restored.stderr
    gap = int((when - rp2).total_seconds())
    assert restored.stdout.splitlines()[0] == (
        f"using backup {second['backup_id']}: recovery point {second['recovery_point']}, "
        f"{gap}s before the requested {when.isoformat()}"
    )
    assert scalar(into, "SELECT array_agg(n ORDER BY n) FROM markers") == [1]

    # By id (a unique prefix): the first backup, before any marker.
    _, into = scratch_db("by_id")
    by_id = restore(run_cli, into, "--create", "--backup", first["backup_id"][:-2])
    assert by_id.code == 0, by_id.stderr
    assert by_id.stdout.splitlines()[0] == f"using backup {first['backup_id']} (by id)"
    assert scalar(into, "SELECT count(*) FROM markers") == 0

    early = datetime.fromisoformat(first["recovery_point"]).replace(year=2000)
    too_early = restore(run_cli, into, "--point-in-time", early.isoformat())
    assert too_early.code == 2
    assert too_early.error_lines == [
        f"drbackup: error: no backup of app has a recovery point at or before {early.isoformat()}",
        f"hint: the oldest restore point is {first['recovery_point']} "
        f"(backup {first['backup_id']})",
    ]

    unknown = restore(run_cli, into, "--backup", "20000101T000000Z-abcdef")
    assert unknown.code == 2
    assert unknown.error_lines == [
        "drbackup: error: unknown backup id: 20000101T000000Z-abcdef",
        "hint: 'drbackup list' shows the backups",
    ]

    # a mistyped target name: said as such, not as an unknown id or an empty repository
    bid = first["backup_id"]
    wrong = run_cli("restore", "postgres", "ap", "--into", into, "--backup", bid)
    assert (wrong.code, wrong.error_lines) == (2, [
        f"drbackup: error: backup {bid} is not a backup of target ap",
        "hint: it belongs to app: check the target name",
    ])  # fmt: skip
    empty = run_cli("restore", "postgres", "ap", "--into", into)
    assert empty.code == 2
    assert empty.error_lines[-1] == "hint: did you mean app? ('drbackup list' shows what exists)"


# --------------------------------------------------------------------------- 4. target guard


SHOP_SQL = """
CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    total numeric(10, 2) NOT NULL CHECK (total >= 0)
);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE VIEW big_spenders AS SELECT customer_id, sum(total) FROM orders GROUP BY 1;
INSERT INTO customers (email) SELECT 'c' || g || '@example.com' FROM generate_series(1, 300) AS g;
INSERT INTO orders (customer_id, total) SELECT 1 + g % 300, g / 7.0 FROM generate_series(1, 2000) AS g;
"""


def test_restore_target_must_exist_and_be_empty_unless_forced(
    local_repo_config, pg_db, run_cli, scratch_db
):
    pg_db.execute(SHOP_SQL)
    manifest = manifest_of(run_cli, backup(run_cli)["backup_id"])
    name, into = scratch_db()

    missing = restore(run_cli, into)
    assert missing.code == 1
    assert missing.error_lines == [
        f"drbackup: error: target database {name} does not exist",
        "hint: add --create to create it",
    ]

    assert restore(run_cli, into, "--create").code == 0
    # Someone works in the restored copy; a second restore must not mix into it.
    with psycopg.connect(into, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE id % 2 = 0")
        conn.execute("INSERT INTO customers (email) VALUES ('new@example.com')")
    refused = restore(run_cli, into)
    assert refused.code == 1
    assert refused.error_lines == [
        # customers, its sequence and 2 indexes; orders, its sequence and 2 indexes; the view
        f"drbackup: error: target database {name} is not empty (9 objects)",
        "hint: restore into an empty or new database (--create), "
        "or pass --force to replace it once the restore succeeded",
    ]
    assert scalar(into, "SELECT count(*) FROM orders") == 1000  # untouched

    # --force replaces it even with a session open in it, and says so
    with psycopg.connect(into, autocommit=True):
        forced = restore(run_cli, into, "--force")
    assert forced.code == 0, forced.stderr
    assert forced.stdout.splitlines()[1] == (
        f"replaced the existing database {name} (9 objects) after the restore succeeded "
        "and ended its 1 open session(s)"
    )
    assert_restored_equal(manifest, into)


def test_force_restore_over_a_partitioned_database(local_repo_config, pg_db, run_cli, scratch_db):
    load_awkward(pg_db)
    manifest = manifest_of(run_cli, backup(run_cli)["backup_id"])
    _, into = scratch_db()
    assert restore(run_cli, into, "--create").code == 0
    forced = restore(run_cli, into, "--force")
    assert forced.code == 0, forced.stderr
    assert_restored_equal(manifest, into)


# --------------------------------------------------------------------------- 5. globals


@pytest.fixture
def owned_table(pg_db):
    """Roles on the source cluster: app_owner owns a table; reporting may read it."""
    pg_db.cluster.execute(
        "CREATE ROLE app_owner NOLOGIN; CREATE ROLE reporting LOGIN CONNECTION LIMIT 7"
    )
    pg_db.execute(
        "CREATE TABLE owned (id integer PRIMARY KEY, v text);"
        "INSERT INTO owned SELECT g, 'row ' || g FROM generate_series(1, 100) AS g;"
        "ALTER TABLE owned OWNER TO app_owner;"
        "GRANT SELECT ON owned TO reporting;"
    )
    yield
    pg_db.execute("DROP OWNED BY app_owner, reporting CASCADE")
    pg_db.cluster.execute("DROP ROLE app_owner; DROP ROLE reporting")


def test_with_globals_recreates_missing_roles_on_another_server(
    local_repo_config, pg_db, owned_table, run_cli, pg_cluster_factory
):
    manifest = manifest_of(run_cli, backup(run_cli)["backup_id"])
    other = pg_cluster_factory()
    other.execute("CREATE ROLE reporting NOLOGIN CONNECTION LIMIT 1")

    plain = restore(run_cli, other.dsn("plain"), "--create")
    assert plain.code == 1
    assert plain.stdout == ""
    assert plain.error_lines == [
        f"drbackup: error: restore of {pg_db.name} into plain failed: "
        "pg_restore reported 1 error(s)",
        '  could not execute query: ERROR:  role "app_owner" does not exist'
        " | Command was: ALTER TABLE public.owned OWNER TO app_owner;",
        MISSING_ROLE_HINT,
    ]

    roles = "SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_'"
    source_roles = {r for (r,) in pg_db.cluster.execute(roles)}
    other_roles = {r for (r,) in other.execute(roles)}
    assert {"app_owner", "reporting", "postgres"} <= source_roles
    created = source_roles - other_roles
    assert "app_owner" in created and "reporting" not in created

    into = other.dsn("with_globals")
    restored = restore(run_cli, into, "--create", "--with-globals")
    assert restored.code == 0, restored.stderr
    assert restored.stdout.splitlines()[1] == (
        f"globals: {len(created)} role(s) created, "
        f"{len(source_roles & other_roles)} already present"
    )
    assert {r for (r,) in other.execute(roles)} == source_roles | other_roles
    assert scalar(into, "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'") == (
        "app_owner"
    )
    assert_restored_equal(manifest, into)
    # The role that already existed on the new server is left exactly as it was.
    assert other.execute(
        "SELECT rolcanlogin, rolconnlimit FROM pg_roles WHERE rolname = 'reporting'"
    ) == [(False, 1)]
    assert scalar(into, "SELECT has_table_privilege('reporting', 'owned', 'SELECT')") is True


# --------------------------------------------------------------------------- 6. errors ignored


def test_restore_fails_when_pg_restore_ignores_errors(
    local_repo_config, pg_db, run_cli, scratch_db
):
    """The BRIEF's trap: a CHECK calling a function that reads an unqualified table loads
    under pg_dump's empty search_path only in the source; pg_restore skips the table's
    data, prints "errors ignored on restore" and exits 1.  drbackup must fail and quote it."""
    pg_db.execute(
        "CREATE TABLE allowed_codes (code text PRIMARY KEY);"
        "INSERT INTO allowed_codes VALUES ('a'), ('b');"
        "CREATE FUNCTION code_is_allowed(c text) RETURNS boolean LANGUAGE sql STABLE"
        " AS $$ SELECT EXISTS (SELECT 1 FROM allowed_codes WHERE code = c) $$;"
        "CREATE TABLE items (id integer PRIMARY KEY, code text CHECK (code_is_allowed(code)));"
        "INSERT INTO items VALUES (1, 'a'), (2, 'b');"
    )
    backup(run_cli)
    name, into = scratch_db()
    result = restore(run_cli, into, "--create")
    assert result.code == 1
    assert result.stdout == ""
    assert result.error_lines == [
        f"drbackup: error: restore of {pg_db.name} into {name} failed: "
        "pg_restore reported 1 error(s)",
        '  COPY failed for table "items": ERROR:  relation "allowed_codes" does not exist'
        " | QUERY:   SELECT EXISTS (SELECT 1 FROM allowed_codes WHERE code = c)"
        ' | CONTEXT:  SQL function "code_is_allowed" during inlining',
        RESTORE_FAILED_HINT,
    ]
    assert scalar(into, "SELECT count(*) FROM items") == 0  # what a lax tool would call a success


# --------------------------------------------------------------------------- 7. old pg_dump


def test_pg_dump_older_than_the_server_is_refused(
    local_repo_config, pg_db, run_cli, tmp_path, monkeypatch, scratch_db
):
    fake = tmp_path / "old-client"
    fake.mkdir()
    script = fake / "pg_dump"
    script.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.0'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("DRBACKUP_PG_CLIENT_BIN", str(fake))
    major = pg_db.cluster.server_version_num // 10000

    result = run_cli("backup", "postgres", "app")
    assert result.code == 2  # the machine lacks the right client: a configuration error
    assert result.error_lines == [
        f"drbackup: error: pg_dump 9.6 is older than the server (PostgreSQL {major}): "
        f"install postgresql-client-{major}",
        "hint: a newer pg_dump works with every older server (apt.postgresql.org carries "
        "every major); or set the target's pg_bin_dir (or DRBACKUP_PG_CLIENT_BIN) to a "
        f"directory holding pg_dump {major} or newer",
    ]
    assert run_cli("list", "--json").json() == []

    monkeypatch.delenv("DRBACKUP_PG_CLIENT_BIN")
    backup(run_cli)  # the lock was released, the real client works

    # a client directory without pg_restore: refused before the target is created
    monkeypatch.setenv("DRBACKUP_PG_CLIENT_BIN", str(fake))
    name, into = scratch_db()
    refused = restore(run_cli, into, "--create")
    assert (refused.code, refused.error_lines[0]) == (
        1, f"drbackup: error: pg_restore not found in {fake}"
    )  # fmt: skip
    with psycopg.connect(pg_db.cluster.dsn("postgres")) as conn:
        assert not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()


# --------------------------------------------------------------------------- 8. one at a time


def test_one_backup_of_a_target_at_a_time(local_repo_config, pg_db, run_cli):
    with psycopg.connect(pg_db.dsn, autocommit=True) as holder:
        holder.execute(LOCK_TARGET_SQL)
        result = run_cli("backup", "postgres", "app")
        assert result.code == 1
        assert result.error_lines == [
            "drbackup: error: another backup of target app is running",
            "hint: wait for it to finish; backups of one target never overlap",
        ]
    assert run_cli("list", "--json").json() == []
    backup(run_cli)


# --------------------------------------------------------------------------- 9. kill, damage


def _backup_sessions_gone(db) -> bool:
    rows = db.cluster.execute(
        "SELECT (SELECT count(*) FROM pg_stat_activity"
        "        WHERE datname = %s AND pid <> pg_backend_pid()),"
        " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory')",
        dbname=db.name,
        params=(db.name,),
    )
    return rows == [(0, 0)]


def test_backup_killed_mid_dump_leaves_no_backup(repo_config, big_db, run_cli, spawn_cli):
    """SIGKILL while pg_dump streams the big table: no manifest, nothing listed, the lock
    goes with the process, and the next backup of the target succeeds and verifies."""
    repo_config.set_target("app", big_db.dsn)
    copying = (
        "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND application_name = 'pg_dump'"
        " AND state = 'active' AND query LIKE 'COPY public.accounts %%'"
    )
    with psycopg.connect(big_db.cluster.dsn(), autocommit=True) as watcher:
        proc = spawn_cli("backup", "postgres", "app")
        wait_for(
            lambda: watcher.execute(copying, (big_db.name,)).fetchone() or proc.poll() is not None,
            60,
            "pg_dump's COPY of the big table",
            interval=0.005,
        )
        proc.kill()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -9, f"the backup ended before it was killed: {stderr}"
    # The orphaned pg_dump dies on its broken pipe; the server drops the sessions and the lock.
    wait_for(lambda: _backup_sessions_gone(big_db), 30, "the killed backup's sessions to end")

    listed = run_cli("list", "--json")
    assert listed.code == 0, listed.stderr
    assert listed.json() == []

    summary = backup(run_cli)
    verified = run_cli("verify", summary["backup_id"])
    assert verified.code == 0, verified.stderr
    assert [r["backup_id"] for r in run_cli("list", "--json").json()] == [summary["backup_id"]]


def test_damaged_object_fails_verify_and_restore(local_repo_config, pg_db, run_cli, scratch_db):
    pg_db.execute(
        "CREATE TABLE t (id integer PRIMARY KEY, v text);"
        "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) AS g;"
    )
    backup_id = backup(run_cli)["backup_id"]
    key = dump_item(manifest_of(run_cli, backup_id))["objects"][0]["key"]
    path = local_repo_config.local_root / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    verified = run_cli("verify", backup_id)
    assert verified.code == 3
    assert verified.stdout == ""
    lines = verified.error_lines
    assert lines[0] == f"drbackup: error: backup app/{backup_id} is damaged: 1 problem(s)"
    assert lines[1].startswith(f"  {pg_db.name}: {key}: chunk ")
    assert "failed authentication" in lines[1]
    assert lines[2] == "hint: restore from another backup; 'drbackup list' shows them"

    name, into = scratch_db()
    restored = restore(run_cli, into, "--create")
    assert restored.code == 1
    assert restored.stdout == ""
    assert restored.error_lines[0].startswith(f"drbackup: error: {key}: chunk ")
    assert "failed authentication" in restored.error_lines[0]
    # streamed: pg_restore loaded what came before the damage; the operator is told
    assert restored.error_lines[-1] == (
        f"hint: the target database {name} is incomplete: restore an older backup "
        f"(--backup ID) with --force; backup app/{backup_id} is damaged: "
        f"'drbackup verify {backup_id}' names what, 'drbackup list' shows the others"
    )
