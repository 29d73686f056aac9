"""Databases as objects of a server: create, comment, list, drop, and advisory locks.

The one place that creates, looks at and drops databases: drills on a scratch server
(``drill/scratch.py``), restores on their target (``target.py``), throwaway clusters
(``cluster.py``).  Every function takes an open autocommit connection to a maintenance
database (``connection.connect``) and quotes names as identifiers.  Failures raise
:class:`StatementError` (a SourceError) with PostgreSQL's first line.  Deciding *which*
database may be created or dropped is the caller's business.
"""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from drbackup.errors import SourceError


class StatementError(SourceError):
    """A statement on a database failed: ``reason`` is PostgreSQL's first line, and
    ``not_permitted`` says it was refused for lack of privilege (not the owner)."""

    def __init__(self, doing: str, reason: str, *, not_permitted: bool = False):
        super().__init__(f"cannot {doing}: {reason}")
        self.reason, self.not_permitted = reason, not_permitted


def _run(conn, statement, params=None, *, doing: str):
    try:
        return conn.execute(statement, params)
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        denied = isinstance(exc, pg_errors.InsufficientPrivilege)
        raise StatementError(doing, reason, not_permitted=denied) from None


def create_database(
    conn,
    name: str,
    *,
    comment: str | None = None,
    encoding: str | None = None,
    template: str | None = "template0",
) -> None:
    """``CREATE DATABASE name [TEMPLATE t] [ENCODING e]``, then its ``comment`` if given.

    Raises StatementError if it cannot (it exists already, no privilege).  The comment is
    set right after (CREATE DATABASE cannot run in a transaction): if that fails, the
    database just made is dropped again; only a session killed in between leaves it
    without one.
    """
    stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        stmt += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    if encoding:
        stmt += sql.SQL(" ENCODING {}").format(sql.Literal(encoding))
    _run(conn, stmt, doing=f"create database {name}")
    if comment is None:
        return
    try:
        set_database_comment(conn, name, comment)
    except SourceError:
        drop_database(conn, name)
        raise


def set_database_comment(conn, name: str, comment: str | None) -> None:
    """Set (None: remove) the comment of database ``name``."""
    stmt = sql.SQL("COMMENT ON DATABASE {} IS {}").format(
        sql.Identifier(name), sql.Literal(comment)
    )
    _run(conn, stmt, doing=f"comment on database {name}")


def database_comment(conn, name: str) -> str | None:
    """The comment of database ``name`` ('' without one); None if there is no such database."""
    row = _run(
        conn,
        "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database"
        " WHERE datname = %s",
        (name,),
        doing=f"read the comment of database {name}",
    ).fetchone()
    return None if row is None else row[0]


def databases_commented(conn, prefix: str) -> list[tuple[str, str]]:
    """``(name, comment)`` of every database whose comment starts with ``prefix``, by name."""
    rows = _run(
        conn,
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
        " WHERE starts_with(shobj_description(oid, 'pg_database'), %s) ORDER BY datname",
        (prefix,),
        doing="list databases",
    )
    return [(name, comment) for name, comment in rows.fetchall()]


def databases_named(conn, prefix: str) -> list[tuple[str, str]]:
    """``(name, comment)`` of every database whose name starts with ``prefix``, by name."""
    rows = _run(
        conn,
        "SELECT datname, coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database"
        " WHERE left(datname, %s) = %s ORDER BY 1",
        (len(prefix), prefix),
        doing="list databases",
    )
    return [(name, comment) for name, comment in rows.fetchall()]


def database_exists(conn, name: str) -> bool:
    return database_comment(conn, name) is not None


def drop_database(conn, name: str) -> None:
    """Drop ``name`` (if it exists), ending its sessions first.  Raises SourceError."""
    ident = sql.Identifier(name)
    if conn.info.server_version >= 130000:
        stmt = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident)
        _run(conn, stmt, doing=f"drop database {name}")
        return
    _run(
        conn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
        (name,),
        doing=f"end the sessions of database {name}",
    )
    _run(conn, sql.SQL("DROP DATABASE IF EXISTS {}").format(ident), doing=f"drop database {name}")


def try_advisory_lock(conn, key: int, name: str) -> bool:
    """Take the session advisory lock ``(key, hashtext(name))``; False if another session has it."""
    query = "SELECT pg_try_advisory_lock(%s, hashtext(%s))"
    return bool(_run(conn, query, (key, name), doing="take an advisory lock").fetchone()[0])


def advisory_unlock(conn, key: int, name: str) -> None:
    query = "SELECT pg_advisory_unlock(%s, hashtext(%s))"
    _run(conn, query, (key, name), doing="release an advisory lock")
