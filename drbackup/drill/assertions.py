"""Custom assertions: a plan's SQL queries and the results they must return."""

from __future__ import annotations

import math
from typing import Any

import psycopg

from drbackup.drill.checks import FAIL, PASS, CheckResult, json_value, pg_message


def check_assertion(conn: psycopg.Connection, assertion) -> CheckResult:
    """Run ``assertion.sql`` in a transaction that is rolled back; compare with ``expect``.

    ``expect`` is a scalar (the result must be one row of one column) or a list of rows
    (each a list, or a scalar for a one-column row).  Numbers compare by value, booleans
    only with booleans; dates and times compare as ISO text.
    """
    name = f"assertion:{assertion.name}"
    expected = _expected_rows(assertion.expect)
    try:
        with conn.transaction(force_rollback=True):
            cursor = conn.execute(assertion.sql)
            rows = [list(r) for r in cursor.fetchall()] if cursor.description else []
    except psycopg.Error as exc:
        message = pg_message(exc)
        return CheckResult(
            name,
            FAIL,
            f"assertion '{assertion.name}' failed: error: {message}",
            {"sql": assertion.sql, "error": message},
        )
    actual = json_value(rows)
    evidence = {
        "sql": assertion.sql,
        "expected": json_value(assertion.expect),
        "actual": actual[:50],
    }
    if _same(json_value(expected), actual):
        return CheckResult(name, PASS, f"assertion '{assertion.name}' holds", evidence)
    return CheckResult(
        name,
        FAIL,
        f"assertion '{assertion.name}' failed: expected {_show(assertion.expect)}, "
        f"got {_show(_shown_rows(actual, assertion.expect))}",
        evidence,
    )


def _expected_rows(expect: Any) -> list[list]:
    if isinstance(expect, list):
        return [list(r) if isinstance(r, list) else [r] for r in expect]
    return [[expect]]


def _shown_rows(actual: list[list], expect: Any):
    if not isinstance(expect, list) and len(actual) == 1 and len(actual[0]) == 1:
        return actual[0][0]
    return actual


def _show(value: Any, limit: int = 120) -> str:
    text = repr(json_value(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0) or a == b
    return a == b
