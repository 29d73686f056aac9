"""Recreating roles from ``pg_dumpall --globals-only`` output, without touching existing ones.

The globals SQL is a sequence of one-line statements (pg_dumpall quotes identifiers and
literals, so a statement never spans lines).  Only role statements are applied: tablespaces
name server paths that rarely exist on the restore server, so they are reported instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from psycopg import errors as pg_errors

_CREATE_ROLE = re.compile(r'^CREATE ROLE ("(?:[^"]|"")+"|[^\s;]+);$')
_ALTER_ROLE = re.compile(r'^ALTER ROLE ("(?:[^"]|"")+"|[^\s;]+) ')
_GRANT = re.compile(r"^GRANT .* TO .*;$")


def _name(quoted: str) -> str:
    return quoted[1:-1].replace('""', '"') if quoted.startswith('"') else quoted


@dataclass
class GlobalsResult:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    grants: int = 0
    skipped: list[str] = field(default_factory=list)  # statements not applied (tablespaces)


def parse_role_statements(sql: str) -> list[tuple[str, str | None, str]]:
    """``(kind, role, statement)`` for each relevant line; kind in create/alter/grant/skip."""
    out = []
    for line in sql.splitlines():
        line = line.strip()
        if not line or line.startswith("--") or line.startswith("SET ") or line.startswith("\\"):
            continue
        if m := _CREATE_ROLE.match(line):
            out.append(("create", _name(m.group(1)), line))
        elif m := _ALTER_ROLE.match(line):
            out.append(("alter", _name(m.group(1)), line))
        elif _GRANT.match(line):
            out.append(("grant", None, line))
        elif line.startswith(
            ("CREATE TABLESPACE", "ALTER TABLESPACE", "GRANT ", "COMMENT ON TABLESPACE")
        ):
            out.append(("skip", None, line))
    return out


def apply_globals(conn, sql: str, *, force: bool = False) -> GlobalsResult:
    """Create missing roles (and their attributes and memberships) on ``conn``'s server.

    Existing roles are left as they are unless ``force``.  ``conn`` is in autocommit mode.
    """
    existing = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
    result = GlobalsResult()
    touched: set[str] = set()
    for kind, role, stmt in parse_role_statements(sql):
        if kind == "create":
            if role in existing:
                result.existing.append(role)
                if force:
                    touched.add(role)
                continue
            conn.execute(stmt)
            result.created.append(role)
            touched.add(role)
        elif kind == "alter" and role in touched:
            conn.execute(stmt)
            if role in existing:
                result.altered.append(role)
        elif kind == "grant":
            try:
                conn.execute(stmt)
                result.grants += 1
            except (
                pg_errors.DuplicateObject,
                pg_errors.InvalidGrantOperation,
                pg_errors.UndefinedObject,
            ):
                pass  # already a member, or a role of a grant that was not recreated
        elif kind == "skip":
            result.skipped.append(stmt)
    return result
