"""Heartbeats: one row per ``heartbeat_interval`` in ``drbackup.heartbeat`` on the source.

With ``heartbeat: true`` on a postgres target, the daemon writes a row (its server's
``clock_timestamp()``) into ``drbackup.heartbeat`` in the target's database, creating the
schema and table the first time; rows older than :data:`KEEP` are deleted as it goes.  The
rows travel in the WAL like any write, so a restore to any second of the window holds the
heartbeats written up to that second and none after: a physical drill proves that its
restored state brackets its target (drill/physical_checks.py).  Off by default: it writes
to the source (a few bytes per interval).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

SCHEMA, TABLE = "drbackup", "heartbeat"
KEEP = timedelta(days=400)  # longer than any restorable window worth drilling
_CREATE = (
    "CREATE SCHEMA IF NOT EXISTS drbackup;"
    " CREATE TABLE IF NOT EXISTS drbackup.heartbeat"
    " (at timestamptz PRIMARY KEY DEFAULT clock_timestamp());"
    " COMMENT ON TABLE drbackup.heartbeat IS"
    " 'written by drbackup (heartbeat: true): one row per heartbeat_interval, for drills'"
)
_BEAT = "INSERT INTO drbackup.heartbeat DEFAULT VALUES RETURNING at"
_TRIM = "DELETE FROM drbackup.heartbeat WHERE at < clock_timestamp() - %s"
_EXISTS = "SELECT to_regclass('drbackup.heartbeat') IS NOT NULL"
_NEWEST_UPTO = "SELECT max(at) FROM drbackup.heartbeat WHERE at <= %s"
_FIRST_AFTER = "SELECT min(at) FROM drbackup.heartbeat WHERE at > %s"


def beat(conn: psycopg.Connection) -> datetime:
    """Write one heartbeat (creating the table if needed); its time."""
    with conn.transaction():
        if not conn.execute(_EXISTS).fetchone()[0]:
            conn.execute(_CREATE)
        at = conn.execute(_BEAT).fetchone()[0]
        conn.execute(_TRIM, (KEEP,))
    return at


@dataclass(frozen=True)
class Bracket:
    """The heartbeats around a time in a restored database."""

    present: bool  # the table exists
    newest: datetime | None  # the newest heartbeat at or before the time
    after: datetime | None  # the first heartbeat after it (must be None after a restore)


def bracket(conn: psycopg.Connection, when: datetime) -> Bracket:
    """The heartbeats around ``when`` in the database of ``conn``."""
    if not conn.execute(_EXISTS).fetchone()[0]:
        return Bracket(False, None, None)
    newest = conn.execute(_NEWEST_UPTO, (when,)).fetchone()[0]
    after = conn.execute(_FIRST_AFTER, (when,)).fetchone()[0]
    return Bracket(True, newest, after)
