"""Pure parts of the fingerprint: comparison, query builders, scope.  No I/O."""

from __future__ import annotations

import copy

import pytest

from drbackup.errors import ConfigError, SourceError
from drbackup.sources.postgres.fingerprint import (
    FINGERPRINT_LEVELS,
    ROW_HASH_RECORD,
    Difference,
    build_table_hash_query,
    compare_fingerprints,
    format_table_hash,
    orphan_query,
    take_fingerprint,
)
from drbackup.sources.postgres.inventory import Scope, foreign_keys


def sequence(last_value: int, is_called: bool = True, increment: int = 1) -> dict:
    return {
        "type": "bigint",
        "start": 1,
        "increment": increment,
        "min": -100,
        "max": 10**9,
        "cache": 1,
        "cycle": False,
        "owned_by": None,
        "last_value": last_value,
        "is_called": is_called,
    }


def make_fingerprint() -> dict:
    fk = {
        "type": "f",
        "definition": "FOREIGN KEY (a_id) REFERENCES s.a(id)",
        "validated": True,
        "inherited": False,
        "schema": "s",
        "table": "b",
        "columns": ["a_id"],
        "ref_schema": "s",
        "ref_table": "a",
        "ref_columns": ["id"],
        "operators": [["pg_catalog", "="]],
        "match": "s",
    }
    column = {
        "type": "integer",
        "not_null": True,
        "default": None,
        "generated": None,
        "identity": None,
        "collation": None,
    }
    table = {
        "kind": "table",
        "unlogged": False,
        "partition_bound": None,
        "partition_key": None,
        "inherits": [],
        "columns": {"id": column},
    }
    return {
        "version": 1,
        "level": "full",
        "tables": {
            "s.a": {"rows": 2, "hash": "a" * 16, "kind": "table"},
            "s.b": {"rows": 5, "hash": "b" * 16, "kind": "table"},
            "s.m": {"rows": 1, "hash": "c" * 16, "kind": "matview"},
        },
        "inventory": {
            "schemas": ["s"],
            "tables": {"s.a": table, "s.b": copy.deepcopy(table)},
            "indexes": {"s.a": {"a_pkey": "CREATE UNIQUE INDEX a_pkey ON s.a USING btree (id)"}},
            "constraints": {"s.b": {"b_a_id_fkey": fk}},
            "triggers": {},
            "sequences": {"s.a_id_seq": sequence(2), "s.down": sequence(5, False, -1)},
            "views": {},
            "matviews": {"s.m": {"definition": " SELECT 1;", "populated": True}},
            "functions": {"s.f(integer)": "0" * 32},
            "types": {},
            "extensions": {"citext": "1.6"},
        },
        "large_objects": 3,
        "settings": {"TimeZone": "UTC"},
        "elapsed_s": 0.5,
    }


def diff(mutate) -> list[tuple[str, str]]:
    expected = make_fingerprint()
    actual = make_fingerprint()
    mutate(actual)
    return [(d.kind, d.object) for d in compare_fingerprints(expected, actual)]


def test_equal_fingerprints_have_no_difference_whatever_the_timing_and_settings():
    actual = make_fingerprint()
    actual["elapsed_s"] = 99.0
    actual["settings"] = {"server_version_num": 170000}
    assert compare_fingerprints(make_fingerprint(), actual) == []


def test_off_fingerprints_compare_as_nothing():
    assert compare_fingerprints(None, make_fingerprint()) == []
    assert compare_fingerprints(make_fingerprint(), None) == []


def test_table_differences_are_named_with_both_values():
    expected = make_fingerprint()
    actual = make_fingerprint()
    del actual["tables"]["s.a"]
    actual["tables"]["s.new"] = {"rows": 0, "hash": "0" * 16, "kind": "table"}
    actual["tables"]["s.b"]["rows"] = 4
    assert compare_fingerprints(expected, actual) == [
        Difference(
            "missing_table", "s.a", 2, None, "table s.a is missing: expected 2 rows, actual none"
        ),
        Difference(
            "row_count", "s.b", 5, 4, "row count of table s.b differs: expected 5, actual 4"
        ),
        Difference(
            "extra_table",
            "s.new",
            None,
            0,
            "table s.new is unexpected: expected none, actual 0 rows",
        ),
    ]


def test_content_hash_compared_only_when_both_sides_have_one():
    def change_hash(fp):
        fp["tables"]["s.b"]["hash"] = "d" * 16

    [difference] = [d for d in compare_fingerprints(make_fingerprint(), _mutated(change_hash))]
    assert difference.kind == "content_hash"
    assert difference.message == (
        f"content hash of table s.b differs: expected {'b' * 16}, actual {'d' * 16}"
    )

    def counts_only(fp):
        for entry in fp["tables"].values():
            entry["hash"] = None

    assert diff(counts_only) == []


def _mutated(mutate) -> dict:
    fingerprint = make_fingerprint()
    mutate(fingerprint)
    return fingerprint


def test_matview_differences_have_their_own_kind():
    def refresh(fp):
        fp["tables"]["s.m"]["hash"] = "e" * 16

    def grow(fp):
        fp["tables"]["s.m"]["rows"] = 2

    assert diff(refresh) == [("matview_content", "s.m")]
    assert diff(grow) == [("matview_content", "s.m")]


def test_inventory_differences_missing_extra_changed():
    def mutate(fp):
        inv = fp["inventory"]
        del inv["indexes"]["s.a"]["a_pkey"]
        inv["functions"]["s.g()"] = "1" * 32
        inv["tables"]["s.b"]["columns"]["id"]["type"] = "bigint"
        inv["constraints"]["s.b"]["b_a_id_fkey"]["validated"] = False
        inv["extensions"]["citext"] = "1.5"
        inv["schemas"] = ["s", "t"]

    assert sorted(diff(mutate)) == [
        ("changed_object", "citext"),
        ("changed_object", "s.b"),
        ("changed_object", "s.b.b_a_id_fkey"),
        ("extra_object", "s.g()"),
        ("extra_object", "t"),
        ("missing_object", "s.a.a_pkey"),
    ]
    actual = _mutated(mutate)
    messages = {d.object: d.message for d in compare_fingerprints(make_fingerprint(), actual)}
    assert messages["s.b"] == (
        "table s.b changed at columns.id.type: expected 'integer', actual 'bigint'"
    )
    assert messages["s.b.b_a_id_fkey"] == (
        "constraint s.b.b_a_id_fkey changed at validated: expected True, actual False"
    )
    assert messages["s.a.a_pkey"].startswith("index s.a.a_pkey is missing: expected 'CREATE UNI")
    assert messages["s.g()"] == f"function s.g() is unexpected: expected none, actual '{'1' * 32}'"


def test_long_values_are_shortened_in_messages():
    def mutate(fp):
        fp["inventory"]["views"]["s.v"] = "x" * 500

    [difference] = compare_fingerprints(make_fingerprint(), _mutated(mutate))
    assert difference.actual == "x" * 500
    assert len(difference.message) < 200 and difference.message.endswith("...")


@pytest.mark.parametrize(
    ("name", "state", "expected"),
    [
        ("s.a_id_seq", {"last_value": 7}, []),  # ahead: pg_dump read it later, allowed
        ("s.a_id_seq", {"last_value": 1}, [("sequence_value", "s.a_id_seq")]),
        ("s.a_id_seq", {"last_value": 2, "is_called": False}, [("sequence_value", "s.a_id_seq")]),
        ("s.down", {"last_value": 3}, []),  # descending: next 2 < 5 is ahead
        ("s.down", {"last_value": 9}, [("sequence_value", "s.down")]),
    ],
)
def test_sequence_values_may_run_ahead_but_not_behind(name, state, expected):
    def mutate(fp):
        fp["inventory"]["sequences"][name].update(state)

    assert diff(mutate) == expected


def test_sequence_definition_change_is_a_changed_object():
    def mutate(fp):
        fp["inventory"]["sequences"]["s.a_id_seq"]["increment"] = 2

    assert diff(mutate) == [("changed_object", "s.a_id_seq")]


def test_large_objects_and_version():
    assert diff(lambda fp: fp.update(large_objects=2)) == [("large_objects", "large objects")]
    assert diff(lambda fp: fp.update(large_objects=None)) == []  # out of scope on one side
    assert diff(lambda fp: fp.update(version=2)) == [("version", "fingerprint")]


def test_messages_are_one_lowercase_line():
    def mutate(fp):
        fp["tables"]["s.b"]["rows"] = 9
        fp["inventory"]["functions"]["s.f(integer)"] = "9" * 32
        fp["large_objects"] = 0

    for difference in compare_fingerprints(make_fingerprint(), _mutated(mutate)):
        assert "\n" not in difference.message
        assert difference.message[0].islower()


def test_unknown_level_is_a_config_error_before_touching_the_connection():
    assert FINGERPRINT_LEVELS == ("off", "counts", "full")
    with pytest.raises(ConfigError, match="unknown fingerprint level 'fast'") as caught:
        take_fingerprint(None, "fast")  # type: ignore[arg-type]
    assert caught.value.hint == "use one of: off, counts, full"
    assert take_fingerprint(None, "off") is None  # type: ignore[arg-type]


def test_hash_query_sorts_and_quotes_columns():
    query = build_table_hash_query("Ünï schema", 'quote"d', ["z", "a b", "Ä", "t"]).as_string(None)
    assert 'FROM ONLY "Ünï schema"."quote""d" AS t' in query
    assert 'ROW(t."a b", t."t", t."z", t."Ä")::text' in query
    assert build_table_hash_query("s", "empty", []).as_string(None).count("ROW()") == 1


def test_record_hash_query_hashes_text_columns_as_text_and_rehashes_each_row():
    query = build_table_hash_query(
        "s", "t", ["b", "a", "c"], row_hash=ROW_HASH_RECORD, text_columns=["c"]
    ).as_string(None)
    assert (
        'sum(hashtextextended(hash_record_extended(ROW(t."a", t."b", t."c"::text), 0)::text, 0))'
        in query
    )
    assert "md5" not in query


def test_unknown_row_hash_scheme_is_a_source_error():
    with pytest.raises(SourceError, match="unknown row hash scheme 'sha3'"):
        build_table_hash_query("s", "t", ["a"], row_hash="sha3")


def test_format_table_hash_is_the_sum_modulo_2_64():
    assert format_table_hash(0) == "0" * 16
    assert format_table_hash(-1) == "f" * 16
    assert format_table_hash(2**64 + 5) == "0000000000000005"


def test_foreign_keys_and_orphan_query_simple_match():
    inventory = make_fingerprint()["inventory"]
    [fk] = foreign_keys(inventory)
    assert fk["only"] and fk["ref_only"] and fk["name"] == "b_a_id_fkey"
    query = orphan_query(fk).as_string(None)
    assert query == (
        'SELECT count(*) AS orphans FROM ONLY "s"."b" AS c WHERE c."a_id" IS NOT NULL'
        ' AND NOT EXISTS (SELECT 1 FROM ONLY "s"."a" AS p'
        ' WHERE p."id" OPERATOR("pg_catalog".=) c."a_id")'
    )


def test_orphan_query_match_full_and_partitioned_tables():
    fk = {
        "schema": "s",
        "table": "child",
        "columns": ["x", "y"],
        "ref_schema": "s",
        "ref_table": "parent",
        "ref_columns": ["a", "b"],
        "match": "f",
        "operators": [["pg_catalog", "="], ["public", "="]],
        "only": False,
        "ref_only": False,
    }
    query = orphan_query(fk).as_string(None)
    assert 'FROM "s"."child" AS c WHERE NOT (c."x" IS NULL AND c."y" IS NULL)' in query
    assert 'FROM "s"."parent" AS p WHERE p."a" OPERATOR("pg_catalog".=) c."x"' in query
    assert 'AND p."b" OPERATOR("public".=) c."y")' in query


def test_foreign_keys_skip_partition_clones_and_know_partitioned_tables():
    inventory = make_fingerprint()["inventory"]
    clone = dict(inventory["constraints"]["s.b"]["b_a_id_fkey"], inherited=True)
    inventory["constraints"]["s.b"]["b_a_id_fkey1"] = clone
    inventory["tables"]["s.b"]["kind"] = "partitioned table"
    del inventory["tables"]["s.a"]  # out of scope: kind unknown, so not ONLY
    [fk] = foreign_keys(inventory)
    assert fk["name"] == "b_a_id_fkey" and not fk["only"] and not fk["ref_only"]


def test_scope_mirrors_pg_dump_selection():
    everything = Scope.build()
    assert everything.has_table("s", "t") and everything.has_large_objects
    assert everything.whole_schemas
    picked = Scope.build(include_tables=["s.t"], exclude_schemas=["x"])
    assert picked.has_table("s", "t") and not picked.has_table("s", "u")
    assert not picked.whole_schemas and not picked.has_large_objects
    schemas = Scope.build(include_schemas=["s"], exclude_tables=["s.big"])
    assert schemas.has_table("s", "t") and not schemas.has_table("s", "big")
    assert not schemas.has_table("other", "t") and not schemas.has_large_objects
    assert not Scope.build(exclude_schemas=["s"]).has_schema("s")
