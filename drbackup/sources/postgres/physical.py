"""The SQL of physical backups and point-in-time recovery, on an ordinary connection.

What a base backup records about its server, named restore points, the archiver's state
(for the archive lag), and where a recovering server stands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from drbackup.errors import SourceError
from drbackup.sources.postgres.wal import parse_lsn

PHYSICAL_LOCK_SQL = "SELECT pg_try_advisory_lock(hashtext('drbackup physical backup ' || %s))"

_FACTS_SQL = """
SELECT current_setting('server_version_num')::int,
       current_setting('server_version'),
       (SELECT rolname FROM pg_roles WHERE oid = 10),
       (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'),
       current_setting('data_checksums') = 'on',
       pg_is_in_recovery(),
       clock_timestamp()
"""


@dataclass(frozen=True)
class ServerFacts:
    version_num: int
    version: str
    superuser: str  # the bootstrap superuser, who owns the restored cluster
    segment_size: int
    data_checksums: bool
    in_recovery: bool
    clock: datetime

    @property
    def major(self) -> int:
        return self.version_num // 10000


def server_facts(conn: psycopg.Connection) -> ServerFacts:
    row = conn.execute(_FACTS_SQL).fetchone()
    return ServerFacts(*row)


def cluster_size(conn: psycopg.Connection) -> int:
    """The size on disk of the server's databases (about what a base backup reads); those
    this role may not connect to are left out (pg_database_size would refuse them)."""
    row = conn.execute(
        "SELECT coalesce(sum(pg_database_size(oid)), 0)::bigint FROM pg_database "
        "WHERE has_database_privilege(oid, 'CONNECT')"
    )
    return int(row.fetchone()[0])


def server_clock(conn: psycopg.Connection) -> datetime:
    return conn.execute("SELECT clock_timestamp()").fetchone()[0]


def next_xid(conn: psycopg.Connection) -> int:
    """The first transaction id not yet assigned (with its epoch): every transaction that
    commits after a base backup's end has one at least this high."""
    return int(conn.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()[0])


def take_physical_lock(conn: psycopg.Connection, target: str) -> bool:
    """A session advisory lock: one physical backup of a target at a time."""
    return bool(conn.execute(PHYSICAL_LOCK_SQL, (target,)).fetchone()[0])


@dataclass(frozen=True)
class RestorePoint:
    name: str
    lsn: int
    time: datetime
    segment: str  # the WAL file holding it


def create_restore_point(conn: psycopg.Connection, name: str, *, switch: bool) -> RestorePoint:
    """``pg_create_restore_point(name)``; with ``switch``, complete the segment holding it
    (``pg_switch_wal()``) so that archive_command archives it now.

    Raises SourceError when the server refuses (not superuser, in recovery, wal_level).
    """
    try:
        lsn, when, segment = conn.execute(
            "SELECT p, clock_timestamp(), pg_walfile_name(p) FROM pg_create_restore_point(%s) p",
            (name,),
        ).fetchone()
        if switch:
            conn.execute("SELECT pg_switch_wal()")
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SourceError(f"cannot create restore point {name!r}: {reason}") from None
    return RestorePoint(name, parse_lsn(str(lsn)), when, segment)


@dataclass(frozen=True)
class ArchiverState:
    """``pg_stat_archiver`` and the current WAL position, for the archive lag."""

    current_lsn: int
    current_segment: str
    last_archived: str | None
    last_archived_time: datetime | None
    last_failed: str | None
    last_failed_time: datetime | None
    clock: datetime


def archiver_state(conn: psycopg.Connection) -> ArchiverState:
    """The server's WAL position and its archiver's state.  Raises SourceError with the
    server's first line when it cannot say (e.g. a standby: its WAL position is not its own)."""
    try:
        row = conn.execute(
            "SELECT pg_current_wal_lsn(), pg_walfile_name(pg_current_wal_lsn()),"
            " last_archived_wal, last_archived_time, last_failed_wal, last_failed_time,"
            " clock_timestamp() FROM pg_stat_archiver"
        ).fetchone()
    except psycopg.Error as exc:
        raise SourceError((str(exc).strip().splitlines() or [type(exc).__name__])[0]) from None
    return ArchiverState(parse_lsn(str(row[0])), *row[1:])


@dataclass(frozen=True)
class ReplayState:
    """Where a server that recovered (or is recovering) stands."""

    in_recovery: bool
    replay_lsn: int | None  # last WAL record replayed (static once recovery has ended)
    replay_time: datetime | None  # time of the last transaction replayed
    timeline: int | None  # the timeline the server writes now (None while recovering)


def replay_state(conn: psycopg.Connection) -> ReplayState:
    # The timeline: of the WAL being written now (pg_control's lags until a checkpoint).
    row = conn.execute(
        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), pg_last_xact_replay_timestamp(),"
        " CASE WHEN pg_is_in_recovery() THEN NULL"
        " ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END"
    ).fetchone()
    lsn = parse_lsn(str(row[1])) if row[1] is not None else None
    timeline = int(row[3], 16) if row[3] is not None else None
    return ReplayState(row[0], lsn, row[2], timeline)
