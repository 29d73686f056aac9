"""The source side of a logical backup: every statement and process ``backup postgres`` runs.

The backup lock on the source server, the databases to dump, the snapshot each pg_dump reads
(exported by a REPEATABLE READ transaction that stays open while pg_dump runs), the sequence
values and the fingerprint taken in that snapshot, and the globals (``pg_dumpall``).  The
order of these steps is the action's (``actions/backup_postgres.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC

import psycopg
from psycopg import IsolationLevel, sql

from drbackup.errors import SourceError
from drbackup.sources.postgres import commands, processes
from drbackup.sources.postgres.connection import client_env, connect
from drbackup.sources.postgres.slot_snapshot import SlotSnapshot, slot_snapshot, why_no_slot

BACKUP_LOCK_SQL = "SELECT pg_try_advisory_lock(hashtext('drbackup backup ' || %s))"
_DATABASES_SQL = (
    "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY 1"
)
_SNAPSHOT_SQL = "SELECT pg_export_snapshot(), statement_timestamp()"
_SET_SNAPSHOT_SQL = "SET TRANSACTION SNAPSHOT {}"
_SEQUENCES_SQL = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND c.relpersistence <> 't'
  AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'SELECT') END
"""
GLOBALS_TIMEOUT_S = 600


def take_backup_lock(control: psycopg.Connection, target: str) -> bool:
    """Take the session advisory lock of backups of ``target``; False if another session
    holds it.  Held until the connection ends, released by the server if this process dies,
    and seen by every host backing up this target."""
    return bool(control.execute(BACKUP_LOCK_SQL, (target,)).fetchone()[0])


def server_version_text(conn: psycopg.Connection) -> str:
    """``SHOW server_version`` (e.g. ``15.18 (Debian ...)``)."""
    return conn.execute("SHOW server_version").fetchone()[0]


def list_databases(control: psycopg.Connection) -> list[str]:
    """Every database that accepts connections and is not a template, by name."""
    return [r[0] for r in control.execute(_DATABASES_SQL).fetchall()]


def databases_size(control: psycopg.Connection, names: list[str]) -> int:
    """The size on disk of the databases ``names`` together (``pg_database_size``)."""
    row = control.execute(
        "SELECT coalesce(sum(pg_database_size(datname)), 0)::bigint FROM pg_database "
        "WHERE datname = ANY(%s) AND has_database_privilege(oid, 'CONNECT')",
        (names,),
    ).fetchone()
    return int(row[0])


@dataclass(frozen=True)
class Snapshot:
    """A snapshot exported for pg_dump, and what the backup records of it."""

    snapshot_id: str
    meta: dict  # database, recovery_point (ISO), database_size, encoding


@contextmanager
def exported_snapshot(dsn: str, password: str | None, db: str) -> Iterator[tuple]:
    """``(connection, Snapshot)``: a read-only REPEATABLE READ transaction on ``db`` whose
    snapshot pg_dump can import; rolled back and closed when the block ends.

    With ``wal_level = logical``, the snapshot comes from a temporary logical replication
    slot and the meta records its exact LSN (``snapshot_lsn``, sources/postgres/
    slot_snapshot.py); otherwise from ``pg_export_snapshot()`` (``snapshot_note`` says why).
    Raises SourceError / SourceUnreachableError if the database cannot be reached."""
    with connect(dsn, password, autocommit=False) as snap, _slot(snap, dsn, password) as slot:
        snap.isolation_level = IsolationLevel.REPEATABLE_READ
        snap.read_only = True
        if isinstance(slot, SlotSnapshot):
            snap.execute(sql.SQL(_SET_SNAPSHOT_SQL).format(sql.Literal(slot.snapshot_id)))
            snapshot_id = slot.snapshot_id
            point = snap.execute("SELECT statement_timestamp()").fetchone()[0]
        else:
            snapshot_id, point = snap.execute(_SNAPSHOT_SQL).fetchone()
        meta = {
            "database": db,
            "recovery_point": point.astimezone(UTC).isoformat(),
            "database_size": snap.execute("SELECT pg_database_size(current_database())").fetchone()[
                0
            ],
            "encoding": snap.execute("SHOW server_encoding").fetchone()[0],
            **(slot.meta() if isinstance(slot, SlotSnapshot) else {"snapshot_note": slot}),
        }
        yield snap, Snapshot(snapshot_id, meta)
        snap.rollback()


def _slot(conn: psycopg.Connection, dsn: str, password: str | None):
    """A slot snapshot (or the reason there is none) for the snapshot of ``conn``."""
    reason = why_no_slot(conn)
    return nullcontext(reason) if reason else slot_snapshot(dsn, password)


def sequence_states(conn: psycopg.Connection) -> dict[str, tuple[int, bool]]:
    """``(last_value, is_called)`` of every readable sequence, read now (before pg_dump).

    Sequences are not transactional: pg_dump reads them early in its run, while the
    fingerprint, running alongside, reads them late; under writes it would expect values
    the dump does not hold (a false "sequence is behind").  Values read before pg_dump
    starts are a lower bound of what it dumps, which is what the comparison assumes.
    """
    from drbackup.sources.postgres.inventory import read_sequence_state

    return {
        f"{schema}.{name}": read_sequence_state(conn, schema, name)
        for schema, name in conn.execute(_SEQUENCES_SQL).fetchall()
    }


def pin_sequences(fingerprint: dict | None, states: dict[str, tuple[int, bool]]):
    """The fingerprint with its sequence values replaced by those read before pg_dump."""
    sequences = (fingerprint or {}).get("inventory", {}).get("sequences", {})
    for name, entry in sequences.items():
        if name in states:
            entry["last_value"], entry["is_called"] = states[name]
    return fingerprint


def fingerprint_beside_dump(conn: psycopg.Connection, mode: str, scope: dict) -> dict | None:
    """The fingerprint (``mode``: off, counts, ...) of the snapshot ``conn`` holds, taken
    while pg_dump reads it; ``scope``: include/exclude schemas and tables (None: all)."""
    if mode == "off":
        return None
    from drbackup.sources.postgres.fingerprint import (
        ROW_HASH_RECORD,
        default_row_hash,
        take_fingerprint,
    )

    if default_row_hash(conn) == ROW_HASH_RECORD:
        # One backend: pg_dump's COPY is the backup's critical path, and a single backend
        # hashes rows faster than pg_dump copies them, so parallel workers would only take
        # CPU from the COPY (and workers from the source server).  md5 is slow enough to
        # become the tail: it keeps the planner's choice.
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
    return take_fingerprint(conn, mode, **scope)


def dump_globals(bin_dir, dsn: str, password: str | None) -> tuple[bytes, dict]:
    """Roles, memberships and tablespaces (``pg_dumpall --globals-only``) and their meta;
    without superuser, role passwords are left out (``role_passwords: False``).

    Raises SourceError with pg_dumpall's last line if it fails.
    """
    env = client_env(password, dsn)
    meta = {"role_passwords": True}
    result = processes.run(
        commands.pg_dumpall_globals_argv(bin_dir, dsn), env=env, timeout=GLOBALS_TIMEOUT_S
    )
    if result.returncode != 0 and "permission denied" in result.stderr:
        meta["role_passwords"] = False
        argv = commands.pg_dumpall_globals_argv(bin_dir, dsn, no_role_passwords=True)
        result = processes.run(argv, env=env, timeout=GLOBALS_TIMEOUT_S)
    if result.returncode != 0:
        raise SourceError(f"pg_dumpall --globals-only failed: {processes.last_line(result.stderr)}")
    return result.stdout.encode(), meta
