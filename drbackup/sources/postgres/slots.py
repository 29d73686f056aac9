"""Physical replication slots: the SQL that creates and reads the one WAL streaming uses.

A slot makes the server keep every WAL segment from its ``restart_lsn`` on until the
client that streams through it reports having written it (pg_receivewal reports at each
completed segment, or at each write with ``--synchronous``).  That is what lets a restarted
pg_receivewal resume without a gap, and also the classic trap: a slot nobody streams from
keeps WAL until the server's disk is full.  drbackup creates its slot (named by the target's
``wal.slot``), never drops one, and reads its state for ``report`` and ``/metrics``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import psycopg
from psycopg import errors as pgerrors

from drbackup.errors import SourceError
from drbackup.sources.postgres.wal import format_lsn, parse_lsn

_STATE_SQL = """
SELECT slot_type, active, active_pid, restart_lsn, wal_status, safe_wal_size,
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()
             ELSE pg_current_wal_lsn() END - restart_lsn)::bigint
FROM pg_catalog.pg_replication_slots WHERE slot_name = %s
"""


def default_slot_name(target: str) -> str:
    """``drbackup_<target>``, the target's name lower-cased with anything else than
    letters, digits and ``_`` as ``_`` (slot names allow nothing more)."""
    return "drbackup_" + re.sub(r"[^a-z0-9_]", "_", target.lower())[:54]


@dataclass(frozen=True)
class SlotState:
    """A replication slot as the server reports it (``exists`` False: no such slot)."""

    name: str
    exists: bool
    physical: bool = True
    active: bool = False
    active_pid: int | None = None
    restart_lsn: int | None = None
    wal_status: str | None = None  # reserved, extended, unreserved, lost
    safe_wal_size: int | None = None  # bytes left before max_slot_wal_keep_size bites
    retained_bytes: int | None = None  # WAL the slot keeps: current position - restart_lsn

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc["restart_lsn"] = format_lsn(self.restart_lsn) if self.restart_lsn is not None else None
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> SlotState:
        fields = dict(doc)
        if fields.get("restart_lsn"):
            fields["restart_lsn"] = parse_lsn(fields["restart_lsn"])
        return cls(**fields)


def read_slot(conn: psycopg.Connection, name: str) -> SlotState:
    """The state of slot ``name`` (``exists`` False if there is none).  Raises SourceError
    with the server's first line when it cannot be read."""
    try:
        row = conn.execute(_STATE_SQL, (name,)).fetchone()
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SourceError(f"cannot read replication slot {name}: {first}") from None
    if row is None:
        return SlotState(name, exists=False)
    slot_type, active, pid, restart, wal_status, safe, retained = row
    return SlotState(
        name,
        exists=True,
        physical=slot_type == "physical",
        active=bool(active),
        active_pid=pid,
        restart_lsn=parse_lsn(str(restart)) if restart is not None else None,
        wal_status=wal_status,
        safe_wal_size=safe,
        retained_bytes=max(0, retained) if retained is not None else None,
    )


def create_slot(conn: psycopg.Connection, name: str) -> bool:
    """Create physical slot ``name``, keeping WAL from now on; False if it existed already.

    Raises SourceError for a logical slot of that name, or when the server refuses (the
    role lacks REPLICATION, ``max_replication_slots`` is reached, ``wal_level`` is minimal).
    """
    existing = read_slot(conn, name)
    if existing.exists:
        if not existing.physical:
            raise SourceError(
                f"replication slot {name} exists and is a logical slot",
                hint="name another slot in the target's wal.slot",
            )
        return False
    try:
        conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (name,))
    except pgerrors.DuplicateObject:
        return False  # created meanwhile (another replica)
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SourceError(
            f"cannot create replication slot {name}: {reason}",
            hint="the role needs the REPLICATION attribute, the server wal_level = replica "
            "and a free max_replication_slots entry (docs/pitr.md, Streaming)",
        ) from None
    return True
