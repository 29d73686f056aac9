"""The daemon's rows and locks in the catalog: claims of scheduled fires, run liveness, and
target locks across replicas (how the scheduler uses them: ``scheduler/locks.py``).

A scheduled job run is a row of the ``runs`` table (``kind='job'``, ``target=<job name>``,
``started_at=<scheduled fire time>``).  On a PostgreSQL catalog the verbs below take
advisory locks, which is how replicas coordinate; on SQLite (one daemon per catalog) they
are in-process only and :attr:`JobRuns.shared` is False.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from drbackup.catalog.models import RUN_FAILED, RUN_RUNNING, RunRow

if TYPE_CHECKING:
    from drbackup.catalog.index import Catalog

JOB_RUN_KIND = "job"  # runs rows that record scheduled job runs (target = the job's name)


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for ``parts`` (stable across processes and hosts)."""
    digest = hashlib.sha256("\0".join(("drbackup", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class LockTimeout(Exception):  # noqa: N818 - a result the caller turns into its LockedError
    """A target's advisory lock was not granted within the time given."""


class JobRuns:
    """Claims, liveness and target locks of scheduled runs, over one catalog."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.shared = catalog.engine.dialect.name == "postgresql"
        self._claim_lock = threading.Lock()

    def claim(self, job: str, fire: datetime, details: dict[str, Any]) -> int | None:
        """Insert the run of ``job`` for ``fire`` unless one exists; its id, or None.

        The check and the insert are one transaction, under an advisory lock on the job and
        fire time (PostgreSQL) or a lock of this process (SQLite).
        """
        guard = contextlib.nullcontext() if self.shared else self._claim_lock
        with guard, Session(self.catalog.engine) as session, session.begin():
            if self.shared:
                key = lock_key("claim", job, fire.isoformat())
                session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
            taken = session.scalar(
                select(RunRow.id).where(
                    RunRow.kind == JOB_RUN_KIND, RunRow.target == job, RunRow.started_at == fire
                )
            )
            if taken is not None:
                return None
            row = RunRow(
                kind=JOB_RUN_KIND, target=job, started_at=fire, status=RUN_RUNNING, details=details
            )
            session.add(row)
            session.flush()
            return row.id

    def last_fire(self, job: str) -> datetime | None:
        """The scheduled time of the latest recorded run of ``job`` (any status), or None."""
        with Session(self.catalog.engine) as session:
            query = select(func.max(RunRow.started_at)).where(
                RunRow.kind == JOB_RUN_KIND, RunRow.target == job
            )
            value = session.scalar(query)
        if value is not None and value.tzinfo is None:  # max() bypasses the type on SQLite
            value = value.replace(tzinfo=UTC)
        return value

    @contextlib.contextmanager
    def hold(self, run_id: int) -> Iterator[SessionLocks | None]:
        """Hold the liveness lock of ``run_id`` for the block (PostgreSQL; None on SQLite).

        Yields the session's locks, which also take target locks for the run.
        """
        if not self.shared:
            yield None
            return
        conn = self.catalog.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key("run", str(run_id))})
            yield SessionLocks(conn)
        finally:
            with contextlib.suppress(SQLAlchemyError):  # the connection may be gone: closed next
                conn.execute(text("SELECT pg_advisory_unlock_all()"))
            conn.close()

    def abandon_dead(self) -> list[int]:
        """Mark ``running`` job rows whose daemon is gone as failed; their ids.

        Gone: nobody holds the run's liveness lock (PostgreSQL); on SQLite, every one.
        """
        rows = self.catalog.runs(kind=JOB_RUN_KIND, status=RUN_RUNNING)
        abandoned = [row.id for row in rows if not self._alive(row.id)]
        for run_id in abandoned:
            self.catalog.finish_run(
                run_id, RUN_FAILED, error="abandoned: the daemon running it stopped"
            )
        return abandoned

    def _alive(self, run_id: int) -> bool:
        if not self.shared:
            return False
        key = lock_key("run", str(run_id))
        with self.catalog.engine.connect() as conn:
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            conn.rollback()
        return not got


class SessionLocks:
    """Advisory locks of one held run's session: a target's, across replicas."""

    def __init__(self, conn: Connection):
        self._conn = conn

    def lock_target(self, name: str, deadline: float) -> None:
        """Wait until the monotonic ``deadline`` for ``name``'s lock; raises LockTimeout."""
        remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
        try:
            self._conn.execute(text(f"SET lock_timeout = {remaining_ms}"))
            self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key("target", name)})
        except (OperationalError, DBAPIError) as exc:
            if "lock timeout" in str(exc).lower() or "lock_timeout" in str(exc).lower():
                raise LockTimeout(name) from None
            raise
        finally:
            with contextlib.suppress(SQLAlchemyError):  # a broken session: the lock call said why
                self._conn.execute(text("RESET lock_timeout"))

    def unlock_target(self, name: str) -> None:
        """Let go of ``name``'s lock (a lost session has let go of it already)."""
        with contextlib.suppress(SQLAlchemyError):
            self._conn.execute(
                text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key("target", name)}
            )


class StreamClaim:
    """The right to stream one target's WAL (``scheduler/streams.py``): on a PostgreSQL
    catalog, the session advisory lock ``lock_key("wal-stream", <target>)`` held on a
    connection of its own; on SQLite (one daemon per catalog) always this process's."""

    def __init__(self, catalog: Catalog, target: str):
        self.engine, self.target = catalog.engine, target
        self.shared = self.engine.dialect.name == "postgresql"
        self._conn = None

    def acquire(self) -> bool:
        """Take it if free; False if another replica holds it.  Raises what the catalog
        raises when unreachable."""
        if not self.shared:
            return True
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            key = lock_key("wal-stream", self.target)
            got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
        except Exception:
            conn.close()
            raise
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def alive(self) -> bool:
        """True while the claim's session is alive (always on SQLite)."""
        if self._conn is None:
            return not self.shared
        try:
            self._conn.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any failure means the lock may be gone
            return False
        return True

    def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):  # a lost session has released its locks
                conn.execute(text("SELECT pg_advisory_unlock_all()"))
            with contextlib.suppress(Exception):  # the connection may be gone already
                conn.close()
