"""Never two runs of one job or of one target at once, in one daemon or across replicas.

Four mechanisms, each for one race (the rows and the SQL are the catalog's,
``catalog/jobs.py``; this module decides with its verbs):

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
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from drbackup.catalog.jobs import JOB_RUN_KIND as JOB_RUN_KIND  # where tests and tools find it
from drbackup.catalog.jobs import JobRuns, LockTimeout, SessionLocks
from drbackup.errors import ConfigError, LockedError

if TYPE_CHECKING:
    from drbackup.catalog import Catalog


class LocalLocks:
    """Per-name locks of this process (targets, jobs)."""

    def __init__(self):
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def get(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())


class Coordinator:
    """Claims, target locks and liveness over the catalog (its verbs: ``catalog/jobs.py``)."""

    def __init__(self, catalog: Catalog, replica: str):
        self.runs = JobRuns(catalog)
        self.replica = replica
        self.shared = self.runs.shared
        self.targets = LocalLocks()

    def claim(self, job: str, fire_time: datetime, details: dict) -> int | None:
        """Record the run of ``job`` for ``fire_time`` unless one exists; its id, or None."""
        fire = fire_time.astimezone(UTC).replace(microsecond=0)
        return self.runs.claim(job, fire, {**details, "replica": self.replica})

    def last_fire(self, job: str) -> datetime | None:
        """The scheduled time of the latest recorded run of ``job`` (any status), or None."""
        return self.runs.last_fire(job)

    @contextlib.contextmanager
    def hold_run(self, run_id: int) -> Iterator[HeldRun]:
        """Hold the liveness lock of ``run_id`` (PostgreSQL) for the block."""
        with self.runs.hold(run_id) as session:
            yield HeldRun(self, session)

    def recover_abandoned(self) -> list[int]:
        """Mark ``running`` job rows whose daemon is gone as failed; their ids."""
        return self.runs.abandon_dead()


class HeldRun:
    """A claimed run being executed: takes target locks for its action runs."""

    def __init__(self, coordinator: Coordinator, session: SessionLocks | None):
        self._coord = coordinator
        self._session = session

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
            if self._session is not None:
                try:
                    self._session.lock_target(name, deadline)
                except LockTimeout:
                    raise _busy(name) from None
            try:
                yield
            finally:
                if self._session is not None:
                    self._session.unlock_target(name)
        finally:
            local.release()


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
    def for_catalog(cls, catalog: Catalog) -> CatalogLock | None:
        """The lock for the catalog's SQLite file; None for PostgreSQL (replicas coordinate
        with advisory locks) and for an in-memory SQLite database."""
        database = catalog.sqlite_file
        return cls(database) if database is not None else None

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
