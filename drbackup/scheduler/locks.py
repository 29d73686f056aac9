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
* **One daemon per SQLite catalog** (:class:`CatalogLock`): SQLite has no advisory locks,
  so claims and target locks are in-process only; a second daemon would run every job
  again and mark the first one's live runs abandoned.  A daemon therefore holds an OS file
  lock (``flock``) next to the SQLite file for its lifetime, released by the kernel when
  the process dies, and a second daemon is refused in one line.

Several replicas need a PostgreSQL catalog; on SQLite run one daemon per catalog.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from drbackup.catalog.models import RUN_FAILED, RUN_RUNNING, RunRow
from drbackup.errors import ConfigError, LockedError

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
            with contextlib.suppress(
                Exception
            ):  # a broken connection: the server releases its locks
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
                    with contextlib.suppress(
                        Exception
                    ):  # a broken connection: the server releases its locks
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
            with contextlib.suppress(Exception):  # a broken connection is closed next
                self._conn.execute(text("RESET lock_timeout"))


def _busy(name: str) -> LockedError:
    return LockedError(
        f"target {name} is busy with another run",
        hint="runs of one target never overlap; raise the job's timeout or move its schedule",
    )


class CatalogLock:
    """The lock a daemon holds on a SQLite catalog for its lifetime (see the module doc).

    ``<catalog file>.daemon.lock`` is locked with ``flock`` and holds who took it (pid,
    host, time) for the message a second daemon prints.  Its file descriptor is not
    inherited by child processes (Python opens files non-inheritable), so a worker or
    pg_dump outliving the daemon never keeps it.
    """

    def __init__(self, database: str):
        self.database = database
        self.path = Path(f"{database}.daemon.lock")
        self._fd: int | None = None

    @classmethod
    def for_catalog(cls, engine) -> CatalogLock | None:
        """The lock for ``engine``'s SQLite file; None for PostgreSQL (replicas coordinate
        with advisory locks) and for an in-memory SQLite database."""
        url = engine.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return cls(url.database)

    def acquire(self) -> None:
        """Take the lock or raise LockedError naming its holder; ConfigError if the lock
        file cannot be opened (a read-only directory)."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot open the daemon lock {self.path}: {exc.strerror or exc}",
                hint="the daemon needs to write beside its SQLite catalog",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(
                f"another drbackup daemon is running on the catalog {self.database}{holder}",
                hint="run one daemon per SQLite catalog; several replicas need a PostgreSQL "
                "catalog (catalog: postgresql://...)",
            ) from None
        _write_holder(fd)
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock (the file stays: removing it would race a new daemon)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _write_holder(fd: int) -> None:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": started})
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode() + b"\n", 0)


def _read_holder(fd: int) -> str:
    """`` (pid 12, host db1, since 2026-...)`` from the lock file; empty if unreadable."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f" (pid {holder['pid']} on {holder['host']}, since {holder['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
