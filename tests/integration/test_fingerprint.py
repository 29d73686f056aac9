"""The integrity fingerprint against real databases: determinism, sensitivity, and EQUALITY
after a real pg_dump | pg_restore round trip (also from an exported snapshot under writes)."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from drbackup.errors import SourceError
from drbackup.sources.postgres.cluster import EphemeralCluster
from drbackup.sources.postgres.fingerprint import (
    ROW_HASH_MD5,
    ROW_HASH_RECORD,
    compare_fingerprints,
    foreign_keys,
    orphan_query,
    sequence_checks,
    take_fingerprint,
    take_inventory,
)

AWKWARD_SQL = Path(__file__).resolve().parents[1] / "fixtures" / "awkward.sql"
UNICODE = "Ünïcode schema"


def load_awkward(db) -> None:
    db.execute(AWKWARD_SQL.read_text(encoding="utf-8"))


def fingerprint_of(dsn: str, level: str = "full", **scope) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return take_fingerprint(conn, level, **scope)


def without_timing(fingerprint: dict) -> dict:
    return {k: v for k, v in fingerprint.items() if k != "elapsed_s"}


def dump_and_restore(cluster: EphemeralCluster, source: str, target: str, *extra: str) -> None:
    """pg_dump -Fc SOURCE | pg_restore --exit-on-error -d TARGET; fail on any error."""
    dump = subprocess.run(
        [str(cluster.bin_dir / "pg_dump"), "-Fc", *extra, "-d", cluster.dsn(source)],
        capture_output=True,
        check=False,
    )
    assert dump.returncode == 0, dump.stderr.decode()
    restore = subprocess.run(
        [str(cluster.bin_dir / "pg_restore"), "--exit-on-error", "-d", cluster.dsn(target)],
        input=dump.stdout,
        capture_output=True,
        check=False,
    )
    assert restore.returncode == 0, restore.stderr.decode()


@pytest.fixture
def awkward_db(pg_db):
    load_awkward(pg_db)
    return pg_db


@pytest.fixture
def target_db(pg_cluster: EphemeralCluster) -> Iterator[str]:
    """A second empty database on the same cluster, for restores."""
    name = f"restore_{uuid.uuid4().hex[:12]}"
    pg_cluster.create_database(name)
    try:
        yield name
    finally:
        pg_cluster.drop_database(name)


def kinds_and_objects(differences) -> list[tuple[str, str]]:
    return [(d.kind, d.object) for d in differences]


def differences_after(db, *statements: str) -> list:
    """What the fingerprint of ``db`` says changed when ``statements`` run."""
    before = fingerprint_of(db.dsn)
    for statement in statements:
        db.execute(statement)
    return compare_fingerprints(before, fingerprint_of(db.dsn))


# ------------------------------------------------------------------- (1) determinism


def test_fingerprint_is_deterministic_across_calls_and_connections(awkward_db):
    with psycopg.connect(awkward_db.dsn, autocommit=True) as conn:
        first = take_fingerprint(conn)
        second = take_fingerprint(conn)
    third = fingerprint_of(awkward_db.dsn)

    assert without_timing(first) == without_timing(second) == without_timing(third)
    assert compare_fingerprints(first, third) == []
    assert json.loads(json.dumps(first)) == first
    assert first["large_objects"] == 3
    assert first["tables"][f"{UNICODE}.order items"]["rows"] == 3000
    assert "public.never_refreshed" not in first["tables"]  # not populated: nothing to hash
    assert "public.events" not in first["tables"]  # partitioned parent: its leaves are hashed
    assert first["tables"]["public.events_2024"]["rows"] > 0
    assert not any(name.startswith("pg_catalog.") for name in first["tables"])
    assert "public.hstore(text[], text[])" not in first["inventory"]["functions"]  # extension's
    assert first["inventory"]["extensions"].keys() >= {"citext", "hstore", "pgcrypto"}


def test_fingerprint_leaves_the_callers_session_and_transaction_alone(awkward_db):
    with psycopg.connect(awkward_db.dsn, autocommit=True) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SET LOCAL TimeZone = 'Asia/Tokyo'")
        conn.execute("SET search_path = public, pg_catalog")
        take_fingerprint(conn, "counts")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert conn.execute("SHOW TimeZone").fetchone()[0] == "Asia/Tokyo"
        assert conn.execute("SHOW search_path").fetchone()[0] == "public, pg_catalog"
        assert conn.execute("SHOW bytea_output").fetchone()[0] == "hex"
        conn.execute("ROLLBACK")


def test_fingerprint_on_an_idle_non_autocommit_connection_uses_its_own_transaction(awkward_db):
    with psycopg.connect(awkward_db.dsn) as conn:
        assert take_fingerprint(conn, "counts")["tables"]["public.t"]["rows"] == 5
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_unreadable_table_is_a_source_error_naming_it(awkward_db, pg_cluster):
    role = f"reader_{uuid.uuid4().hex[:8]}"
    awkward_db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with psycopg.connect(pg_cluster.dsn(awkward_db.name, user=role)) as conn:
            with pytest.raises(SourceError) as caught:
                take_fingerprint(conn)
            assert str(caught.value) == (
                "cannot fingerprint table public.documents: permission denied for table documents"
            )
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    finally:
        awkward_db.execute(f"DROP ROLE {role}")


def test_fingerprint_refuses_a_read_committed_transaction(awkward_db):
    with psycopg.connect(awkward_db.dsn) as conn:
        conn.execute("SELECT 1")  # implicit READ COMMITTED transaction
        with pytest.raises(SourceError, match="read committed transaction"):
            take_fingerprint(conn)


def test_counts_level_has_no_hashes_and_off_is_none(awkward_db):
    full = fingerprint_of(awkward_db.dsn)
    counts = fingerprint_of(awkward_db.dsn, "counts")
    assert fingerprint_of(awkward_db.dsn, "off") is None
    assert all(t["hash"] is None for t in counts["tables"].values())
    assert {k: t["rows"] for k, t in counts["tables"].items()} == {
        k: t["rows"] for k, t in full["tables"].items()
    }
    assert compare_fingerprints(full, counts) == []


def test_scope_filters_tables_and_inventory(awkward_db):
    only = fingerprint_of(awkward_db.dsn, include_tables=[f"{UNICODE}.orders"])
    assert list(only["tables"]) == [f"{UNICODE}.orders"]
    assert list(only["inventory"]["indexes"]) == [f"{UNICODE}.orders"]
    assert "functions" not in only["inventory"] and only["large_objects"] is None
    assert list(only["inventory"]["sequences"]) == [f"{UNICODE}.orders_id_seq"]  # owned by it

    rest = fingerprint_of(awkward_db.dsn, exclude_schemas=[UNICODE])
    assert rest["tables"] and not any(k.startswith(UNICODE) for k in rest["tables"])
    assert UNICODE not in rest["inventory"]["schemas"] and rest["large_objects"] == 3


# ------------------------------------------------------------------- (2)(3) sensitivity


def test_one_changed_value_changes_exactly_that_tables_hash(awkward_db):
    before = fingerprint_of(awkward_db.dsn)
    # -0 and 0 are equal as floats but not as text: the hash must see the change.
    awkward_db.execute(
        "UPDATE public.measurements SET f8 = 0 WHERE id = (SELECT min(id) FROM public.measurements"
        " WHERE f8 = 0 AND f8::text = '-0')"
    )
    after = fingerprint_of(awkward_db.dsn)

    differences = compare_fingerprints(before, after)
    assert kinds_and_objects(differences) == [("content_hash", "public.measurements")]
    assert differences[0].message.startswith("content hash of table public.measurements differs")
    changed = {k for k in before["tables"] if before["tables"][k] != after["tables"][k]}
    assert changed == {"public.measurements"}


def test_values_swapped_between_rows_change_the_hash(awkward_db):
    # hash_record_extended alone is a weighted sum of column hashes: summed over rows it
    # would not see two rows exchanging a value.  The outer hash must.
    differences = differences_after(
        awkward_db,
        'UPDATE "Ünïcode schema".customers c SET name = o.name FROM "Ünïcode schema".customers o'
        " WHERE (c.id, o.id) IN ((1, 2), (2, 1))",
    )
    assert kinds_and_objects(differences) == [("content_hash", "Ünïcode schema.customers")]


def test_numeric_scale_is_seen_although_the_values_are_equal(awkward_db):
    awkward_db.execute("UPDATE public.measurements SET n = 1.5 WHERE id = 1")
    differences = differences_after(
        awkward_db, "UPDATE public.measurements SET n = 1.50 WHERE id = 1"
    )
    assert kinds_and_objects(differences) == [("content_hash", "public.measurements")]


def test_record_hash_records_which_columns_are_hashed_as_text(awkward_db):
    fingerprint = fingerprint_of(awkward_db.dsn)
    assert fingerprint["settings"]["row_hash"] == ROW_HASH_RECORD
    tables = fingerprint["tables"]
    # citext and hstore (extension types), a composite holding float8[] : text
    assert tables["Ünïcode schema.customers"]["text_columns"] == ["address", "attrs", "email"]
    measured = set(tables["public.measurements"]["text_columns"])
    assert {"n", "nr", "fr"} <= measured  # numeric, and ranges of numeric and float8
    assert not measured & {"id", "f8", "f4", "span", "d", "at", "i4r", "tags", "grid", "payload"}
    assert tables["public.measurements"]["float_columns"] == ["f4", "f8"]  # by their bits
    assert "text_columns" not in tables["public.t"]  # text and integer: all by value


def test_a_drill_recomputes_an_old_md5_fingerprint_the_same_way(awkward_db, monkeypatch):
    import drbackup.sources.postgres.fingerprint as fp

    monkeypatch.setattr(fp, "_RECORD_MIN_SERVER", 10**9)  # a server without hash_record
    old = fingerprint_of(awkward_db.dsn)
    monkeypatch.undo()
    assert old["settings"]["row_hash"] == ROW_HASH_MD5
    assert not any("text_columns" in t for t in old["tables"].values())

    assert compare_fingerprints(old, fingerprint_of(awkward_db.dsn, like=old)) == []
    record = fingerprint_of(awkward_db.dsn)
    assert [d.kind for d in compare_fingerprints(old, record)][:1] == ["content_hash"]


def test_column_named_like_the_table_alias_is_hashed(awkward_db):
    differences = differences_after(awkward_db, 'UPDATE public.t SET "T" = "T" + 100 WHERE "T" = 1')
    assert kinds_and_objects(differences) == [("content_hash", "public.t")]


def test_deleted_row_is_a_row_count_difference(awkward_db):
    differences = differences_after(
        awkward_db, f'DELETE FROM "{UNICODE}"."order items" WHERE order_id = 7 AND line = 1'
    )
    assert kinds_and_objects(differences) == [("row_count", f"{UNICODE}.order items")]
    assert differences[0].message == (
        f"row count of table {UNICODE}.order items differs: expected 3000, actual 2999"
    )


def test_duplicate_rows_count_and_do_not_cancel_out(awkward_db):
    before = fingerprint_of(awkward_db.dsn)
    awkward_db.execute("INSERT INTO public.duplicates VALUES ('same')")
    after_insert = fingerprint_of(awkward_db.dsn)
    assert kinds_and_objects(compare_fingerprints(before, after_insert)) == [
        ("row_count", "public.duplicates")
    ]
    # {same x3, other} -> {same, other x3}: same count, and equal under XOR (x^x^x == x),
    # but a different multiset: the sum of row hashes must differ.
    awkward_db.execute(
        "DELETE FROM public.duplicates WHERE ctid IN (SELECT ctid FROM public.duplicates"
        " WHERE v = 'same' LIMIT 3); INSERT INTO public.duplicates VALUES ('other'), ('other')"
    )
    assert awkward_db.execute(
        "SELECT count(*) FILTER (WHERE v = 'same'), count(*) FILTER (WHERE v = 'other')"
        " FROM public.duplicates"
    ) == [(1, 3)]
    swapped = fingerprint_of(awkward_db.dsn)
    assert kinds_and_objects(compare_fingerprints(before, swapped)) == [
        ("content_hash", "public.duplicates")
    ]


def test_schema_change_is_named(awkward_db):
    differences = differences_after(
        awkward_db,
        f'DROP INDEX "{UNICODE}"."orders note GIN"',
        "ALTER TABLE public.scratchpad ALTER COLUMN v SET NOT NULL",
    )
    assert kinds_and_objects(differences) == [
        ("changed_object", "public.scratchpad"),
        ("missing_object", f"{UNICODE}.orders.orders note GIN"),
    ]
    assert "at columns.v.not_null: expected false, actual true" in differences[0].message.lower()


# ------------------------------------------------------------------- (4)(5) round trips


def test_pg_dump_restore_round_trip_gives_an_equal_fingerprint(awkward_db, pg_cluster, target_db):
    dump_and_restore(pg_cluster, awkward_db.name, target_db)
    expected = fingerprint_of(awkward_db.dsn)
    actual = fingerprint_of(pg_cluster.dsn(target_db))

    assert compare_fingerprints(expected, actual) == []
    assert expected["tables"] == actual["tables"]
    assert expected["inventory"] == actual["inventory"]
    assert expected["large_objects"] == actual["large_objects"] == 3


def test_a_nan_with_other_bits_restores_to_an_equal_hash(pg_db, pg_cluster, target_db):
    # inf - inf is a NaN with the sign bit set on x86; pg_dump writes "NaN" and the restore
    # makes the canonical NaN.  Hashing float bits must not call that a difference (and
    # must still tell -0 from 0, see test_one_changed_value_changes_exactly_that_tables_hash).
    pg_db.execute(
        "CREATE TABLE f (id int, x float8, y real);"
        " INSERT INTO f VALUES (1, 'Infinity'::float8 - 'Infinity'::float8, 'NaN'),"
        " (2, '-0', '-0'), (3, 'NaN', 'Infinity'::real - 'Infinity'::real)"
    )
    dump_and_restore(pg_cluster, pg_db.name, target_db)
    expected = fingerprint_of(pg_db.dsn)
    assert expected["tables"]["public.f"]["float_columns"] == ["x", "y"]
    assert compare_fingerprints(expected, fingerprint_of(pg_cluster.dsn(target_db))) == []


def test_stale_materialized_view_differs_after_restore(awkward_db, pg_cluster, target_db):
    # pg_dump stores no matview rows; pg_restore REFRESHes the view from the restored tables.
    awkward_db.execute(f"""INSERT INTO "{UNICODE}".orders (customer_id, placed_at)
                           VALUES (1, '2024-05-05 00:00+00')""")
    dump_and_restore(pg_cluster, awkward_db.name, target_db)
    differences = compare_fingerprints(
        fingerprint_of(awkward_db.dsn), fingerprint_of(pg_cluster.dsn(target_db))
    )
    assert kinds_and_objects(differences) == [("matview_content", "public.orders_by_mood")]


def test_fingerprint_of_exported_snapshot_equals_restore_of_dump_under_writes(
    awkward_db, pg_cluster, target_db
):
    with psycopg.connect(awkward_db.dsn, autocommit=True) as snap:
        snap.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        (snapshot_id,) = snap.execute("SELECT pg_export_snapshot()").fetchone()
        expected = take_fingerprint(snap)
        # Concurrent writes after the snapshot: new rows (sequences move), updates, deletes.
        awkward_db.execute(f"""
            INSERT INTO "{UNICODE}".orders (customer_id, placed_at)
                SELECT 1 + i, '2024-05-05 00:00+00' FROM generate_series(1, 50) AS i;
            UPDATE public.measurements SET n = n + 1 WHERE id <= 10;
            DELETE FROM public.duplicates WHERE v IS NULL;
            SELECT nextval('public."ticket numbers"');
        """)
        dump_and_restore(pg_cluster, awkward_db.name, target_db, f"--snapshot={snapshot_id}")
        snap.execute("ROLLBACK")

    live = fingerprint_of(awkward_db.dsn)
    actual = fingerprint_of(pg_cluster.dsn(target_db))
    assert compare_fingerprints(expected, actual) == []
    # Without the snapshot the writes would show (the check is not vacuous).
    assert {d.object for d in compare_fingerprints(expected, live)} >= {
        f"{UNICODE}.orders",
        "public.measurements",
        "public.duplicates",
    }
    # Sequences are not transactional: the dump saw the later values, which is allowed.
    seq = f"{UNICODE}.orders_id_seq"
    assert actual["inventory"]["sequences"][seq]["last_value"] == (
        expected["inventory"]["sequences"][seq]["last_value"] + 50
    )


# ------------------------------------------------------------------- (6)(7) drill helpers


def test_orphan_query_finds_the_orphan_of_the_not_valid_foreign_key(awkward_db):
    with psycopg.connect(awkward_db.dsn, autocommit=True) as conn:
        inventory = take_inventory(conn)
    keys = {fk["name"]: fk for fk in foreign_keys(inventory)}
    assert keys["reviews_customer_fk"]["validated"] is False
    assert not keys["events_customer_id_fkey"]["only"]  # partitioned child: all partitions
    assert not keys["event_notes_event_id_event_at_fkey"]["ref_only"]  # partitioned parent
    assert "event_notes_event_id_event_at_fkey1" not in keys  # clone per partition: skipped

    with psycopg.connect(awkward_db.dsn, autocommit=True) as conn:
        orphans = {name: conn.execute(orphan_query(fk)).fetchone()[0] for name, fk in keys.items()}
        # One orphan (customer 999999); the NULL customer_id is skipped under MATCH SIMPLE.
        assert orphans == dict.fromkeys(keys, 0) | {"reviews_customer_fk": 1}
        conn.execute("ALTER TABLE public.event_notes DISABLE TRIGGER ALL")
        conn.execute("INSERT INTO public.event_notes VALUES (0, '2023-07-01 00:00+00', 'lost')")
        assert conn.execute(
            orphan_query(keys["event_notes_event_id_event_at_fkey"])
        ).fetchone() == (1,)


def test_sequence_checks_flag_a_sequence_set_behind_its_column(awkward_db):
    with psycopg.connect(awkward_db.dsn, autocommit=True) as conn:
        healthy = sequence_checks(conn)
        conn.execute("SELECT setval('public.measurements_id_seq', 10)")
        behind = {c["column"]: c for c in sequence_checks(conn)}

    assert healthy and not any(c["behind"] for c in healthy)
    flagged = behind["public.measurements.id"]
    assert flagged == {
        "sequence": "public.measurements_id_seq",
        "column": "public.measurements.id",
        "next_value": 11,
        "max_value": 1000,
        "behind": True,
    }
    assert [c for c in behind.values() if c["behind"]] == [flagged]
    assert behind[f"{UNICODE}.customers.id"]["next_value"] == 501  # identity column
