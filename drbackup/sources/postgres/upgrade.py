"""What a restore into a newer PostgreSQL major legitimately changes in a schema inventory.

A dump restored into a newer major holds the same schema, but some entries of its inventory
(``inventory.py``) read differently there.  Each :class:`UpgradeRule` names one such change
and normalises an inventory so that the change no longer shows; a drill compares the
normalised inventories (whatever still differs is a real difference) and names each
difference a rule absorbed, with the rule's reason (:func:`explain_differences`).

The rules, each found by restoring ``tests/fixtures/awkward.sql`` from PostgreSQL 15 into 17
(``tests/image/test_pg17.py`` keeps them honest):

``view definitions`` (any two majors)
    ``pg_get_viewdef`` prints a definition in the words of its server (PostgreSQL 16 stopped
    qualifying the columns of a one-table query).  The backup's definitions are printed
    again by the new server (:func:`reprint_view_definitions`), and compared as printed there:
    a definition only reads the same if the new server parses it into the same query.
``partition identity`` (into 17 or later)
    A partition carries its partitioned table's identity column.
``domain not null`` (into 17 or later)
    A domain's NOT NULL is also recorded as a named constraint.
``extension versions`` (any two majors)
    pg_dump writes ``CREATE EXTENSION`` without a version: the restore installs the new
    major's default version of each extension.

Nothing else is forgiven: a table, column, index, constraint, trigger, function, sequence or
type that differs in any other way is reported as a difference, as within one major.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from drbackup.sources.postgres.fingerprint import (
    SESSION_SETTINGS,
    Difference,
    compare_inventories,
)

_NOT_NULL_CHECK = re.compile(r"^[^:]+: NOT NULL$")
_VIEW_CATEGORIES = ("views", "matviews")


@dataclass(frozen=True)
class UpgradeRule:
    """One change a newer major makes to how a restored schema reads."""

    name: str
    reason: str  # one lowercase line: what the new major does
    applies: Callable[[int, int], bool]  # (from major, to major)
    normalize: Callable[[dict, str, dict], dict]  # (inventory, side, reprinted) -> inventory


@dataclass(frozen=True)
class UpgradeDifference:
    """A difference between the backup's inventory and the restore's that a rule explains."""

    difference: Difference
    rule: UpgradeRule

    def to_dict(self) -> dict:
        d = self.difference
        return {
            "kind": d.kind,
            "object": d.object,
            "rule": self.rule.name,
            "reason": self.rule.reason,
        }


def _reprinted(inventory: dict, side: str, reprinted: dict) -> dict:
    """The backup's views and materialized views as the new server prints them."""
    if side != "expected":
        return inventory
    for name, text in reprinted.get("views", {}).items():
        if text is not None and name in inventory.get("views", {}):
            inventory["views"][name] = text
    for name, text in reprinted.get("matviews", {}).items():
        if text is not None and name in inventory.get("matviews", {}):
            inventory["matviews"][name]["definition"] = text
    return inventory


def _without_partition_identity(inventory: dict, _side: str, _reprinted: dict) -> dict:
    tables = inventory.get("tables", {})
    for table in tables.values():
        if table.get("partition_bound") is None or len(table.get("inherits") or ()) != 1:
            continue
        parent = tables.get(table["inherits"][0], {}).get("columns", {})
        for name, column in table["columns"].items():
            identity = parent.get(name, {}).get("identity")
            if identity is not None and column.get("identity") == identity:
                column["identity"] = None
    return inventory


def _without_domain_not_null(inventory: dict, _side: str, _reprinted: dict) -> dict:
    for entry in inventory.get("types", {}).values():
        if entry.get("kind") == "domain" and entry.get("not_null"):
            entry["checks"] = [c for c in entry["checks"] if not _NOT_NULL_CHECK.match(c)]
    return inventory


def _without_extension_versions(inventory: dict, _side: str, _reprinted: dict) -> dict:
    if "extensions" in inventory:
        inventory["extensions"] = dict.fromkeys(inventory["extensions"], "(any version)")
    return inventory


def _any_two(from_major: int, to_major: int) -> bool:
    return from_major != to_major


def _into_17(from_major: int, to_major: int) -> bool:
    return from_major < 17 <= to_major


RULES = (
    UpgradeRule(
        "view definitions",
        "the new server prints the backup's definition this way (the same query)",
        _any_two,
        _reprinted,
    ),
    UpgradeRule(
        "partition identity",
        "postgresql 17 gives a partition its partitioned table's identity column",
        _into_17,
        _without_partition_identity,
    ),
    UpgradeRule(
        "domain not null",
        "postgresql 17 records a domain's not null as a named constraint",
        _into_17,
        _without_domain_not_null,
    ),
    UpgradeRule(
        "extension versions",
        "create extension installs the new major's default version",
        _any_two,
        _without_extension_versions,
    ),
)


def explain_differences(
    expected: dict, actual: dict, from_major: int, to_major: int, reprinted: dict | None = None
) -> tuple[list[Difference], list[UpgradeDifference], dict, dict]:
    """Compare two inventories across majors.

    Returns ``(differences, explained, expected', actual')``: what still differs once every
    rule that applies from ``from_major`` to ``to_major`` normalised both sides, the
    differences the rules absorbed (each with its rule), and the normalised inventories.
    ``reprinted``: :func:`reprint_view_definitions` of the backup's views on the new server.
    """
    exp, act = copy.deepcopy(expected), copy.deepcopy(actual)
    remaining = compare_inventories(exp, act)
    explained: list[UpgradeDifference] = []
    for rule in (r for r in RULES if r.applies(from_major, to_major)):
        exp = rule.normalize(exp, "expected", reprinted or {})
        act = rule.normalize(act, "actual", reprinted or {})
        now = compare_inventories(exp, act)
        left = {(d.kind, d.object) for d in now}
        explained += [
            UpgradeDifference(d, rule) for d in remaining if (d.kind, d.object) not in left
        ]
        remaining = now
    return remaining, explained, exp, act


def changed_view_definitions(expected: dict, actual: dict) -> dict:
    """``{"views": {name: text}, "matviews": {...}}``: the backup's definitions of the
    views whose definition reads differently in the restore (those worth reprinting)."""
    out: dict = {"views": {}, "matviews": {}}
    for name, text in expected.get("views", {}).items():
        if name in actual.get("views", {}) and actual["views"][name] != text:
            out["views"][name] = text
    for name, entry in expected.get("matviews", {}).items():
        other = actual.get("matviews", {}).get(name)
        if other is not None and other["definition"] != entry["definition"]:
            out["matviews"][name] = entry["definition"]
    return out


def reprint_view_definitions(conn: psycopg.Connection, definitions: dict) -> dict:
    """Print view definitions as the server of ``conn`` prints them.

    ``definitions``: :func:`changed_view_definitions`.  Each is created as a temporary view
    (under the fingerprint's session settings, as the inventory read them) and read back
    with ``pg_get_viewdef``, in a transaction that is rolled back: nothing is left.  A
    definition the server cannot parse comes back as None (it then stays a difference).
    """
    out: dict = {category: {} for category in _VIEW_CATEGORIES}
    with conn.transaction(force_rollback=True):
        for name, value in SESSION_SETTINGS.items():
            conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))
        for index, (category, name, text) in enumerate(_each(definitions)):
            out[category][name] = _reprint(conn, f"drbackup_reprint_{index}", text)
    return out


def _each(definitions: dict):
    for category in _VIEW_CATEGORIES:
        for name, text in sorted(definitions.get(category, {}).items()):
            yield category, name, text


def _reprint(conn: psycopg.Connection, view: str, text: str) -> str | None:
    try:
        with conn.transaction():  # a savepoint: one unparsable definition spoils nothing
            # Prepared: the server refuses more than one statement in it, so a definition
            # can only ever be the query of this one view.
            conn.execute(
                sql.SQL("CREATE TEMPORARY VIEW {} AS {}").format(
                    sql.Identifier(view), sql.SQL(text.strip().rstrip(";"))
                ),
                prepare=True,
            )
            row = conn.execute(
                "SELECT pg_catalog.pg_get_viewdef(c.oid) FROM pg_catalog.pg_class c"
                " WHERE c.relname = %s AND c.relnamespace = pg_catalog.pg_my_temp_schema()",
                (view,),
            ).fetchone()
    except psycopg.Error:
        return None
    return row[0] if row else None
