"""Catalog urls to SQLAlchemy engines: SQLite files (WAL) and PostgreSQL through psycopg 3.

Every unusable url is a :class:`ConfigError` of one line with a hint; passwords never appear
in messages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import StaticPool

from drbackup.errors import ConfigError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")  # "sqlite:/x" is a broken url, not a file
URL_HINT = "use sqlite:///path/to/catalog.db, a file path, or postgresql://user@host/dbname"


def parse_catalog_url(text: str) -> URL:
    """A SQLAlchemy URL for the catalog.

    A plain path (no ``://``) is a SQLite file; ``~`` is expanded and relative paths made
    absolute.  ``postgresql://`` and ``postgres://`` use psycopg 3.  Raises ConfigError for
    an empty, unparsable or unsupported url.
    """
    text = (text or "").strip()
    if not text:
        raise ConfigError("catalog url is empty", hint=URL_HINT)
    if "://" not in text and not _SCHEME.match(text):
        return URL.create("sqlite", database=str(Path(text).expanduser().absolute()))
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"catalog url is not a database url: {mask_url(text)}", hint=URL_HINT
        ) from None
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        driver = url.get_driver_name() if "+" in url.drivername else "psycopg"
        return url.set(drivername=f"postgresql+{driver}")
    if backend == "sqlite":
        if url.database and url.database != ":memory:":
            return url.set(database=str(Path(url.database).expanduser().absolute()))
        return url
    raise ConfigError(f"unsupported catalog database: {backend}", hint=URL_HINT)


def create_catalog_engine(url: URL) -> Engine:
    """An engine for a parsed catalog url.  Raises ConfigError if its driver is unusable."""
    shown = url.render_as_string(hide_password=True)
    kwargs: dict[str, Any] = {"future": True}
    memory = False
    if url.get_backend_name() == "sqlite":
        memory = not url.database or url.database == ":memory:"
        kwargs["connect_args"] = {"check_same_thread": False}
        if memory:
            kwargs["poolclass"] = StaticPool  # one connection: the in-memory database
        else:
            _make_parent(Path(url.database), shown)
    else:
        kwargs["pool_pre_ping"] = True  # the daemon keeps connections across idle hours
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(
            f"cannot use catalog url {shown}: {first_line(exc)}", hint=URL_HINT
        ) from None
    if url.get_backend_name() == "sqlite":
        event.listen(engine, "connect", lambda conn, _: _sqlite_pragmas(conn, wal=not memory))
    return engine


def _make_parent(path: Path, shown: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    except FileExistsError:  # the parent is a file
        reason = "not a directory"
    except OSError as exc:
        reason = _lower(exc.strerror or str(exc))
    raise ConfigError(
        f"cannot create the catalog directory {path.parent}: {reason}",
        hint=f"check the path and its permissions, or choose another catalog url than {shown}",
    )


def _sqlite_pragmas(dbapi_conn, *, wal: bool) -> None:
    cursor = dbapi_conn.cursor()
    try:
        if wal:  # readers (report, list) do not block the daemon's writes
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def first_line(exc: BaseException) -> str:
    """The first line of a (database) error, for one-line messages."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    if not lines:
        return type(orig).__name__
    return _lower(lines[0].strip().rstrip("."))


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]  # messages are lowercase; names inside keep their case


def mask_url(text: str) -> str:
    """Hide a password in a url-like string that SQLAlchemy could not parse."""
    scheme, sep, rest = text.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if sep and at and ":" in userinfo:
        return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"
    return text
