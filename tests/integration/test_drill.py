"""Drills against real PostgreSQL: a correct restore passes, and each way a restore can lie
fails the drill with a message naming the cause.

Backups are taken with the real backup action into a local repository (the repository kind
plays no part here; tests/e2e/test_drill_cli.py runs drills over both kinds).  The scratch is
the session cluster (the target's own server, opted in with drill.scratch_on_source_server)
unless a test says otherwise.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from drbackup.actions.backup_postgres import backup_target
from drbackup.actions.context import AppContext
from drbackup.actions.drill import cleanup_scratch, drill_history, run_drill
from drbackup.catalog.drills import list_drills
from drbackup.codec import keys
from drbackup.config import load_config
from drbackup.drill.checks import check_foreign_keys
from drbackup.drill.early import EarlyHasher
from drbackup.drill.plan import Assertion, DrillPlan, ScratchPlan
from drbackup.drill.runner import DatabaseUnderTest, verify_database
from drbackup.drill.scratch import ScratchServer, scratch_marker
from drbackup.drill.signing import load_signing_key, public_bytes, verify_report
from drbackup.errors import ConfigError, UsageError
from drbackup.sources.postgres.fingerprint import take_fingerprint
from tests.e2e.conftest import load_awkward, make_repo_config, wait_for

PREFIX = "drbackup_drill_"

SHOP_SQL = """
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    total numeric(10, 2) NOT NULL
);
CREATE INDEX orders_customer ON orders (customer_id);
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 20) AS g;
INSERT INTO orders (customer_id, total) SELECT 1 + g % 20, g * 1.5 FROM generate_series(1, 200) AS g;
"""

# The trap from the field: a CHECK constraint calling a SQL function that reads an
# unqualified table.  pg_restore runs with an empty search_path, the function cannot see
# `codes`, COPY into `items` fails, pg_restore says "errors ignored on restore", exits 1,
# and `items` stays empty.
CHECK_TRAP_SQL = """
CREATE TABLE codes (code text PRIMARY KEY);
INSERT INTO codes VALUES ('a'), ('b');
CREATE FUNCTION valid_code(c text) RETURNS boolean LANGUAGE sql
    AS $$ SELECT EXISTS (SELECT 1 FROM codes WHERE code = c) $$;
CREATE TABLE items (id integer PRIMARY KEY, code text CHECK (valid_code(code)));
INSERT INTO items VALUES (1, 'a'), (2, 'b'), (3, 'a');
"""


@pytest.fixture
def setup(request, tmp_path, monkeypatch, pg_db):
    """A local repository, target ``app`` = ``pg_db``, a drill signing key; returns a
    namespace with ``app`` (AppContext), ``db``, ``cfg`` and ``key_file``."""
    cfg = make_repo_config("local", request, tmp_path, monkeypatch, pg_db.dsn)
    key_file = tmp_path / "drill-signing.key"
    key_file.write_text(keys.b64(os.urandom(32)) + "\n")
    cfg.data["drill"] = {"signing_key_file": str(key_file), "scratch_on_source_server": True}
    cfg.write()
    app = AppContext(load_config(str(cfg.path)))
    return type("Setup", (), {"app": app, "db": pg_db, "cfg": cfg, "key_file": key_file})


def reload(setup, **drill_settings):
    """``setup.app`` with the config's ``drill`` section changed."""
    setup.cfg.data["drill"].update(drill_settings)
    setup.cfg.data["drill"] = {k: v for k, v in setup.cfg.data["drill"].items() if v is not None}
    setup.cfg.write()
    setup.app = AppContext(load_config(str(setup.cfg.path)))
    return setup


def scratch_databases(cluster) -> list[str]:
    rows = cluster.execute(
        "SELECT datname FROM pg_database WHERE left(datname, %s) = %s ORDER BY 1",
        params=(len(PREFIX), PREFIX),
    )
    return [r[0] for r in rows]


def drill(setup, **plan_fields):
    after_restore = plan_fields.pop("after_restore", None)
    plan = DrillPlan(targets=["app"], name="test", **plan_fields)
    result = run_drill(setup.app, plan, after_restore=after_restore)
    assert scratch_databases(setup.db.cluster) == [] or plan.keep
    return result


def checks_by_name(result) -> dict[str, dict]:
    return {c["name"]: c for c in result.report["checks"]}


def failed(result) -> dict[str, str]:
    return {c["name"]: c["summary"] for c in result.report["checks"] if c["status"] == "fail"}


# -- passing drills ------------------------------------------------------------------------


def test_drill_of_the_awkward_database_passes(setup):
    load_awkward(setup.db)
    manifest = backup_target(setup.app, "app")
    result = drill(setup)
    report = result.report
    checks = checks_by_name(result)
    assert report["status"] == "warn", failed(result)
    assert [c["name"] for c in report["checks"]] == [
        "restore",
        "schema",
        "tables",
        "foreign_keys",
        "sequences",
        "amcheck",
        "rto",
        "rpo",
    ]
    assert {n for n, c in checks.items() if c["status"] != "pass"} == {"foreign_keys"}
    # awkward.sql's NOT VALID key with one orphan: a pre-existing inconsistency, a warning
    assert checks["foreign_keys"]["summary"] == (
        "1 pre-existing inconsistency: foreign key reviews_customer_fk on Ünïcode schema.reviews "
        "was NOT VALID in the source (1 orphan rows)"
    )
    assert checks["tables"]["summary"].startswith("row counts and content hashes of 17 tables")
    assert checks["amcheck"]["evidence"]["btree_indexes"] > 10
    target = report["targets"][0]
    assert target["backup_id"] == manifest.backup_id
    assert target["timings"]["total_s"] > 0 and target["timings"]["data_s"] > 0
    # signed, stored in the repository and the catalog
    public = public_bytes(load_signing_key(setup.key_file))
    assert verify_report(report, public)
    key = f"reports/app/{report['drill_id']}"
    assert result.stored == [key]
    assert setup.app.repository().get_document(key) == report
    assert [d["drill_id"] for d in list_drills(setup.app.catalog, "app")] == [report["drill_id"]]
    assert [r.kind for r in setup.app.catalog.runs(target="app")] == ["backup", "drill"]


def test_drill_passes_for_a_backup_taken_under_pgbench_writes(setup):
    bench = str(setup.db.cluster.bin_dir / "pgbench")
    subprocess.run([bench, "-i", "-q", "-s", "2", setup.db.dsn], check=True, capture_output=True)
    writer = subprocess.Popen(
        [bench, "-c", "2", "-T", "60", "-n", setup.db.dsn],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)  # let pgbench get going: the point is writes DURING the dump
        manifest = backup_target(setup.app, "app")
        counts = setup.db.execute("SELECT count(*) FROM pgbench_history")[0][0]
    finally:
        writer.terminate()
        writer.wait()
    assert counts > 0
    fingerprint = manifest.items[0].meta["fingerprint"]
    assert fingerprint["tables"]["public.pgbench_history"]["rows"] > 0
    result = drill(setup)
    assert result.report["status"] == "pass", failed(result)


@pytest.fixture
def cluster_base():
    """A short directory the server's user can reach (pytest's tmp_path is private to root)."""
    base = Path(tempfile.mkdtemp(prefix="drb-drill-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_a_logical_backup_of_a_replica_level_source_says_why_it_has_no_lsn(setup):
    setup.db.execute(SHOP_SQL)
    manifest = backup_target(setup.app, "app")
    item = next(i for i in manifest.items if i.type == "pg_dump")
    level = setup.db.cluster.execute("SHOW wal_level")[0][0]
    assert level != "logical"
    assert item.meta["snapshot_note"] == f"wal_level is {level}, not logical"
    assert "snapshot_lsn" not in item.meta  # a drill cannot restore to it exactly


def test_drill_into_an_ephemeral_cluster(setup, cluster_base):
    setup.db.execute(SHOP_SQL)
    backup_target(setup.app, "app")
    base = cluster_base
    result = drill(setup, scratch=ScratchPlan(ephemeral=True, base_dir=base))
    assert result.report["status"] == "pass", failed(result)
    assert result.report["targets"][0]["scratch"]["kind"] == "ephemeral"
    assert list(base.iterdir()) == []  # cluster stopped and removed


# -- failing drills: each names its cause ----------------------------------------------------


def test_check_constraint_trap_fails_the_restore_and_names_the_empty_table(setup):
    setup.db.execute(CHECK_TRAP_SQL)
    backup_target(setup.app, "app")
    result = drill(setup)
    problems = failed(result)
    assert result.failed
    assert problems["restore"].startswith("pg_restore reported 1 error(s): ")
    assert 'relation "codes" does not exist' in problems["restore"]
    assert problems["tables"] == (
        "1 table difference: row count of table public.items differs: expected 3, actual 0"
    )
    assert "rto" in problems  # a failed restore never meets the objective


def _data_object(setup) -> str:
    manifest = setup.app.repository().load_manifest(setup.app.repository().list_refs("app")[-1])
    return next(i for i in manifest.items if i.type == "pg_dump").objects[0].key


def test_a_corrupted_backup_object_fails_naming_it(setup):
    setup.db.execute(SHOP_SQL)
    backup_target(setup.app, "app")
    key = _data_object(setup)
    storage = setup.app.storage
    data = bytearray(storage.get(key))
    data[len(data) // 2] ^= 0x40
    storage.put(key, io.BytesIO(bytes(data)))
    problems = failed(drill(setup))
    assert problems["restore"].startswith(f"backup object corrupted: {key}")


def test_a_missing_backup_object_fails_naming_it(setup):
    setup.db.execute(SHOP_SQL)
    backup_target(setup.app, "app")
    key = _data_object(setup)
    setup.app.storage.delete(key)
    problems = failed(drill(setup))
    assert problems["restore"] == f"backup object missing: {key}"


def test_a_failing_custom_assertion_fails_naming_it(setup):
    setup.db.execute(SHOP_SQL)
    backup_target(setup.app, "app")
    assertions = [
        Assertion(name="twenty customers", sql="SELECT count(*) FROM customers", expect=20),
        Assertion(name="ten customers", sql="SELECT count(*) FROM customers", expect=10),
        Assertion(name="bad sql", sql="SELECT * FROM nowhere", expect=[]),
        Assertion(
            name="first two",
            sql="SELECT id, name FROM customers ORDER BY id LIMIT 2",
            expect=[[1, "customer 1"], [2, "customer 2"]],
        ),
    ]
    result = drill(setup, assertions=assertions)
    assert failed(result) == {
        "assertion:ten customers": "assertion 'ten customers' failed: expected 10, got 20",
        "assertion:bad sql": "assertion 'bad sql' failed: error: relation \"nowhere\" does not exist",
    }
    assert checks_by_name(result)["assertion:first two"]["status"] == "pass"


def test_an_exceeded_rto_fails_with_the_phases(setup):
    setup.db.execute(SHOP_SQL)
    backup_target(setup.app, "app")
    problems = failed(drill(setup, rto=timedelta(milliseconds=1)))
    assert list(problems) == ["rto"]
    assert problems["rto"].startswith("restore and verification took ")
    assert ", over the objective of 1ms (fetch/decrypt " in problems["rto"]


def _orphan_customers(dsn: str) -> None:
    # Delete referenced rows behind the foreign key's back (replica role skips FK triggers).
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("DELETE FROM customers WHERE id IN (1, 2)")


def test_referenced_rows_gone_in_the_restore_fail_the_foreign_key_check(setup):
    setup.db.execute(SHOP_SQL)
    backup_target(setup.app, "app")
    problems = failed(drill(setup, after_restore=_orphan_customers))
    assert problems["foreign_keys"] == (
        "1 foreign key problem: foreign key orders_customer_id_fkey on public.orders has 20 "
        "orphan rows (referenced rows missing in public.customers)"
    )
    assert problems["tables"].startswith("1 table difference: row count of table public.customers")


def test_orphan_check_on_a_real_database(pg_db):
    pg_db.execute(SHOP_SQL)
    with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
        expected = take_fingerprint(conn, "full")
        assert check_foreign_keys(conn, expected, expected).status == "pass"
        _orphan_customers(pg_db.dsn)
        actual = take_fingerprint(conn, "full")
        result = check_foreign_keys(conn, expected, actual)
        conn.execute("ALTER TABLE orders DROP CONSTRAINT orders_customer_id_fkey")
        gone = check_foreign_keys(conn, expected, take_fingerprint(conn, "full"))
    assert result.status == "fail"
    assert result.evidence["foreign_keys"][0]["orphans"] == 20
    assert gone.summary == (
        "1 foreign key problem: foreign key orders_customer_id_fkey on public.orders is missing "
        "and has 20 orphan rows (referenced rows missing in public.customers)"
    )


# -- scratch hygiene -------------------------------------------------------------------------


def test_the_prefix_guard_refuses_other_databases(pg_cluster, pg_db):
    server = ScratchServer(pg_cluster.dsn(), None, PREFIX).open()
    try:
        with pytest.raises(UsageError, match=f"refusing to touch database '{pg_db.name}'"):
            server.drop(pg_db.name)
        with pytest.raises(UsageError, match="refusing to touch database 'postgres'"):
            server.mark_kept("postgres")
        assert pg_cluster.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", params=(pg_db.name,)
        )
        # a leftover held by a running drill (its lock is taken) is left alone
        held = PREFIX + "held_20261123t020000z_aaaaaa"
        holder = ScratchServer(pg_cluster.dsn(), None, PREFIX).open()
        holder.create(held, "20261123T020000Z-aaaaaa")
        assert holder.claim(held)
        assert server.remove_leftovers() == []
        holder.close()  # the drill "dies": its lock goes with its connection (soon)
        dropped = wait_for(server.remove_leftovers, 10, "the lock of a closed session to go")
        assert dropped == [held]
        assert scratch_databases(pg_cluster) == []
    finally:
        server.close()


def test_keep_leaves_the_scratch_until_cleanup_kept(setup):
    setup.db.execute(SHOP_SQL)
    backup_target(setup.app, "app")
    result = drill(setup, keep=True)
    kept = scratch_databases(setup.db.cluster)
    assert len(kept) == 1 and result.report["targets"][0]["scratch"]["kept"]
    (line,) = result.kept
    assert line.startswith(f"kept scratch database {kept[0]}: psql '")
    with psycopg.connect(line.split("'")[1]) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 200
    comment = setup.db.cluster.execute(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
        params=(kept[0],),
    )
    assert comment == [(scratch_marker(result.report["drill_id"], kept[0], kept=True),)]
    again = run_drill(setup.app, DrillPlan(targets=["app"]))  # leaves the kept one alone
    assert again.report["status"] == "pass"
    assert scratch_databases(setup.db.cluster) == kept
    removed = cleanup_scratch(setup.app, include_kept=True).removed
    assert removed == [f"database {kept[0]} on {removed[0].split(' on ', 1)[1]}"]
    assert scratch_databases(setup.db.cluster) == []


def databases(cluster) -> set[str]:
    return {r[0] for r in cluster.execute("SELECT datname FROM pg_database")}


def test_a_drill_drops_only_what_it_created_and_marked(setup):
    # With scratch_prefix "vic" a drill once dropped "victim": the prefix proved nothing.
    cluster = setup.db.cluster
    reload(setup, scratch_prefix="vic")
    for name in ("victim", "vicapp_20200101t000000z_abcdef"):  # a user's; an unmarked lookalike
        cluster.create_database(name)
    cluster.execute("CREATE TABLE precious (x int)", dbname="victim")
    setup.db.execute(SHOP_SQL + f"COMMENT ON DATABASE {setup.db.name} IS 'the source';")
    backup_target(setup.app, "app")
    try:
        result = run_drill(setup.app, DrillPlan(targets=["app"], name="test"))
        assert result.report["status"] == "pass", failed(result)
        # its own scratch (restored from a source with a comment of its own) is gone, and
        # nothing else: the restore kept the marker, the guard refused the rest
        (scratch,) = result.report["targets"][0]["databases"]
        assert scratch["scratch_database"].startswith("vicapp_")
        assert scratch["scratch_database"] not in databases(cluster)
        assert {"victim", "vicapp_20200101t000000z_abcdef"} <= databases(cluster)
        assert cluster.execute("SELECT count(*) FROM precious", dbname="victim") == [(0,)]
        left = cleanup_scratch(setup.app)
        assert left.removed == []
        assert [line.split(" on ")[0] for line in left.left] == [
            "database vicapp_20200101t000000z_abcdef"
        ]
    finally:
        for name in ("victim", "vicapp_20200101t000000z_abcdef"):
            cluster.execute(f"DROP DATABASE IF EXISTS {name}")


def test_drill_cleanup_drops_marked_leftovers_only(setup):
    # With the default prefix, 'drill cleanup' once dropped a user database
    # drbackup_drill_important.  Now: a leftover of a killed drill (name and marker) goes;
    # a renamed scratch, a user's database and a lookalike without a marker stay.
    cluster = setup.db.cluster
    server = ScratchServer(cluster.dsn(), None, PREFIX).open()
    dead = [f"{PREFIX}app_20200101t000000z_{r}" for r in ("aaaaaa", "bbbbbb")]
    try:
        for name in dead:
            server.create(name, f"20200101T000000Z-{name[-6:]}")
        renamed = f"{PREFIX}app_20200101t000000z_cccccc"
        cluster.execute(f"ALTER DATABASE {dead[1]} RENAME TO {renamed}")
        for name in (f"{PREFIX}important", f"{PREFIX}app_20200101t000000z_dddddd"):
            cluster.create_database(name)
        removed = cleanup_scratch(setup.app)
        assert [line.split(" on ")[0] for line in removed.removed] == [f"database {dead[0]}"]
        assert [line.split(" on ")[0] for line in removed.left] == [
            f"database {renamed}",
            f"database {PREFIX}app_20200101t000000z_dddddd",
        ]
        assert scratch_databases(cluster) == sorted(
            [f"{PREFIX}important", renamed, f"{PREFIX}app_20200101t000000z_dddddd"]
        )
        with pytest.raises(UsageError, match="does not carry the marker"):
            server.drop(f"{PREFIX}app_20200101t000000z_dddddd")
    finally:
        server.close()
        for name in scratch_databases(cluster):
            cluster.execute(f"DROP DATABASE IF EXISTS {name}")


# -- where a drill restores by default --------------------------------------------------------


def test_without_a_scratch_server_a_drill_restores_into_a_private_cluster(setup):
    setup.db.execute(SHOP_SQL)
    backup_target(setup.app, "app")
    reload(setup, scratch_on_source_server=None)  # the default: no opt-in
    before = databases(setup.db.cluster)
    seen = []
    result = run_drill(
        setup.app,
        DrillPlan(targets=["app"], name="test"),
        after_restore=lambda dsn: seen.append(databases(setup.db.cluster)),
    )
    assert result.report["status"] == "pass", failed(result)
    scratch = result.report["targets"][0]["scratch"]
    assert scratch["kind"] == "ephemeral" and scratch["server"].startswith("postgresql://")
    assert seen == [before]  # nothing was created on the source's server, even mid-drill


def test_without_a_scratch_server_or_server_binaries_the_drill_is_refused(
    setup, tmp_path, monkeypatch
):
    backup_target(setup.app, "app")
    reload(setup, scratch_on_source_server=None)
    monkeypatch.setenv("DRBACKUP_PG_BIN", str(tmp_path))  # no initdb, no postgres here
    before = databases(setup.db.cluster)
    with pytest.raises(ConfigError) as info:
        run_drill(setup.app, DrillPlan(targets=["app"], name="test"))
    assert info.value.message == (
        "no scratch server for the drill of app: drill.scratch_dsn is not set and no "
        "postgresql server binaries were found here to start a private cluster"
    )
    assert info.value.hint.startswith("set drill.scratch_dsn to a server where drills may")
    assert databases(setup.db.cluster) == before


def test_history_comes_from_the_repository_even_without_the_catalog(setup, tmp_path):
    setup.db.execute(SHOP_SQL)
    backup_target(setup.app, "app")
    first = drill(setup)
    second = drill(setup, rto=timedelta(milliseconds=1))
    setup.cfg.data["catalog"] = f"sqlite:///{tmp_path / 'new-catalog.db'}"  # catalog lost
    setup.cfg.write()
    fresh = AppContext(load_config(str(setup.cfg.path)))
    history = drill_history(fresh, "app")
    assert [e["drill_id"] for e in history["drills"]] == [
        first.report["drill_id"],
        second.report["drill_id"],
    ]
    assert [e["status"] for e in history["drills"]] == ["pass", "fail"]
    assert history["drills"][1]["failed"] == ["rto"]
    assert history["trend"]["app"]["drills"] == 2
    assert list_drills(fresh.catalog) == []


# -- hashing during the restore ----------------------------------------------------------------


def test_early_hasher_verifies_only_tables_that_match(pg_db):
    pg_db.execute(SHOP_SQL)
    with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
        expected = take_fingerprint(conn, "full")
    pg_db.execute("UPDATE customers SET name = 'changed' WHERE id = 1")  # same count, new hash
    hasher = EarlyHasher(pg_db.dsn, None, expected)
    hasher.start()
    wait_for(lambda: len(hasher.tried) == 2, 15, "both tables to be hashed")
    assert hasher.finish() == {"public.orders"}
    assert hasher.error is None and hasher.seconds > 0


def test_tables_verified_early_are_not_hashed_again_but_still_compared(pg_db):
    pg_db.execute(SHOP_SQL)
    with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
        expected = take_fingerprint(conn, "full")
    pg_db.execute("INSERT INTO customers VALUES (21, 'new')")
    db = DatabaseUnderTest(
        target="app",
        database=pg_db.name,
        scratch_database=pg_db.name,
        dsn=pg_db.dsn,
        password=None,
        expected=expected,
        verified_early={"public.orders"},
        early_seconds=0.5,
    )
    plan = DrillPlan(targets=["app"], checks=["schema", "tables"])
    results = {r.name: r for r in verify_database(db, plan).results}
    assert results["schema"].status == "pass"  # the inventory still covers public.orders
    assert results["tables"].summary == (
        "1 table difference: row count of table public.customers differs: expected 20, actual 21"
    )
    assert results["tables"].evidence["hashed_during_restore"] == 1
