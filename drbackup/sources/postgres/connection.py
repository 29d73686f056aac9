"""Connecting to PostgreSQL with one-line errors.

The environment of client tools (``client_env``) is built in ``environment``.
"""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from drbackup.errors import ConfigError, SourceError, SourceUnreachableError
from drbackup.sources.postgres.commands import mask_dsn
from drbackup.sources.postgres.environment import client_env

__all__ = ["client_env", "connect", "database_of", "dsn_for_database"]


def dsn_for_database(dsn: str, dbname: str) -> str:
    """The same server and user, another database."""
    try:
        return make_conninfo(dsn, dbname=dbname)
    except psycopg.ProgrammingError as exc:
        raise _invalid(dsn, exc) from None


def database_of(dsn: str) -> str | None:
    try:
        return conninfo_to_dict(dsn).get("dbname")
    except psycopg.ProgrammingError as exc:
        raise _invalid(dsn, exc) from None


def _invalid(dsn: str, exc: Exception) -> ConfigError:
    reason = " ".join(str(exc).split())  # libpq's messages end with a newline
    return ConfigError(
        f"invalid postgres dsn {mask_dsn(dsn)}: {reason}",
        hint="e.g. postgresql://user@host:5432/dbname or 'host=... dbname=...'",
    )


def connect(
    dsn: str, password: str | None = None, *, autocommit: bool = True
) -> psycopg.Connection:
    """Open a connection; raise SourceUnreachableError / SourceError with a one-line reason."""
    kwargs = {"autocommit": autocommit, "connect_timeout": 10}
    if password:
        kwargs["password"] = password
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as exc:
        raise _connect_error(dsn, exc) from None
    except psycopg.ProgrammingError as exc:
        raise _invalid(dsn, exc) from None


def _connect_error(dsn: str, exc: Exception) -> SourceError:
    text = " ".join(str(exc).split())
    where = mask_dsn(dsn)
    if "password authentication failed" in text or "no password supplied" in text:
        return SourceError(
            f"cannot connect to {where}: authentication failed",
            hint="check the target's password_file or PGPASSWORD",
        )
    if "does not exist" in text:
        reason = text.split("FATAL:")[-1].strip()
        what = "role" if reason.startswith("role ") else "database"
        return SourceError(
            f"cannot connect to {where}: {reason}",
            hint=f"check the {what} named by the dsn (or the target's databases:); "
            "'drbackup config check' shows what drbackup reads",
        )
    return SourceUnreachableError(
        f"cannot connect to {where}: {_last_reason(text)}",
        hint="check that the server is running and the dsn's host and port",
    )


def _last_reason(text: str) -> str:
    # libpq repeats the reason per address tried; keep the first informative part.
    for marker in (
        "Connection refused",
        "timeout expired",
        "could not translate host name",
        "No such file",
    ):
        if marker in text:
            return marker.lower()
    return text[:200]
