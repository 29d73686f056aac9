"""Never two runs of one job or of one target at once, in one daemon or across replicas.

Three mechanisms, each for one race:

* **Claims** (:meth:`Coordinator.claim`): a job run is a row in the catalog's ``runs``
  table (``kind='job'``, ``target=<job name>``, ``started_at=<scheduled fire time>``).  A
  daemon runs a fire only if it inserted that row; the check and the insert happen in one
  transaction under ``pg_advisory_xact_lock(<job name + fire time>)`` on a PostgreSQL
  catalog (an in-process lock on SQLite).  The row outlives the lock, so a replica whose
  clock lags, or that starts later, sees the fire was taken and skips it.
* **Target locks** (:meth:`HeldRun.target`): an in-process lock per target, plus on
  PostgreSQL a session advisory lock per target held for the action run, so two jobs
  touching one target (a backup and a prune) never overlap, in one process or across
  replicas.  Waiting is bounded by the job's timeout (``lock_timeout``).
* **Run liveness**: the daemon running a claimed job holds a session advisory lock keyed on
  the run id.  At start, :meth:`Coordinator.recover_abandoned` marks ``running`` job rows
  failed when that lock is free (their daemon died).  On SQLite (one daemon per catalog)
  every ``running`` job row found at start is abandoned.

Several replicas need a PostgreSQL catalog; on SQLite run one daemon per catalog.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from drbackup.catalog.models import RUN_FAILED, RUN_RUNNING, RunRow
from drbackup.errors import LockedError

JOB_RUN_KIND = "job"  # runs rows that record scheduled job runs (target = the job's name)


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for ``parts`` (stable across processes and hosts)."""
    digest = hashlib.sha256("\0".join(("drbackup", *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class LocalLocks:
    """Per-name locks of this process (targets, jobs)."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())


class Coordinator:
    """Claims, target locks and liveness over the catalog's database."""

    def __init__(self, catalog, replica: str):
        self.catalog = catalog
        self.replica = replica
        self.shared = catalog.engine.dialect.name == "postgresql"
        self._claim_lock = threading.Lock()
        self.targets = LocalLocks()

    # --- claims ------------------------------------------------------------------------

    def claim(self, job: str, fire_time: datetime, details: dict) -> int | None:
        """Record the run of ``job`` for ``fire_time`` unless one exists; its id, or None."""
        fire = fire_time.astimezone(UTC).replace(microsecond=0)
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
                kind=JOB_RUN_KIND,
                target=job,
                started_at=fire,
                status=RUN_RUNNING,
                details={**details, "replica": self.replica},
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

    # --- holding a run -------------------------------------------------------------------

    @contextlib.contextmanager
    def hold_run(self, run_id: int) -> Iterator[HeldRun]:
        """Hold the liveness lock of ``run_id`` (PostgreSQL) for the block."""
        if not self.shared:
            yield HeldRun(self, None)
            return
        conn = self.catalog.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key("run", str(run_id))})
            yield HeldRun(self, conn)
        finally:
            with contextlib.suppress(Exception):
                conn.execute(text("SELECT pg_advisory_unlock_all()"))
            conn.close()

    # --- recovery ------------------------------------------------------------------------

    def recover_abandoned(self) -> list[int]:
        """Mark ``running`` job rows whose daemon is gone as failed; their ids."""
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


class HeldRun:
    """A claimed run being executed: takes target locks for its action runs."""

    def __init__(self, coordinator: Coordinator, conn):
        self._coord = coordinator
        self._conn = conn

    @contextlib.contextmanager
    def target(self, name: str, timeout: float) -> Iterator[None]:
        """Hold ``name`` exclusively (this process, and replicas on PostgreSQL) for the block.

        Waits at most ``timeout`` seconds in all; raises LockedError after that.
        """
        deadline = time.monotonic() + timeout
        local = self._coord.targets.get(name)
        if not local.acquire(timeout=max(timeout, 0.001)):
            raise _busy(name)
        try:
            if self._conn is not None:
                self._lock_shared(name, deadline)
            try:
                yield
            finally:
                if self._conn is not None:
                    key = lock_key("target", name)
                    with contextlib.suppress(Exception):
                        self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        finally:
            local.release()

    def _lock_shared(self, name: str, deadline: float) -> None:
        remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
        try:
            self._conn.execute(text(f"SET lock_timeout = {remaining_ms}"))
            self._conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": lock_key("target", name)})
        except (OperationalError, DBAPIError) as exc:
            if "lock timeout" in str(exc).lower() or "lock_timeout" in str(exc).lower():
                raise _busy(name) from None
            raise
        finally:
            with contextlib.suppress(Exception):
                self._conn.execute(text("RESET lock_timeout"))


def _busy(name: str) -> LockedError:
    return LockedError(
        f"target {name} is busy with another run",
        hint="runs of one target never overlap; raise the job's timeout or move its schedule",
    )
