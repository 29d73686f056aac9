"""The differences a restore into a newer major legitimately introduces, named as such, and
nothing else forgiven.  Inventories are shaped as collect_inventory makes them; the cases are
the ones PostgreSQL 17 showed restoring tests/fixtures/awkward.sql dumped from 15."""

from __future__ import annotations

import copy
from types import SimpleNamespace

from drbackup.drill.upgrade import describe_majors, restore_majors
from drbackup.sources.postgres.upgrade import changed_view_definitions, explain_differences

OLD_VIEW = (
    " SELECT orders.status,\n    count(*) AS n\n   FROM public.orders\n  GROUP BY orders.status;"
)
NEW_VIEW = " SELECT status,\n    count(*) AS n\n   FROM public.orders\n  GROUP BY status;"


def column(identity=None) -> dict:
    return dict(
        type="integer", not_null=True, default=None, generated=None, identity=identity,
        collation=None,
    )  # fmt: skip


def table(bound=None, inherits=(), identity=None) -> dict:
    return dict(
        kind="partitioned table" if bound is None and not inherits else "table",
        unlogged=False, partition_bound=bound, partition_key=None, inherits=list(inherits),
        columns={"id": column(identity), "note": column()},
    )  # fmt: skip


def inventory_on_15() -> dict:
    return {
        "tables": {
            "public.events": table(identity="d"),
            "public.events_2024": table("FOR VALUES FROM (1) TO (9)", ["public.events"]),
        },
        "types": {
            "public.qty": dict(
                kind="domain",
                base="integer",
                not_null=True,
                default=None,
                checks=["qty_positive: CHECK ((VALUE > 0))"],
            ),  # fmt: skip
        },
        "views": {"public.v": "SELECT 1;"},
        "matviews": {"public.by_status": {"definition": OLD_VIEW, "populated": True}},
        "extensions": {"hstore": "1.8", "plpgsql": "1.0"},
        "constraints": {},
        "indexes": {},
        "triggers": {},
        "sequences": {},
    }


def restored_on_17(inventory: dict) -> dict:
    """What PostgreSQL 17 shows for the same schema restored from a dump."""
    out = copy.deepcopy(inventory)
    out["tables"]["public.events_2024"]["columns"]["id"]["identity"] = "d"
    out["types"]["public.qty"]["checks"].insert(0, "qty_not_null: NOT NULL")
    out["matviews"]["public.by_status"]["definition"] = NEW_VIEW
    out["extensions"]["hstore"] = "1.9"
    return out


REPRINTED = {"views": {}, "matviews": {"public.by_status": NEW_VIEW}}


def test_what_postgresql_17_changes_is_named_by_rule_and_is_no_difference():
    old = inventory_on_15()
    left, explained, _exp, _act = explain_differences(old, restored_on_17(old), 15, 17, REPRINTED)
    assert left == []
    assert sorted((e.rule.name, e.difference.object) for e in explained) == [
        ("domain not null", "public.qty"),
        ("extension versions", "hstore"),
        ("partition identity", "public.events_2024"),
        ("view definitions", "public.by_status"),
    ]
    assert all(e.rule.reason and e.to_dict()["rule"] == e.rule.name for e in explained)


def test_the_same_changes_within_one_major_are_differences():
    old = inventory_on_15()
    left, explained, _exp, _act = explain_differences(old, restored_on_17(old), 17, 17, REPRINTED)
    assert explained == []
    assert len(left) == 4


def test_rules_of_17_do_not_apply_between_older_majors():
    old = inventory_on_15()
    left, explained, _e, _a = explain_differences(old, restored_on_17(old), 14, 16, REPRINTED)
    assert {e.rule.name for e in explained} == {"view definitions", "extension versions"}
    assert sorted(d.object for d in left) == ["public.events_2024", "public.qty"]


def test_a_view_whose_query_changed_stays_a_difference():
    old = inventory_on_15()
    new = restored_on_17(old)
    new["matviews"]["public.by_status"]["definition"] = NEW_VIEW.replace("count(*)", "sum(1)")
    left, explained, _e, _a = explain_differences(old, new, 15, 17, REPRINTED)
    assert [(d.kind, d.object) for d in left] == [("changed_object", "public.by_status")]
    assert "public.by_status" not in [e.difference.object for e in explained]


def test_a_definition_the_new_server_could_not_reprint_stays_a_difference():
    old = inventory_on_15()
    unparsed = {"views": {}, "matviews": {"public.by_status": None}}
    left, _explained, _e, _a = explain_differences(old, restored_on_17(old), 15, 17, unparsed)
    assert [d.object for d in left] == ["public.by_status"]


def test_identity_on_a_partition_is_forgiven_only_where_its_parent_has_it():
    old = inventory_on_15()
    old["tables"]["public.events"]["columns"]["id"]["identity"] = None
    new = restored_on_17(old)
    left, _explained, _e, _a = explain_differences(old, new, 15, 17, REPRINTED)
    assert [d.object for d in left] == ["public.events_2024"]


def test_other_changes_are_never_forgiven():
    old = inventory_on_15()
    new = restored_on_17(old)
    new["tables"]["public.events_2024"]["columns"]["note"]["type"] = "bigint"
    del new["extensions"]["hstore"]
    new["types"]["public.qty"]["checks"].append("qty_small: CHECK ((VALUE < 10))")
    left, _explained, _e, _a = explain_differences(old, new, 15, 17, REPRINTED)
    assert sorted((d.kind, d.object) for d in left) == [
        ("changed_object", "public.events_2024"),
        ("changed_object", "public.qty"),
        ("missing_object", "hstore"),
    ]


def test_only_definitions_that_read_differently_are_sent_for_reprinting():
    old = inventory_on_15()
    assert changed_view_definitions(old, restored_on_17(old)) == {
        "views": {},
        "matviews": {"public.by_status": OLD_VIEW},
    }


def manifest_of(server_version_num) -> SimpleNamespace:
    """What these functions read of a Manifest: its meta."""
    return SimpleNamespace(meta={"server_version_num": server_version_num})


def test_the_report_says_which_majors_a_restore_crossed_and_how_long_it_took():
    majors = restore_majors(manifest_of(150008), 17, 17)
    assert majors == {"backup_major": 15, "restored_major": 17, "upgrade": True, "rehearsal": True}
    line = describe_majors(majors, {"restore_s": 2.25, "verification_s": 1.5})
    assert line == "upgrade rehearsal: postgresql 15 -> 17, restore 2.2s, verification 1.5s"
    fallback = restore_majors(manifest_of(150008), 17, None)
    assert describe_majors(fallback, {}).startswith("restored into a newer major: postgresql 15")
    assert describe_majors(restore_majors(manifest_of(170002), 17, None), {}) is None
    assert restore_majors(manifest_of(None), 17, None)["upgrade"] is False
