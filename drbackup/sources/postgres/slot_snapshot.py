"""A logical backup's snapshot taken from a temporary logical replication slot: an exact LSN.

On a source with ``wal_level = logical`` and a role allowed to replicate, the backup opens a
replication connection to the database (``replication=database``) and runs
``CREATE_REPLICATION_SLOT <name> TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT``.  The server
answers with the slot's *consistent point* (an LSN) and the name of a snapshot holding
exactly the transactions whose commit record starts before that LSN.  pg_dump
(``--snapshot``) and the fingerprint (``SET TRANSACTION SNAPSHOT``) read that snapshot, so
the backup's content is the cluster's state at that LSN, which a physical restore reaches
with ``recovery_target_lsn`` and ``recovery_target_inclusive = off`` (drill/points.py).

The replication connection stays idle until the block ends (any command on it would end
the snapshot); closing it drops the temporary slot, also when this process dies.  Without
the slot (another ``wal_level``, no REPLICATION privilege, no free slot or WAL sender) the
backup falls back to ``pg_export_snapshot()`` and records why.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from drbackup.sources.postgres.wal import format_lsn, parse_lsn


@dataclass(frozen=True)
class SlotSnapshot:
    """A snapshot exported by a temporary logical slot, and where it stands in the WAL."""

    snapshot_id: str
    lsn: int  # the slot's consistent point
    system_identifier: str
    timeline: int

    def meta(self) -> dict:
        return {
            "snapshot_lsn": format_lsn(self.lsn),
            "snapshot_source": "logical replication slot",
            "system_identifier": self.system_identifier,
            "snapshot_timeline": self.timeline,
        }


_CAN_REPLICATE_SQL = (
    "SELECT current_setting('wal_level'), rolreplication OR rolsuper FROM pg_roles"
    " WHERE rolname = current_user"
)


def why_no_slot(conn: psycopg.Connection) -> str | None:
    """Why the source cannot give a slot snapshot (None: it can), asked over ``conn``
    (a normal connection; its transaction is rolled back)."""
    row = conn.execute(_CAN_REPLICATE_SQL).fetchone()
    conn.rollback()
    level, may_replicate = row if row else ("unknown", False)
    if level != "logical":
        return f"wal_level is {level}, not logical"
    if not may_replicate:
        return "the role has no REPLICATION privilege"
    return None


@contextlib.contextmanager
def slot_snapshot(dsn: str, password: str | None) -> Iterator[SlotSnapshot | str]:
    """A :class:`SlotSnapshot`, valid until the block ends; or, when the source cannot give
    one, the reason (a string) and nothing is held."""
    conn, reason = _replication_connection(dsn, password)
    if conn is None:
        yield reason
        return
    try:
        snapshot = _create_slot(conn)
    except psycopg.Error as exc:
        conn.close()
        yield f"no logical slot: {_text(exc)}"
        return
    try:
        yield snapshot
    finally:
        with contextlib.suppress(psycopg.Error):  # closing drops the temporary slot
            conn.close()


def _replication_connection(dsn: str, password: str | None):
    kwargs = {"autocommit": True, "connect_timeout": 10, "replication": "database"}
    if password:
        kwargs["password"] = password
    try:
        conn = psycopg.connect(dsn, **kwargs)
    except psycopg.Error as exc:
        return None, f"no replication connection: {_text(exc)}"
    try:
        level = conn.execute("SHOW wal_level").fetchone()[0]
    except psycopg.Error as exc:
        conn.close()
        return None, f"no replication connection: {_text(exc)}"
    if level != "logical":
        conn.close()
        return None, f"wal_level is {level}, not logical"
    return conn, None


def _create_slot(conn: psycopg.Connection) -> SlotSnapshot:
    system_id, timeline, _pos, _db = conn.execute("IDENTIFY_SYSTEM").fetchone()
    name = "drbackup_" + os.urandom(6).hex()
    row = conn.execute(
        f"CREATE_REPLICATION_SLOT {name} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"
    ).fetchone()
    _slot, point, snapshot_id, _plugin = row
    return SlotSnapshot(snapshot_id, parse_lsn(point), str(system_id), int(timeline))


def _text(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200]
