"""Databases as objects of a server: create, comment, list, drop, and advisory locks.

The SQL drills need on a scratch server, in one place.  Every function takes an open
autocommit connection to a maintenance database (``connection.connect``) and quotes names
as identifiers.  Failures raise SourceError with PostgreSQL's first line.  Deciding *which*
database may be created or dropped is the caller's business (``drill/scratch.py``).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from drbackup.errors import SourceError


def _run(conn, statement, params=None, *, doing: str):
    try:
        return conn.execute(statement, params)
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SourceError(f"cannot {doing}: {reason}") from None


def create_database(conn, name: str, *, comment: str, encoding: str | None = None) -> None:
    """``CREATE DATABASE name TEMPLATE template0 [ENCODING e]``, then its ``comment``.

    Raises SourceError if it cannot (it exists already, no privilege).  The comment is set
    right after (CREATE DATABASE cannot run in a transaction): if that fails, the database
    just made is dropped again; only a session killed in between leaves it without one.
    """
    stmt = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    if encoding:
        stmt += sql.SQL(" ENCODING {}").format(sql.Literal(encoding))
    _run(conn, stmt, doing=f"create database {name}")
    try:
        set_database_comment(conn, name, comment)
    except SourceError:
        drop_database(conn, name)
        raise


def set_database_comment(conn, name: str, comment: str) -> None:
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
