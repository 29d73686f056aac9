"""Leases: a running writer's heartbeat in the repository, so that no prune on any host takes
its data for a leftover.

``leases/<target>/<backup_id>`` is written before the backup's first data object, rewritten
every ``renew_every`` seconds while the writer runs, and deleted once the manifest is written
or the data removed.  Only its name and its storage modification time carry meaning; the
body (an encrypted document naming host, pid and start time) is for people.  The format and
the reasoning are in docs/repository-format.md ("Leases") and docs/operations.md ("The
commit protocol").

Two clocks, two rules, one margin between them:

* **prune** counts a lease live until it went unrenewed for ``max(leftover grace,
  LEASE_EXPIRY_S)`` on the storage's clock (its modification time), and removes a leftover
  only after that: lease first, then (no manifest appeared) the data;
* **the writer** holds itself to half of ``LEASE_EXPIRY_S`` on its own clock
  (``CLOCK_BOOTTIME``: a suspended host's sleep counts).  Past that without a successful
  renewal, the lease is *lost*: it is never written again (the write could re-create a
  lease prune has just removed, right before prune deletes the data) and the writer
  refuses to commit.  Each renewal is measured from before its check to after its write,
  so a pause anywhere inside it counts.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from datetime import UTC, datetime

from drbackup import __version__
from drbackup.errors import LeaseLostError, StorageError
from drbackup.repository.manifest import lease_key

LEASE_RENEW_S = 60.0  # a held lease is rewritten this often
LEASE_EXPIRY_S = 900.0  # prune never takes a lease renewed less than this ago for a dead one


def _clock() -> float:
    """Seconds on a clock that keeps running while the host is suspended (Linux), else
    the monotonic clock."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class Lease:
    """One writer's lease; :meth:`acquire`, then :meth:`check` before committing and
    :meth:`release` after (see the module docstring for the rules)."""

    def __init__(
        self,
        repo,
        target: str,
        backup_id: str,
        *,
        renew_every: float = LEASE_RENEW_S,
        expiry: float = LEASE_EXPIRY_S,
    ):
        self.repo, self.target, self.backup_id = repo, target, backup_id
        self.key = lease_key(target, backup_id)
        self.renew_every = renew_every
        self.limit = expiry / 2  # the writer's own rule: half of what prune waits
        self.body = {
            "kind": "lease",
            "target": target,
            "backup_id": backup_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "renew_every_s": renew_every,
            "tool_version": __version__,
        }
        self._renewed_at: float | None = None  # clock before the last successful write
        self._lost: str | None = None
        self._error: str | None = None  # the last failed renewal's message
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._renewed_at is not None

    def acquire(self) -> None:
        """Write the lease and start renewing it; raises what the storage raises."""
        started = _clock()
        self.repo.put_document(self.key, self.body)
        self._renewed_at = started
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"drbackup-lease-{self.backup_id}", daemon=True
        )
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.renew_every):
            self.renew()

    def renew(self) -> None:
        """One renewal (the background thread calls it); never raises.

        A failed write is tried again at the next interval; the lease is lost once it is
        gone from storage or went unrenewed past the limit.
        """
        with self._write_lock:
            if self._lost or self._stop.is_set() or self._renewed_at is None:
                return
            started = _clock()
            if self._overdue(started):
                return
            try:
                if not self.repo._storage.exists(self.key):
                    self._lost = _REMOVED
                    return
                self.repo.put_document(self.key, self.body)
            except StorageError as exc:
                self._error = exc.message
                return
            if not self._overdue(_clock()):  # a pause inside this renewal counts too
                self._renewed_at = started

    def _overdue(self, now: float) -> bool:
        """Mark the lease lost when ``now`` is past the limit since the last renewal."""
        unrenewed = now - self._renewed_at
        if unrenewed > self.limit:
            cause = f": {self._error}" if self._error else " (process paused or host asleep?)"
            self._lost = f"it was not renewed for {unrenewed:.0f}s{cause}"
        return self._lost is not None

    def fresh(self) -> bool:
        """True while no prune can have judged the lease expired (renewed within the limit)."""
        return self._renewed_at is not None and _clock() - self._renewed_at <= self.limit

    def stop(self) -> None:
        """Stop renewing (the lease object stays); waits for a renewal in progress."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def check(self) -> None:
        """Raise LeaseLostError unless the lease is held: renewed within the limit and still
        in storage (one HEAD).  Call after :meth:`stop`, right before the manifest PUT."""
        with self._write_lock:
            if self._lost is None:
                self._overdue(_clock())
            if self._lost is None and not self.repo._storage.exists(self.key):
                self._lost = _REMOVED
        if self._lost is not None:
            raise lost_error(self.target, self.backup_id, self._lost, self.limit)

    def still_present(self) -> bool:
        """Whether the lease object still exists (raises what the storage raises)."""
        return self.repo._storage.exists(self.key)

    def release(self) -> None:
        """Stop renewing and delete the lease (best effort: a leftover lease expires)."""
        self.stop()
        with contextlib.suppress(StorageError):
            self.repo._storage.delete(self.key)


_REMOVED = "it was removed by another process (prune took the backup for an abandoned one)"


def lost_error(target: str, backup_id: str, reason: str, limit: float) -> LeaseLostError:
    return LeaseLostError(
        f"backup {target}/{backup_id} lost its lease: {reason}; not committed",
        hint="run the backup again; a backup whose lease cannot be renewed (storage "
        f"unreachable, process paused) for {limit:.0f}s stops rather than commit over data "
        "prune may have removed",
    )
