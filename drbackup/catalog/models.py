"""The catalog's tables (SQLAlchemy 2 typed declarative) and the plain records it returns.

Tables::

    catalog_info   key/value facts about the catalog itself (its schema version)
    repositories   one row per repository seen: id (the header's repository_id), url
    backups        one row per committed backup: what its manifest says, plus verification
    runs           history of backup / restore / verify / drill / prune runs

Every timestamp column is :class:`UTCDateTime`: callers pass timezone-aware datetimes, the
database stores UTC, and reads return aware UTC datetimes on SQLite and PostgreSQL alike.

The catalog holds database names, server versions and row counts in clear (``summary``),
unlike the repository, where they exist only inside encrypted manifests.  It is a local
index for the operator; keep it where the configuration is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

SCHEMA_VERSION = 1

STATUS_OK = "ok"
STATUS_DAMAGED = "damaged"
RUN_RUNNING = "running"
RUN_OK = "ok"
RUN_FAILED = "failed"
RUN_INTERRUPTED = (
    "interrupted"  # stopped by Ctrl-C, SIGTERM or the daemon: not a failure of its own
)
RUN_REFUSED = "refused"  # declined because another run held the lock: correct, not a failure
RUN_FINISHED = (RUN_OK, RUN_FAILED, RUN_INTERRUPTED, RUN_REFUSED)
RUN_STATUSES = (RUN_RUNNING, *RUN_FINISHED)


def as_utc(value: datetime) -> datetime:
    """An aware datetime converted to UTC.  Raises ValueError for a naive one."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"naive datetime {value.isoformat()}: the catalog needs timezone-aware times"
        )
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, UTC stored, aware UTC datetimes out.

    SQLite has no time zones (SQLAlchemy stores a naive string), PostgreSQL's ``timestamptz``
    returns the session's zone: both are normalised here so rows compare equal everywhere.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class CatalogInfoRow(Base):
    __tablename__ = "catalog_info"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class RepositoryRow(Base):
    __tablename__ = "repositories"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the header's repository_id
    url: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_synced: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last rebuild_from


class BackupRow(Base):
    __tablename__ = "backups"
    __table_args__ = (
        UniqueConstraint("repository_id", "target", "backup_id", name="uq_backups_repo_target_id"),
        Index("ix_backups_target", "target"),
        Index("ix_backups_backup_id", "backup_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    repository_id: Mapped[str] = mapped_column(String(64), ForeignKey("repositories.id"))
    target: Mapped[str] = mapped_column(String(255))
    backup_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    recovery_point: Mapped[datetime | None] = mapped_column(UTCDateTime)
    tool_version: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    stored_size: Mapped[int] = mapped_column(BigInteger)
    item_count: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Catalog-only facts (not in the repository): kept across rebuilds, lost with the file.
    status: Mapped[str] = mapped_column(String(16), default=STATUS_OK)
    last_verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    verify_result: Mapped[list[str] | None] = mapped_column(JSON)  # problems; [] = intact


# Columns whose values come from the manifest alone: what rebuild_from compares and writes.
MANIFEST_COLUMNS = (
    "kind",
    "started_at",
    "finished_at",
    "recovery_point",
    "tool_version",
    "size",
    "stored_size",
    "item_count",
    "summary",
)


class RunRow(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_started_at", "started_at"),
        Index("ix_runs_target", "target"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))  # backup, restore, verify, drill, prune, ...
    target: Mapped[str | None] = mapped_column(String(255))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))  # running, ok, failed
    error: Mapped[str | None] = mapped_column(Text)
    backup_id: Mapped[str | None] = mapped_column(String(32))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


@dataclass(frozen=True)
class BackupRecord:
    """One backup as the catalog knows it (detached from any session)."""

    repository_id: str
    repository_url: str
    target: str
    backup_id: str
    kind: str
    started_at: datetime
    finished_at: datetime
    recovery_point: datetime | None
    tool_version: str
    size: int
    stored_size: int
    item_count: int
    summary: dict[str, Any]
    status: str
    last_verified_at: datetime | None
    verify_result: list[str] | None

    @classmethod
    def from_row(cls, row: BackupRow, url: str) -> BackupRecord:
        return cls(
            repository_id=row.repository_id,
            repository_url=url,
            target=row.target,
            backup_id=row.backup_id,
            kind=row.kind,
            started_at=row.started_at,
            finished_at=row.finished_at,
            recovery_point=row.recovery_point,
            tool_version=row.tool_version,
            size=row.size,
            stored_size=row.stored_size,
            item_count=row.item_count,
            summary=row.summary,
            status=row.status,
            last_verified_at=row.last_verified_at,
            verify_result=row.verify_result,
        )


@dataclass(frozen=True)
class RunRecord:
    """One run from the history."""

    id: int
    kind: str
    target: str | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    error: str | None
    backup_id: str | None
    details: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: RunRow) -> RunRecord:
        return cls(
            id=row.id,
            kind=row.kind,
            target=row.target,
            started_at=row.started_at,
            finished_at=row.finished_at,
            status=row.status,
            error=row.error,
            backup_id=row.backup_id,
            details=row.details,
        )


@dataclass
class RebuildResult:
    """What :meth:`Catalog.rebuild_from` changed: counts of backups, and unreadable manifests.

    ``unreadable`` lists ``target/backup_id: problem`` for manifests that exist but failed
    authentication or parsing; their rows (if any) are kept and marked damaged.
    """

    added: int = 0
    removed: int = 0
    updated: int = 0
    unchanged: int = 0
    unreadable: list[str] = field(default_factory=list)
