"""The amcheck check: B-tree indexes and heap pages of the restored database.

``bt_index_check`` runs on every B-tree index, ``verify_heapam`` (PostgreSQL 14+) on every
table and populated materialized view.  When the database has no amcheck, the drill
installs it in a schema of its own (:data:`AMCHECK_SCHEMA`), after the fingerprint was read;
when the server has no amcheck at all, the check warns and is skipped.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from drbackup.drill.checks import EVIDENCE_LIMIT, FAIL, PASS, WARN, CheckResult, listing, pg_message

AMCHECK_SCHEMA = "drbackup_drill"  # where a drill installs amcheck when the database lacks it


_BTREE_INDEXES = """
SELECT c.oid::regclass::text FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE am.amname = 'btree' AND c.relkind = 'i' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
ORDER BY 1
"""
_HEAP_TABLES = """
SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE (c.relkind = 'r' OR (c.relkind = 'm' AND c.relispopulated)) AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
ORDER BY 1
"""


def install_amcheck(conn: psycopg.Connection) -> str:
    """The schema of the amcheck extension, installing it (in its own schema) if missing.

    Raises psycopg errors when the extension is not available or may not be created.
    """
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'amcheck'"
    ).fetchone()
    if row:
        return row[0]
    with conn.transaction():
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(AMCHECK_SCHEMA))
        )
        conn.execute(
            sql.SQL("CREATE EXTENSION IF NOT EXISTS amcheck SCHEMA {}").format(
                sql.Identifier(AMCHECK_SCHEMA)
            )
        )
    return AMCHECK_SCHEMA


def check_amcheck(conn: psycopg.Connection, *, heapallindexed: bool = False) -> CheckResult:
    """``bt_index_check`` on every B-tree index, ``verify_heapam`` on every table when the
    server has it (PostgreSQL 14+); warns and skips when amcheck is not available."""
    try:
        schema = install_amcheck(conn)
    except psycopg.Error as exc:
        return CheckResult(
            "amcheck",
            WARN,
            f"skipped: amcheck is not available ({pg_message(exc)})",
            {"hint": "install the postgresql contrib package on the scratch server"},
        )
    problems = _check_indexes(conn, schema, heapallindexed)
    indexes = problems.pop("checked")
    has_heapam = _has_function(conn, schema, "verify_heapam")
    heap = _check_heaps(conn, schema) if has_heapam else {"checked": 0}
    tables = heap.pop("checked")
    messages = problems["messages"] + heap.get("messages", [])
    evidence = {"btree_indexes": indexes, "tables": tables, "heapallindexed": heapallindexed}
    evidence["corruption"] = messages[:EVIDENCE_LIMIT]
    if messages:
        return CheckResult("amcheck", FAIL, listing(messages, "corruption finding"), evidence)
    if not has_heapam:
        return CheckResult(
            "amcheck",
            WARN,
            f"{indexes} b-tree indexes intact; heap not checked (verify_heapam needs postgresql 14+)",
            evidence,
        )
    return CheckResult(
        "amcheck",
        PASS,
        f"{indexes} b-tree indexes and {tables} tables checked: no corruption",
        evidence,
    )


def _has_function(conn, schema: str, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = %s AND p.proname = %s",
        (schema, name),
    ).fetchone()
    return row is not None


def _check_indexes(conn, schema: str, heapallindexed: bool) -> dict:
    names = [r[0] for r in conn.execute(_BTREE_INDEXES).fetchall()]
    query = sql.SQL("SELECT {}.bt_index_check(index => %s::regclass, heapallindexed => %s)").format(
        sql.Identifier(schema)
    )
    messages = []
    for name in names:
        try:
            conn.execute(query, (name, heapallindexed))
        except psycopg.Error as exc:
            messages.append(f"index {name}: {pg_message(exc)}")
    return {"checked": len(names), "messages": messages}


def _check_heaps(conn, schema: str) -> dict:
    names = [r[0] for r in conn.execute(_HEAP_TABLES).fetchall()]
    query = sql.SQL(
        "SELECT blkno, offnum, attnum, msg FROM {}.verify_heapam(%s::regclass, check_toast => true)"
        " LIMIT 20"
    ).format(sql.Identifier(schema))
    messages = []
    for name in names:
        try:
            rows = conn.execute(query, (name,)).fetchall()
        except psycopg.Error as exc:
            messages.append(f"table {name}: {pg_message(exc)}")
            continue
        messages += [f"table {name} block {b} offset {o}: {m}" for b, o, _a, m in rows]
    return {"checked": len(names), "messages": messages}
