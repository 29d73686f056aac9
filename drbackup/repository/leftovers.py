"""Leftovers of interrupted writes: found by name, kept while their writer may live.

For one target, per backup id:

* **data** under ``data/<t>/<id>/`` without a manifest: an interrupted backup, or one
  still running;
* **temporaries** under that directory: local ``.tmp-*`` files of a killed write
  (``list_incomplete``, a storage's optional method);
* the **lease** ``leases/<t>/<id>``: of a running writer, a dead one, or one killed after
  its manifest PUT (the backup is then committed and only the lease is left over).

A leftover goes only when its writer is gone, proven by two clocks, never by age alone:
nothing under it was written for the grace, and its lease (if any) went unrenewed for
``max(grace, LEASE_EXPIRY_S)``.  :func:`remove_leftover` then stats the lease once more,
deletes it (a writer waking up now finds it gone and refuses to commit), checks that no
manifest appeared, and only then deletes the data.  See docs/operations.md, "The commit
protocol", for why a writer cannot commit over data removed this way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from drbackup.errors import ObjectNotFoundError
from drbackup.repository.lease import LEASE_EXPIRY_S
from drbackup.repository.manifest import (
    BLOB_PREFIX,
    DATA_PREFIX,
    backup_id_under,
    lease_key,
    lease_prefix,
    manifest_key,
)
from drbackup.storage.base import ObjectInfo

LIVE, EXPIRED, NO_LEASE = "live", "expired", "none"
YOUNG = "kept (younger than grace)"
COMMITTED_MEANWHILE = "kept (committed meanwhile)"
REMOVED = "removed"


def lease_expiry(grace: timedelta) -> timedelta:
    """How long prune counts a lease live after its last renewal."""
    return max(grace, timedelta(seconds=LEASE_EXPIRY_S))


@dataclass
class Leftover:
    """What an interrupted (or running) write left under one backup id."""

    target: str
    backup_id: str
    objects: list[ObjectInfo] = field(default_factory=list)
    temporaries: list[ObjectInfo] = field(default_factory=list)
    lease: ObjectInfo | None = None
    committed: bool = False  # a manifest exists: only the lease is left over

    @property
    def size(self) -> int:
        return sum(info.size for info in [*self.objects, *self.temporaries])

    def last_written(self) -> datetime:
        """The newest of the backup's start (its id) and its objects' writes."""
        times = [_mtime(info.mtime) for info in [*self.objects, *self.temporaries]]
        return max([_id_time(self.backup_id), *times])

    def lease_state(self, now: datetime, grace: timedelta) -> str:
        if self.lease is None:
            return NO_LEASE
        return LIVE if _is_live(self.lease, now, grace) else EXPIRED

    def kept_because(self, now: datetime, grace: timedelta) -> str | None:
        """Why the leftover must stay (its writer may be alive), or None if it may go."""
        if not self.committed and now - self.last_written() < grace:
            return YOUNG
        if self.lease_state(now, grace) == LIVE:
            return _alive(now - _mtime(self.lease.mtime))
        return None


def find_leftovers(storage, target: str, committed: set[str]) -> list[Leftover]:
    """Every leftover of ``target`` (ids in ``committed`` have a manifest), by backup id."""
    found: dict[str, Leftover] = defaultdict(lambda: Leftover(target, ""))
    data = f"{DATA_PREFIX}{target}/"
    for info in storage.list(data):
        backup_id = backup_id_under(info.key, data)
        if backup_id and backup_id not in committed and info.key.count("/") == 3:
            found[backup_id].objects.append(info)
    for info in _temporaries(storage, data):
        if (backup_id := backup_id_under(info.key, data)) is not None:
            found[backup_id].temporaries.append(info)
    for info in storage.list(lease_prefix(target)):
        backup_id = backup_id_under(info.key, lease_prefix(target))
        if backup_id is not None and info.key == lease_key(target, backup_id):
            found[backup_id].lease = info
    for backup_id, left in found.items():
        left.backup_id, left.committed = backup_id, backup_id in committed
    return [found[backup_id] for backup_id in sorted(found)]


def remove_leftover(storage, left: Leftover, now: datetime, grace: timedelta) -> str:
    """Remove ``left`` in the order that never races its writer; return what happened.

    Lease first, after checking it was not renewed since it was listed; then, unless a
    manifest appeared meanwhile, the data and temporaries.  Raises what the storage raises.
    """
    key = lease_key(left.target, left.backup_id)
    try:
        lease = storage.stat(key)
    except ObjectNotFoundError:
        lease = None
    if lease is not None:
        if _is_live(lease, now, grace):
            return _alive(now - _mtime(lease.mtime))
        storage.delete(key)  # from here on, the writer (if it wakes up) cannot commit
    if not left.committed and storage.exists(manifest_key(left.target, left.backup_id)):
        return COMMITTED_MEANWHILE
    for info in [*left.objects, *left.temporaries]:  # a committed backup's: none of its data
        storage.delete(info.key)
    return REMOVED


def data_leftovers(storage, target: str, committed: set[str]) -> dict[str, list[ObjectInfo]]:
    """``{backup_id: [ObjectInfo]}`` of data under ``data/<target>/`` without a manifest."""
    return {
        left.backup_id: left.objects
        for left in find_leftovers(storage, target, committed)
        if left.objects
    }


def remove_stray_temporaries(
    storage, now: datetime, grace: timedelta, *, dry_run: bool, keep_blobs: Callable[[], bool]
) -> list[dict]:
    """Remove temporaries of killed writes outside ``data/`` older than ``grace``; report them.

    Those under ``data/`` belong to a backup and go with its leftover.  Documents are
    written in one go, so an old temporary is a dead writer's; a blob's is also kept while
    ``keep_blobs()`` says a snapshot runs (its upload may be slow).  Young ones are not
    listed.  Returns ``{key, age_s, action}`` records.
    """
    stray = [
        info
        for info in _temporaries(storage, "")
        if not info.key.startswith(DATA_PREFIX) and now - _mtime(info.mtime) >= grace
    ]
    running = bool(stray) and keep_blobs()
    records = []
    for info in stray:
        if running and info.key.startswith(BLOB_PREFIX):
            action = "kept (a snapshot is running)"
        elif dry_run:
            action = "would remove"
        else:
            storage.delete(info.key)
            action = REMOVED
        age = round((now - _mtime(info.mtime)).total_seconds())
        records.append({"key": info.key, "age_s": age, "action": action})
    return records


def _temporaries(storage, prefix: str) -> list[ObjectInfo]:
    probe = getattr(storage, "list_incomplete", None)
    return list(probe(prefix)) if probe is not None else []


def _is_live(lease: ObjectInfo, now: datetime, grace: timedelta) -> bool:
    return now - _mtime(lease.mtime) < lease_expiry(grace)


def _alive(age: timedelta) -> str:
    return f"kept (writer alive: lease renewed {max(0, age.total_seconds()):.0f}s ago)"


def _id_time(backup_id: str) -> datetime:
    return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def _mtime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
