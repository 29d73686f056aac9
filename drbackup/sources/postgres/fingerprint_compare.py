"""Comparing two fingerprints (fingerprint.py): every difference named, one line each.

Tables (row counts, content hashes), then the inventory's categories (indexes,
constraints, triggers, functions, ...), then large objects.  A sequence may be ahead of its
expected value (sequences are not transactional), never behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Difference:
    """One way the actual fingerprint differs from the expected one.

    ``kind`` is one of ``missing_table``, ``extra_table``, ``row_count``, ``content_hash``,
    ``matview_content``, ``missing_object``, ``extra_object``, ``changed_object``,
    ``sequence_value``, ``large_objects``, ``version``; ``object`` names what differs;
    ``message`` is one lowercase line naming the object and both values.
    """

    kind: str
    object: str
    expected: Any
    actual: Any
    message: str


# Inventory categories keyed "schema.table" -> name -> definition, and their singular label.
_PER_TABLE_CATEGORIES = {"indexes": "index", "constraints": "constraint", "triggers": "trigger"}
_FLAT_CATEGORIES = {
    "tables": "table",
    "views": "view",
    "matviews": "materialized view",
    "functions": "function",
    "types": "type",
    "extensions": "extension",
}
_SEQUENCE_STATE = ("last_value", "is_called")
_MESSAGE_VALUE_LIMIT = 120


def _show(value: Any) -> str:
    text = "none" if value is None else repr(value)
    return text if len(text) <= _MESSAGE_VALUE_LIMIT else text[: _MESSAGE_VALUE_LIMIT - 3] + "..."


def _diff(kind: str, obj: str, expected, actual, what: str, shown=None) -> Difference:
    """A Difference whose message is ``what`` followed by both values (or ``shown`` texts)."""
    exp_text, act_text = shown or (_show(expected), _show(actual))
    return Difference(
        kind, obj, expected, actual, f"{what}: expected {exp_text}, actual {act_text}"
    )


def _first_change(expected: Any, actual: Any, path: str = "") -> tuple[str, Any, Any]:
    """Return ``(path, expected, actual)`` of the first differing leaf of two nested values."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            if expected.get(key, ...) != actual.get(key, ...):
                sub = f"{path}.{key}" if path else str(key)
                return _first_change(expected.get(key), actual.get(key), sub)
    return path, expected, actual


def _compare_objects(label: str, expected: dict, actual: dict) -> list[Difference]:
    diffs = []
    for name in sorted(set(expected) | set(actual)):
        exp, act = expected.get(name), actual.get(name)
        if name not in actual:
            diffs.append(_diff("missing_object", name, exp, None, f"{label} {name} is missing"))
        elif name not in expected:
            diffs.append(_diff("extra_object", name, None, act, f"{label} {name} is unexpected"))
        elif exp != act:
            path, leaf_exp, leaf_act = _first_change(exp, act)
            what = f"{label} {name} changed" + (f" at {path}" if path else "")
            shown = (_show(leaf_exp), _show(leaf_act))
            diffs.append(_diff("changed_object", name, exp, act, what, shown))
    return diffs


def _flatten_per_table(category: dict) -> dict:
    return {f"{table}.{name}": d for table, objs in category.items() for name, d in objs.items()}


def _sequence_next(state: dict) -> int:
    return state["last_value"] + (state["increment"] if state["is_called"] else 0)


def _sequence_definitions(sequences: dict) -> dict:
    return {
        n: {k: v for k, v in s.items() if k not in _SEQUENCE_STATE} for n, s in sequences.items()
    }


def _compare_sequences(expected: dict, actual: dict) -> list[Difference]:
    """Definitions must be equal; values may only be ahead of the expected ones.

    Sequences are not transactional: pg_dump reads them when it gets to them, after the
    fingerprint, so a restored sequence legitimately runs ahead when the source was written to.
    Only a sequence that is behind (would hand out used values) is a difference.
    """
    diffs = _compare_objects(
        "sequence", _sequence_definitions(expected), _sequence_definitions(actual)
    )
    for name in sorted(set(expected) & set(actual)):
        exp_next, act_next = _sequence_next(expected[name]), _sequence_next(actual[name])
        if (act_next - exp_next) * expected[name]["increment"] < 0:
            shown = (f"next value {exp_next}", str(act_next))
            what = f"sequence {name} is behind"
            diffs.append(_diff("sequence_value", name, exp_next, act_next, what, shown))
    return diffs


def compare_inventories(expected: dict, actual: dict) -> list[Difference]:
    """Compare two inventories category by category; categories absent from either are skipped."""
    pairs = [
        (
            "schema",
            dict.fromkeys(expected.get("schemas", ()), "schema"),
            dict.fromkeys(actual.get("schemas", ()), "schema"),
            "schemas",
        )
    ]
    pairs += [
        (label, expected.get(cat), actual.get(cat), cat) for cat, label in _FLAT_CATEGORIES.items()
    ]
    pairs += [
        (
            label,
            _flatten_per_table(expected.get(cat, {})),
            _flatten_per_table(actual.get(cat, {})),
            cat,
        )
        for cat, label in _PER_TABLE_CATEGORIES.items()
    ]
    diffs = []
    for label, exp, act, category in pairs:
        if category in expected and category in actual:
            diffs += _compare_objects(label, exp, act)
    if "sequences" in expected and "sequences" in actual:
        diffs += _compare_sequences(expected["sequences"], actual["sequences"])
    return diffs


def _compare_table(name: str, exp: dict, act: dict) -> list[Difference]:
    matview = exp.get("kind") == "matview"
    label = "materialized view" if matview else "table"
    if exp["rows"] != act["rows"]:
        kind = "matview_content" if matview else "row_count"
        return [_diff(kind, name, exp["rows"], act["rows"], f"row count of {label} {name} differs")]
    if exp["hash"] and act["hash"] and exp["hash"] != act["hash"]:
        kind = "matview_content" if matview else "content_hash"
        what = f"content hash of {label} {name} differs"
        return [_diff(kind, name, exp["hash"], act["hash"], what, (exp["hash"], act["hash"]))]
    return []


def compare_tables(expected: dict, actual: dict) -> list[Difference]:
    """Compare the ``tables`` sections: presence, row counts, then hashes where both have one."""
    diffs = []
    for name in sorted(set(expected) | set(actual)):
        exp, act = expected.get(name), actual.get(name)
        label = "materialized view" if (exp or act).get("kind") == "matview" else "table"
        if act is None:
            what, shown = f"{label} {name} is missing", (f"{exp['rows']} rows", "none")
            diffs.append(_diff("missing_table", name, exp["rows"], None, what, shown))
        elif exp is None:
            what, shown = f"{label} {name} is unexpected", ("none", f"{act['rows']} rows")
            diffs.append(_diff("extra_table", name, None, act["rows"], what, shown))
        else:
            diffs += _compare_table(name, exp, act)
    return diffs


def compare_fingerprints(expected: dict | None, actual: dict | None) -> list[Difference]:
    """Return every difference between two fingerprints; an empty list means equal.

    Order: tables, then inventory categories, then large objects; names sorted within each.
    Content hashes are compared only when both sides have them (level ``full``); a None
    fingerprint (level ``off``) has nothing to compare.  A sequence may be ahead of its
    expected value, never behind.  Elapsed time and settings are evidence, never differences.
    """
    if expected is None or actual is None:
        return []
    exp_version, act_version = expected.get("version"), actual.get("version")
    if exp_version != act_version:
        what = "fingerprint version differs"
        return [_diff("version", "fingerprint", exp_version, act_version, what)]
    diffs = compare_tables(expected["tables"], actual["tables"])
    diffs += compare_inventories(expected["inventory"], actual["inventory"])
    exp_lo, act_lo = expected.get("large_objects"), actual.get("large_objects")
    if exp_lo is not None and act_lo is not None and exp_lo != act_lo:
        what = "large object count differs"
        diffs.append(_diff("large_objects", "large objects", exp_lo, act_lo, what))
    return diffs
