"""``gc``: mark-and-sweep of bucket-snapshot blobs, under the repository's gc lock.

Blobs are shared by every snapshot that holds the same content, so no snapshot owns them:
a blob is garbage when no committed snapshot's index names it.  A deleting gc holds the
gc lock (repository/locks.py: the protocol that keeps gc and snapshots apart) from before
the mark until the sweep ends.  Independently, gc never deletes a blob younger than the
grace period.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from drbackup.errors import ObjectNotFoundError, UsageError
from drbackup.repository.locks import LOCK_REFRESH_S, LOCK_STALE_S, LockInfo
from drbackup.repository.manifest import new_backup_id
from drbackup.sources.buckets.index import INDEX_ITEM_TYPE, iter_entries

DEFAULT_GRACE_S = 24 * 3600.0


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
        result.locks = repo.list_locks(now, stale_after)
        live = [lock for lock in result.locks if lock.kind == "snapshot" and not lock.stale]
        if live:
            result.note = f"{len(live)} snapshot(s) running: their new blobs show as unreferenced"
        _mark_and_sweep(repo, result, now, delete=False)
        result.warnings = repo.storage_warnings()
        return result
    lock = repo.lock("gc", new_backup_id(), refresh_every=refresh_every, stale_after=stale_after)
    with lock.acquire(conflicts_with="snapshot"):
        result.locks, result.stale_locks_removed = lock.others, lock.removed_stale
        _mark_and_sweep(repo, result, lock.now, delete=True, lock=lock)
    result.warnings = repo.storage_warnings()
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
            if repo.has_manifest(ref):
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
    for info, blob_id in repo.list_blobs():  # only what is named like a blob: never others
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
            repo.delete_blob(info.key)
            result.deleted += 1
            result.deleted_bytes += info.size
    result.missing = result.referenced - seen
