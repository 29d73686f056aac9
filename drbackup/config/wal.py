"""The ``wal:`` section of a postgres target, and which backup kinds the daemon takes.

``WalSettings`` is the ``wal`` field of ``PostgresTarget``: how ``wal-push``
(archive_command) and ``wal-fetch`` (restore_command) work (docs/pitr.md).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from drbackup.config import types as t
from drbackup.config.types import Duration

BackupKind = Literal["logical", "physical"]


class WalSettings(BaseModel):
    """How ``wal-push`` (archive_command) and ``wal-fetch`` (restore_command) work
    (docs/pitr.md)."""

    # Same behaviour as config.schema.Section (not imported: schema imports this module).
    model_config = ConfigDict(
        extra="forbid", hide_input_in_errors=True, use_attribute_docstrings=True
    )

    spool_dir: t.LocalPath | None = Field(
        None, json_schema_extra={"default_text": "$DRBACKUP_HOME/spool"}
    )
    """Where wal-push and wal-fetch keep status files and read-ahead segments (one
    subdirectory per target; needs room for fetch_ahead segments)."""
    asynchronous: bool = True
    """A background process per server uploads several segments ahead of PostgreSQL's
    archiver and keeps the repository key open; off: each wal-push stores its own file."""
    push_jobs: int = Field(4, ge=1, le=32)
    """Segments the background pusher uploads at once."""
    fetch_ahead: int = Field(8, ge=0, le=256)
    """Segments wal-fetch decrypts ahead of replay (0: none)."""
    timeout: Duration = timedelta(seconds=60)
    """How long wal-push and wal-fetch wait for their file before giving up (PostgreSQL
    then tries again)."""
    backup_wait: Duration = timedelta(minutes=5)
    """How long a physical backup waits for the WAL it needs to reach the archive."""


def _none_as_empty(value: Any) -> Any:
    return {} if value is None else value


class PhysicalSettings(BaseModel):
    """The physical-backup fields of ``PostgresTarget`` (a base class of it)."""

    model_config = ConfigDict(
        extra="forbid", hide_input_in_errors=True, use_attribute_docstrings=True
    )

    backup_kinds: list[BackupKind] = Field(["logical"], min_length=1)
    """What the daemon's backup jobs take: logical (pg_dump), physical (a base backup), or
    both."""
    wal: Annotated[WalSettings, BeforeValidator(_none_as_empty)] = Field(
        default_factory=WalSettings
    )
    """WAL archiving through archive_command and restore_command (docs/pitr.md)."""
    heartbeat: bool = False
    """The daemon writes one row per heartbeat_interval into drbackup.heartbeat on the
    source (a schema it creates), so physical drills can prove where a restore stopped
    (docs/drills.md)."""
    heartbeat_interval: Duration = timedelta(seconds=10)
    """How often the daemon writes a heartbeat (with heartbeat: true)."""
