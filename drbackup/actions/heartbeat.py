"""``heartbeat``: one row into ``drbackup.heartbeat`` on a target's source (the daemon
writes one per ``heartbeat_interval`` for targets with ``heartbeat: true``; see
sources/postgres/heartbeat.py)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from drbackup.actions.backup_postgres import PgTarget
from drbackup.sources.postgres import heartbeat
from drbackup.sources.postgres.connection import connect, database_of, dsn_for_database

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext


def heartbeat_database(dsn: str) -> str:
    """The database the heartbeats go to: the one the target's dsn names (else postgres)."""
    return database_of(dsn) or "postgres"


def write_heartbeat(app: AppContext, name: str) -> datetime:
    """Write one heartbeat on target ``name``'s server; its time.  Raises SourceError."""
    target = PgTarget.from_config(name, app.config.target(name))
    dsn = dsn_for_database(target.dsn, heartbeat_database(target.dsn))
    with connect(dsn, target.password) as conn:
        return heartbeat.beat(conn)
