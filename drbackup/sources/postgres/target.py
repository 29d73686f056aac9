"""The server a restore writes to: what the target database holds, the restore lock, and
every statement a restore runs on databases (create, mark, swap, drop).

One maintenance connection (to the server's ``postgres`` database) holds a session
advisory lock ``(RESTORE_LOCK_KEY, hashtext(<target name>))`` for the whole restore.  The
server releases it when that connection ends, however the restore ended (even SIGKILL), so
a restore holding it knows that no other restore into the same target runs, and that every
leftover marked for that target (restore_marker.py) belongs to a restore that is gone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from drbackup.errors import RestoreError
from drbackup.sources.postgres import databases
from drbackup.sources.postgres.connection import connect, database_of, dsn_for_database
from drbackup.sources.postgres.restore_marker import (
    MARKER_PREFIX,
    RestoreMarker,
    is_leftover,
    parse_marker,
)

RESTORE_LOCK_KEY = 0x72657374  # "rest": the first key of every restore's advisory lock
ADMIN_DATABASE = "postgres"
SWAP_ATTEMPTS = 3  # a session connecting between ending sessions and the rename: try again

_OBJECTS_SQL = """
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%')
     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
     + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
"""
_TERMINATE_SQL = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
    " WHERE datname = %s AND pid <> pg_backend_pid()"
)


@dataclass(frozen=True)
class TargetState:
    """What the target database was when the restore looked (holding the lock)."""

    name: str
    exists: bool
    objects: int  # tables, sequences, functions, extensions... (0: empty)
    server_version: int
    comment: str | None

    @property
    def marker(self) -> RestoreMarker | None:
        return parse_marker(self.comment)

    @property
    def partial(self) -> RestoreMarker | None:
        """The marker of a restore into it that did not finish, if any."""
        marker = self.marker
        return marker if marker is not None and marker.role == "target" else None


@dataclass(frozen=True)
class Leftover:
    """A database an interrupted restore into the target made and meant to drop."""

    name: str
    marker: RestoreMarker

    def describe(self) -> str:
        m = self.marker
        if m.role == "new":
            return f"the partial restore {self.name} ({m.describe()})"
        return f"the previous {m.target} kept as {self.name} by restore {m.restore_id}"


class TargetServer:
    """The target's server through a maintenance connection that holds the restore lock.

    Use :meth:`open`; :meth:`close` releases the lock.  Statements raise RestoreError with
    one line naming the database.
    """

    def __init__(self, conn: psycopg.Connection, dsn: str, password: str | None, name: str):
        self.conn, self._dsn, self._password, self.name = conn, dsn, password, name

    @classmethod
    def open(cls, dsn: str, password: str | None) -> TargetServer:
        """Connect to the server of ``dsn`` and take the restore lock of its database.

        Raises RestoreError if another restore into that database holds the lock, and
        SourceError / SourceUnreachableError if the server refuses or cannot be reached.
        """
        name = _database_name(dsn)
        conn = connect(dsn_for_database(dsn, ADMIN_DATABASE), password)
        server = cls(conn, dsn, password, name)
        try:
            server._lock()
        except BaseException:
            server.close()
            raise
        return server

    def __enter__(self) -> TargetServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection: nothing to report
            self.conn.close()

    def dsn(self, name: str) -> str:
        """The restore's connection string, for database ``name`` of this server."""
        return dsn_for_database(self._dsn, name)

    @property
    def server_version(self) -> int:
        return self.conn.info.server_version

    # -- looking -------------------------------------------------------------------------

    def _lock(self) -> None:
        if databases.try_advisory_lock(self.conn, RESTORE_LOCK_KEY, self.name):
            return
        running = [m for _, m in self._marked() if m.target == self.name and m.role != "old"]
        who = f" ({running[0].describe()})" if running else ""
        raise RestoreError(
            f"another restore into database {self.name} is running{who}",
            hint="wait for it to end: the server releases its lock when it exits, however it ends",
        )

    def state(self) -> TargetState:
        """Look at the target database without changing anything."""
        comment = self.comment_of(self.name, exists=True)
        if comment is None:
            return TargetState(self.name, False, 0, self.server_version, None)
        with connect(self._dsn, self._password) as conn:
            objects = conn.execute(_OBJECTS_SQL).fetchone()[0]
        return TargetState(self.name, True, objects, self.server_version, comment or None)

    def _marked(self) -> list[tuple[str, RestoreMarker]]:
        rows = databases.databases_commented(self.conn, MARKER_PREFIX)
        found = [(name, parse_marker(comment)) for name, comment in rows]
        return [(name, marker) for name, marker in found if marker is not None]

    def leftovers(self) -> list[Leftover]:
        """Databases interrupted restores into the target left and meant to drop."""
        return [Leftover(n, m) for n, m in self._marked() if is_leftover(n, m, self.name)]

    def comment_of(self, name: str, *, exists: bool = False) -> str | None:
        """The comment of database ``name`` (None without one; with ``exists``, '' without
        one and None only if there is no such database)."""
        comment = databases.database_comment(self.conn, name)
        return comment if exists else comment or None

    # -- changing ------------------------------------------------------------------------

    def create(self, name: str, marker: RestoreMarker, *, encoding: str | None) -> None:
        """Create database ``name`` (from template0, in the dump's encoding) and mark it."""
        label = "target database" if name == self.name else "database"
        with _restore_error(f"cannot create {label} {name}"):
            databases.create_database(self.conn, name, comment=marker.comment(), encoding=encoding)

    def set_comment(self, name: str, text: str | None) -> None:
        """Set (None: remove) the comment of database ``name``."""
        with _restore_error(f"cannot set the comment of database {name}"):
            databases.set_database_comment(self.conn, name, text)

    def mark(self, name: str, marker: RestoreMarker) -> bool:
        """Set ``marker`` on existing database ``name``; False if only its owner may (the
        restore then goes on unmarked: an interrupted one is not recognised)."""
        try:
            self.set_comment(name, marker.comment())
        except _NotOwner:
            return False
        return True

    def drop(self, name: str) -> None:
        """Drop database ``name``, ending its sessions; nothing if it does not exist."""
        with _restore_error(f"cannot drop database {name}"):
            databases.drop_database(self.conn, name)

    def drop_if_marked(self, name: str, marker: RestoreMarker) -> bool:
        """Drop ``name`` only if it still carries ``marker`` (this restore's own database)."""
        current = parse_marker(self.comment_of(name))
        if current is None or current.restore_id != marker.restore_id:
            return False
        self.drop(name)
        return True

    def swap(self, new: str, old: str, *, target_comment: str | None, old_comment: str) -> int:
        """In one transaction: end the target's sessions, rename it to ``old``, rename ``new``
        to the target's name, and set both comments.  Either all of it happens or nothing.

        Returns the number of sessions ended.  Raises RestoreError (nothing changed).
        """
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            try:
                return self._swap_once(new, old, target_comment, old_comment)
            except pg_errors.ObjectInUse as exc:  # a session came in before the rename
                if attempt == SWAP_ATTEMPTS:
                    raise _one_line(exc, f"cannot rename database {self.name}") from None
            except psycopg.Error as exc:
                raise _one_line(exc, f"cannot swap {new} in as {self.name}") from None
        raise AssertionError("unreachable")

    def _swap_once(self, new, old, target_comment, old_comment) -> int:
        target, renamed = sql.Identifier(self.name), sql.Identifier(old)
        with self.conn.transaction():
            ended = self.conn.execute(_TERMINATE_SQL, (self.name,)).fetchone()[0]
            self.conn.execute(_TERMINATE_SQL, (new,))
            rename = sql.SQL("ALTER DATABASE {} RENAME TO {}")
            self.conn.execute(rename.format(target, renamed))
            self.conn.execute(rename.format(sql.Identifier(new), target))
            comment = sql.SQL("COMMENT ON DATABASE {} IS {}")
            self.conn.execute(comment.format(target, sql.Literal(target_comment)))
            self.conn.execute(comment.format(renamed, sql.Literal(old_comment)))
        return ended


class _NotOwner(RestoreError):
    """A statement only the database's owner (or a superuser) may run was refused."""


@contextlib.contextmanager
def _restore_error(what: str) -> Iterator[None]:
    # Statements may run in the preparation thread: a failure must read as one line.
    try:
        yield
    except databases.StatementError as exc:
        raise (_NotOwner if exc.not_permitted else RestoreError)(f"{what}: {exc.reason}") from None


def _database_name(dsn: str) -> str:
    name = database_of(dsn)
    if not name:
        raise RestoreError("the restore's dsn names no database")
    return name


def _one_line(exc: psycopg.Error, what: str) -> RestoreError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return RestoreError(f"{what}: {reason}")
