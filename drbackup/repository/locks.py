"""Repository locks: the objects under ``locks/`` that keep gc and snapshots apart.

The protocol (docs/buckets.md) has two lock kinds:

* a snapshot writes ``locks/snapshot-<backup_id>`` before it reads anything, refreshes it
  while it runs and deletes it after its manifest is written;
* a deleting gc writes ``locks/gc-<id>`` the same way.

Each side writes its own lock first and then lists ``locks/``: if it sees a live lock of
the other kind it withdraws and refuses.  With read-after-write listings (S3, local
disks) two racing parties cannot both miss each other, so blobs are never deleted while a
snapshot may still reference them through a deduplication check.  A lock not refreshed
for ``stale_after`` seconds belongs to a dead process; ages are measured against the
storage's own clock (the modification time of the lock just written), not the host's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from drbackup import __version__
from drbackup.errors import LockedError, StorageError
from drbackup.repository.manifest import LOCK_PREFIX

LOCK_REFRESH_S = 120.0  # a held lock is rewritten this often
LOCK_STALE_S = 900.0  # a lock older than this belongs to a dead process


@dataclass(frozen=True)
class LockInfo:
    """A lock object as listed: ``kind`` is ``snapshot`` or ``gc``."""

    key: str
    kind: str
    lock_id: str
    age_s: float
    stale: bool

    def describe(self) -> str:
        state = "stale" if self.stale else "live"
        return f"{self.kind} {self.lock_id} ({state}, refreshed {self.age_s:.0f}s ago)"


def lock_key(kind: str, lock_id: str) -> str:
    return f"{LOCK_PREFIX}{kind}-{lock_id}"


def list_locks(storage, now: float, stale_after: float = LOCK_STALE_S) -> list[LockInfo]:
    """Every lock in the repository, with its age against ``now`` (storage clock)."""
    locks = []
    for info in storage.list(LOCK_PREFIX):
        name = info.key[len(LOCK_PREFIX) :]
        kind, sep, lock_id = name.partition("-")
        if not sep or "/" in name:
            continue
        age = max(0.0, now - info.mtime)
        locks.append(LockInfo(info.key, kind, lock_id, age, age > stale_after))
    return locks


class RepositoryLock:
    """A lock object in ``locks/``, kept fresh by a background thread while held.

    Use :meth:`acquire` (raises LockedError on a conflict) and :meth:`release`, or the
    context manager.  :meth:`check` raises if the lock was lost (removed as stale by
    another party, or the refresh failed), which means its protection no longer holds.
    """

    def __init__(
        self,
        repo,
        kind: str,
        lock_id: str,
        *,
        target: str | None = None,
        refresh_every: float = LOCK_REFRESH_S,
        stale_after: float = LOCK_STALE_S,
    ):
        self.repo, self.kind, self.lock_id = repo, kind, lock_id
        self._storage = repo._storage
        self.key = lock_key(kind, lock_id)
        self.refresh_every, self.stale_after = refresh_every, stale_after
        self.body = {
            "kind": kind,
            "id": lock_id,
            "target": target,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "tool_version": __version__,
        }
        self.now = 0.0  # storage clock when acquired
        self.others: list[LockInfo] = []
        self.removed_stale: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: str | None = None
        self._verified_at = 0.0
        self._refreshed_at = time.monotonic()
        self._refresh_error: str | None = None

    def acquire(self, conflicts_with: str) -> RepositoryLock:
        """Write the lock, then refuse if a live lock of kind ``conflicts_with`` exists."""
        self.repo.put_document(self.key, self.body)
        self._refreshed_at = time.monotonic()
        self.now = self._storage.stat(self.key).mtime or time.time()
        self.others = [
            lock
            for lock in list_locks(self._storage, self.now, self.stale_after)
            if lock.key != self.key
        ]
        live = [lock for lock in self.others if lock.kind == conflicts_with and not lock.stale]
        if live:
            self._delete()
            raise LockedError(_conflict_message(self.kind, live), hint=_conflict_hint(self.kind))
        # A stale lock's owner is dead or paused: removing it makes a paused owner fail at
        # its next check() instead of going on unprotected.
        for lock in self.others:
            if lock.kind == conflicts_with and lock.stale:
                self._storage.delete(lock.key)
                self.removed_stale.append(lock.key)
        self._thread = threading.Thread(
            target=self._refresh_loop, name=f"drbackup-lock-{self.kind}", daemon=True
        )
        self._thread.start()
        return self

    def _refresh_loop(self) -> None:
        # A failed refresh is tried again at the next interval; the lock is only lost when
        # it disappeared or went unrefreshed long enough for others to call it stale.
        while not self._stop.wait(self.refresh_every):
            try:
                if not self._storage.exists(self.key):
                    self._lost = "it was removed by another process (considered stale)"
                    return
                self.repo.put_document(self.key, self.body)
                self._refreshed_at = time.monotonic()
            except StorageError as exc:
                self._refresh_error = exc.message

    def check(self, max_age: float = 5.0) -> None:
        """Raise LockedError if the lock is no longer held.

        Looks at storage at most every ``max_age`` seconds (0: always), so it can guard
        every deletion of a long sweep without a request per blob.
        """
        unrefreshed = time.monotonic() - self._refreshed_at
        if self._lost is None and unrefreshed > self.stale_after:
            self._lost = f"it was not refreshed for {unrefreshed:.0f}s ({self._refresh_error})"
        if self._lost is None and time.monotonic() - self._verified_at >= max_age:
            if not self._storage.exists(self.key):
                self._lost = "it was removed by another process (considered stale)"
            self._verified_at = time.monotonic()
        if self._lost is not None:
            raise LockedError(
                f"{self.kind} lock {self.lock_id} was lost: {self._lost}",
                hint="run again; a snapshot or gc must not run for longer than "
                f"{self.stale_after:.0f}s without refreshing its lock",
            )

    def release(self) -> None:
        """Stop refreshing and delete the lock (best effort: a leftover lock goes stale)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._delete()

    def _delete(self) -> None:
        with contextlib.suppress(StorageError):
            self._storage.delete(self.key)

    def __enter__(self) -> RepositoryLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _conflict_message(kind: str, live: list[LockInfo]) -> str:
    names = ", ".join(lock.describe() for lock in live[:3])
    if kind == "gc":
        return f"refusing to delete blobs: a snapshot is running ({names})"
    return f"cannot snapshot while gc deletes blobs ({names})"


def _conflict_hint(kind: str) -> str:
    dead = (
        f"a lock not refreshed for {LOCK_STALE_S / 60:.0f} minutes is a dead process's and ignored"
    )
    if kind == "gc":
        return f"run gc when no snapshot is running (gc --dry-run only reports); {dead}"
    return f"wait for gc to finish, then run the snapshot again; {dead}"
