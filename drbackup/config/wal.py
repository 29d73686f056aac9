"""The ``wal:`` section of a postgres target, and which backup kinds the daemon takes.

``WalSettings`` is the ``wal`` field of ``PostgresTarget``: how WAL reaches the repository
(streamed by the daemon, or pushed by ``wal-push`` from archive_command) and how
``wal-fetch`` (restore_command) works (docs/pitr.md).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from drbackup.config import types as t
from drbackup.config.types import Duration

BackupKind = Literal["logical", "physical"]
Capture = Literal["stream", "archive_command"]


_SLOT_NAME = re.compile(r"[a-z0-9_]{1,63}")


def _check_slot(name: str) -> str:
    if not _SLOT_NAME.fullmatch(name):
        template = (
            "invalid replication slot name '{value}' (lower-case letters, digits and _, at most 63)"
        )
        raise t.config_error("slot", template, value=name)
    return name


class WalSettings(BaseModel):
    """How WAL is captured (streamed by the daemon, or ``wal-push`` from archive_command)
    and restored (``wal-fetch``) (docs/pitr.md)."""

    # Same behaviour as config.schema.Section (not imported: schema imports this module).
    model_config = ConfigDict(
        extra="forbid", hide_input_in_errors=True, use_attribute_docstrings=True
    )

    capture: Capture | None = Field(None, json_schema_extra={"default_text": "stream if physical"})
    """How WAL reaches the repository: stream (the daemon runs pg_receivewal through a
    replication slot; nothing on the database host) or archive_command (drbackup wal-push
    on the server).  Unset: stream when backup_kinds includes physical, else none."""
    slot: Annotated[str, AfterValidator(_check_slot)] | None = Field(
        None, json_schema_extra={"default_text": "drbackup_<target>"}
    )
    """The physical replication slot streaming uses; drbackup creates it if missing (and
    never drops it)."""
    flush_interval: Duration = Field(timedelta(seconds=10), ge=timedelta(milliseconds=200))
    """How often the segment being filled is uploaded while streaming (the recovery point
    objective, give or take the upload)."""
    synchronous: bool = False
    """pg_receivewal --synchronous: flush and report every write.  Commits wait for the
    daemon only if the slot's name is in the server's synchronous_standby_names (see
    docs/pitr.md for the cost)."""
    slot_max_retained: t.Size = 1 << 30
    """WAL the slot keeps on the server beyond this is a WARNING in report (an abandoned or
    lagging slot fills the server's disk)."""
    stream_spool_max: t.Size = 1 << 30
    """Completed segments waiting for upload in the spool beyond this stop pg_receivewal until
    the uploads catch up (the slot keeps the WAL on the server meanwhile)."""
    spool_dir: t.LocalPath | None = Field(
        None, json_schema_extra={"default_text": "$DRBACKUP_HOME/spool"}
    )
    """Where wal-push and wal-fetch keep status files and read-ahead segments, and streaming
    keeps what pg_receivewal writes (one subdirectory per target; needs room for fetch_ahead
    segments, and for stream_spool_max plus two segments when streaming)."""
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
    """WAL capture (streaming or archive_command) and restore_command (docs/pitr.md)."""
    heartbeat: bool = False
    """The daemon writes one row per heartbeat_interval into drbackup.heartbeat on the
    source (a schema it creates), so physical drills can prove where a restore stopped
    (docs/drills.md)."""
    heartbeat_interval: Duration = timedelta(seconds=10)
    """How often the daemon writes a heartbeat (with heartbeat: true)."""

    @property
    def streams_wal(self) -> bool:
        """True if the daemon streams this target's WAL (``wal.capture``)."""
        if self.wal.capture is None:
            return "physical" in self.backup_kinds
        return self.wal.capture == "stream"
