"""``gc``: mark-and-sweep of bucket-snapshot blobs, and the lock protocol that keeps it safe.

Blobs (``blobs/<2 hex>/<id>``) are shared by every snapshot that holds the same content,
so no snapshot owns them: a blob is garbage when no committed snapshot's index names it.

The protocol (docs/buckets.md) has two lock kinds in ``locks/``:

* a snapshot writes ``locks/snapshot-<backup_id>`` before it reads anything, refreshes it
  while it runs and deletes it after its manifest is written;
* a deleting gc writes ``locks/gc-<id>`` the same way.

Each side writes its own lock first and then lists ``locks/``: if it sees a live lock of
the other kind it withdraws and refuses.  With read-after-write listings (S3, local
disks) two racing parties cannot both miss each other, so blobs are never deleted while a
snapshot may still reference them through a deduplication check.  A lock not refreshed
for ``stale_after`` seconds belongs to a dead process; ages are measured against the
storage's own clock (the modification time of the lock just written), not the host's.
Independently, gc never deletes a blob younger than the grace period.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from drbackup import __version__
from drbackup.errors import LockedError, ObjectNotFoundError, StorageError, UsageError
from drbackup.repository.manifest import (
    BLOB_PREFIX,
    LOCK_PREFIX,
    blob_id_of,
    new_backup_id,
)
from drbackup.sources.buckets.index import INDEX_ITEM_TYPE, iter_entries
from drbackup.storage.base import link_warnings

LOCK_REFRESH_S = 120.0  # a held lock is rewritten this often
LOCK_STALE_S = 900.0  # a lock older than this belongs to a dead process
DEFAULT_GRACE_S = 24 * 3600.0


# --- locks ------------------------------------------------------------------------------


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
        self.now = self.repo.storage.stat(self.key).mtime or time.time()
        self.others = [
            lock
            for lock in list_locks(self.repo.storage, self.now, self.stale_after)
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
                self.repo.storage.delete(lock.key)
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
                if not self.repo.storage.exists(self.key):
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
            if not self.repo.storage.exists(self.key):
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
            self.repo.storage.delete(self.key)

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


# --- mark and sweep ---------------------------------------------------------------------


@dataclass
class BlobInfo:
    key: str
    size: int
    age_s: float


@dataclass
class GcResult:
    """What gc found and did.  ``unreferenced`` lists every blob it deleted or would delete."""

    dry_run: bool
    grace_s: float
    snapshots: int = 0
    referenced: int = 0  # distinct blob ids named by snapshot indexes
    blobs: int = 0  # blobs listed
    blob_bytes: int = 0
    missing: int = 0  # referenced but not in storage: snapshots that cannot fully restore
    unreferenced: list[BlobInfo] = field(default_factory=list)
    young: int = 0  # unreferenced but younger than the grace period: kept
    young_bytes: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    locks: list[LockInfo] = field(default_factory=list)
    stale_locks_removed: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)  # snapshots whose index is gone
    note: str | None = None
    warnings: list[str] = field(default_factory=list)  # links in the repository, not followed

    @property
    def unreferenced_bytes(self) -> int:
        return sum(b.size for b in self.unreferenced)


def collect_garbage(
    repo,
    *,
    dry_run: bool = False,
    grace_s: float = DEFAULT_GRACE_S,
    refresh_every: float = LOCK_REFRESH_S,
    stale_after: float = LOCK_STALE_S,
) -> GcResult:
    """Find (and unless ``dry_run``, delete) blobs no snapshot references.

    A deleting run holds the gc lock from before the mark until the sweep ends; it raises
    LockedError while a live snapshot lock exists.  A dry run writes nothing and only
    notes running snapshots.  Raises IntegrityError if a snapshot index is damaged (gc
    cannot know what it references, so it deletes nothing); a snapshot whose index is
    missing altogether cannot be restored, and is named in ``broken`` instead.
    """
    repo.keyring.require(read=True)
    result = GcResult(dry_run=dry_run, grace_s=grace_s)
    if dry_run:
        now = time.time()
        result.locks = list_locks(repo.storage, now, stale_after)
        live = [lock for lock in result.locks if lock.kind == "snapshot" and not lock.stale]
        if live:
            result.note = f"{len(live)} snapshot(s) running: their new blobs show as unreferenced"
        _mark_and_sweep(repo, result, now, delete=False)
        result.warnings = link_warnings(repo.storage)
        return result
    lock = RepositoryLock(
        repo, "gc", new_backup_id(), refresh_every=refresh_every, stale_after=stale_after
    )
    with lock.acquire(conflicts_with="snapshot"):
        result.locks, result.stale_locks_removed = lock.others, lock.removed_stale
        _mark_and_sweep(repo, result, lock.now, delete=True, lock=lock)
    result.warnings = link_warnings(repo.storage)
    return result


def mark_referenced(repo, result: GcResult) -> set[bytes]:
    """Blob ids (32-byte digests) named by every snapshot index; counts ``result.snapshots``.

    A snapshot removed since the listing references nothing; one whose index objects are
    gone (it can no longer be restored) is named in ``result.broken`` and the run goes on.
    """
    referenced: set[bytes] = set()
    for ref in repo.list_refs():
        try:
            manifest = repo.load_manifest(ref)
        except UsageError:
            continue  # deleted since the listing (a prune running alongside)
        items = [i for i in manifest.items if i.type == INDEX_ITEM_TYPE]
        if not items:
            continue
        try:
            for item in items:
                _mark_index(repo, ref, item, referenced)
        except ObjectNotFoundError:
            if repo.storage.exists(ref.manifest_key):
                result.broken.append(f"{ref.target}/{ref.backup_id}")
            continue
        result.snapshots += 1
    return referenced


def _mark_index(repo, ref, item, referenced: set[bytes]) -> None:
    with repo.open_item(item) as reader:
        for entry in iter_entries(reader, f"{ref.target}/{ref.backup_id} {item.name}"):
            referenced.add(bytes.fromhex(entry.blob))


def _mark_and_sweep(repo, result: GcResult, now: float, *, delete: bool, lock=None) -> None:
    referenced = mark_referenced(repo, result)
    result.referenced = len(referenced)
    seen = 0
    for info in repo.storage.list(BLOB_PREFIX):
        blob_id = blob_id_of(info.key)
        if blob_id is None:
            continue  # not ours: never delete what we cannot name
        result.blobs += 1
        result.blob_bytes += info.size
        if bytes.fromhex(blob_id) in referenced:
            seen += 1
            continue
        age = now - info.mtime
        if age < result.grace_s:
            result.young += 1
            result.young_bytes += info.size
            continue
        result.unreferenced.append(BlobInfo(info.key, info.size, age))
        if delete:
            lock.check()  # never delete after losing the lock
            _delete_blob(repo, info.key)
            result.deleted += 1
            result.deleted_bytes += info.size
    result.missing = result.referenced - seen


def _delete_blob(repo, key: str) -> None:
    with contextlib.suppress(ObjectNotFoundError):
        repo.storage.delete(key)
