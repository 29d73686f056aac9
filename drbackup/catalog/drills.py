"""The catalog's ``drills`` table: one row per target of a drill report.

An index only: the reports themselves live in the repository (``reports/<target>/<drill
id>``), from which ``drbackup drill history`` reads.  The row keeps the whole report so the
catalog can answer without decrypting anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Float, Index, Integer, String, UniqueConstraint, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, Session, mapped_column

from drbackup.catalog.engine import first_line
from drbackup.catalog.models import Base, UTCDateTime
from drbackup.errors import DrbackupError

if TYPE_CHECKING:
    from drbackup.catalog.index import Catalog


class DrillRow(Base):
    __tablename__ = "drills"
    __table_args__ = (
        UniqueConstraint("drill_id", "target", name="uq_drills_drill_target"),
        Index("ix_drills_target", "target"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    drill_id: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(255))
    repository_id: Mapped[str | None] = mapped_column(String(64))
    backup_id: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(8))  # pass, warn, fail
    total_s: Mapped[float | None] = mapped_column(Float)  # restore + verification
    rto_s: Mapped[float | None] = mapped_column(Float)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


def record_drill(catalog: Catalog, report: Any) -> int:  # drill/record.DrillReport (above us)
    """Add (or replace) the rows of a report, one per target; returns how many."""
    document = report.to_dict()
    rows = 0
    with Session(catalog.engine) as session, session.begin():
        for target in report.targets:
            existing = session.scalars(
                select(DrillRow).where(
                    DrillRow.drill_id == report.drill_id, DrillRow.target == target.target
                )
            ).first()
            row = existing or DrillRow(drill_id=report.drill_id, target=target.target)
            row.repository_id = report.repository.get("id")
            row.backup_id = target.backup_id
            row.started_at = report.started_at
            row.finished_at = report.finished_at
            row.status = target.status or report.status
            row.total_s = target.timings.total_s if target.timings else None
            row.rto_s = target.objectives.rto_s if target.objectives else None
            row.report = document
            session.add(row)
            rows += 1
    return rows


def list_drills(catalog: Catalog, target: str | None = None) -> list[dict]:
    """Summaries of recorded drills, oldest first: drill_id, target, status, total_s, rto_s."""
    query = select(DrillRow).order_by(DrillRow.started_at, DrillRow.id)
    if target is not None:
        query = query.where(DrillRow.target == target)
    with Session(catalog.engine) as session:
        return [
            {
                "drill_id": r.drill_id,
                "target": r.target,
                "backup_id": r.backup_id,
                "status": r.status,
                "started_at": r.started_at,
                "total_s": r.total_s,
                "rto_s": r.rto_s,
            }
            for r in session.scalars(query)
        ]


@dataclass(frozen=True)
class DrillSummary:
    """One target's result in one drill, without the report (for metrics and status pages)."""

    drill_id: str
    target: str
    started_at: datetime
    status: str  # pass, warn, fail
    total_s: float | None  # restore + verification: the measured recovery time
    rto_s: float | None  # the objective the drill measured against
    backup_id: str | None

    @property
    def passed(self) -> bool:
        return self.status != "fail"


def drill_summaries(catalog, target: str | None = None) -> list[DrillSummary]:
    """Every recorded drill result (of ``target``), oldest first; the reports are not read.

    Raises DrbackupError when the catalog cannot be read.
    """
    columns = (
        DrillRow.drill_id,
        DrillRow.target,
        DrillRow.started_at,
        DrillRow.status,
        DrillRow.total_s,
        DrillRow.rto_s,
        DrillRow.backup_id,
    )
    query = select(*columns).order_by(DrillRow.started_at, DrillRow.id)
    if target is not None:
        query = query.where(DrillRow.target == target)
    with _reading(catalog) as session:
        return [DrillSummary(*row) for row in session.execute(query)]


def drill_report(catalog, drill_id: str) -> dict | None:
    """The whole report of drill ``drill_id`` as recorded, or None.  Raises DrbackupError."""
    query = select(DrillRow.report).where(DrillRow.drill_id == drill_id).limit(1)
    with _reading(catalog) as session:
        return session.scalars(query).first()


@contextmanager
def _reading(catalog) -> Iterator[Session]:
    """A session whose database errors are DrbackupError (the readers' callers are the
    daemon's threads and pages: one line, not a traceback)."""
    try:
        with Session(catalog.engine) as session:
            yield session
    except SQLAlchemyError as exc:
        raise DrbackupError(
            f"catalog {catalog.url}: {first_line(exc)}", hint="check the catalog database"
        ) from exc
