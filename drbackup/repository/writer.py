"""Writing one backup: a lease, the data objects, then the manifest (the commit).

The commit protocol (docs/operations.md, "The commit protocol"):

1. the lease ``leases/<t>/<id>`` is written before the first data object and renewed while
   the writer runs (repository/lease.py);
2. data objects go under ``data/<t>/<id>/``, nothing references them yet; each is checked
   with a stat after its upload;
3. right before the manifest: stop renewing, check that the lease is held and still in
   storage, and that every data object is in storage with the size written;
4. PUT the manifest.  If the PUT raises, read it back (repository/commit.py): present means
   committed; proven absent means not committed, and the data may go; unknown means the
   data stays (prune removes it later, safely, if no manifest turns up) and the run fails
   with :class:`CommitUncertainError` (exit 4) naming the backup;
5. if the lease was no longer fresh by then (the process was paused), confirm it is still
   in storage: if prune removed it meanwhile the data may be going, so the manifest is
   deleted again and the run fails;
6. delete the lease.

The data of an uncommitted backup is deleted only while no manifest for it can exist:
before the manifest PUT was sent, or once it is proven absent.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from drbackup import __version__
from drbackup.codec.keys import DataKey
from drbackup.codec.pipeline import ObjectRecord, encode_to_bytes, encode_to_storage
from drbackup.errors import CommitUncertainError, IntegrityError, StorageError
from drbackup.repository.commit import ABSENT, UNKNOWN, put_and_resolve
from drbackup.repository.lease import Lease, lost_error
from drbackup.repository.manifest import (
    BackupRef,
    Item,
    Manifest,
    data_key,
    data_prefix,
    new_backup_id,
)

_OPEN, _UNCERTAIN, _ABSENT, _COMMITTED = "open", "uncertain", "absent", "committed"


@dataclass
class _Segmenter:
    """Splits a block stream into segments of at most ``limit`` plaintext bytes."""

    blocks: Iterator[bytes]
    limit: int
    pending: bytes | None = None
    exhausted: bool = False

    def has_more(self) -> bool:
        if self.pending is None and not self.exhausted:
            self.pending = next(self.blocks, None)
            self.exhausted = self.pending is None
        return self.pending is not None

    def segment(self) -> Iterator[bytes]:
        used = 0
        while used < self.limit and self.has_more():
            block, self.pending = self.pending, None
            room = self.limit - used
            if len(block) > room:
                block, self.pending = block[:room], block[room:]
            used += len(block)
            yield block


class BackupWriter:
    """Writes one backup: data objects first, then :meth:`commit` writes the manifest.

    Used as a context manager: leaving the block without a commit (an error, Ctrl-C)
    deletes the data objects written so far and the lease (best effort), unless the
    manifest may have been written (see the module docstring); a crash leaves them as
    invisible leftovers that ``prune`` removes once the lease has expired.
    """

    def __init__(self, repo, target: str, kind: str):
        self.repo, self.target, self.kind = repo, target, kind
        self.started = _start_after(repo.list_refs(target))
        self.backup_id = new_backup_id(self.started)
        self._data_key: DataKey | None = None  # made on first use: see data_key
        self._data_key_lock = threading.Lock()
        self.items: list[Item] = []
        self.meta: dict = {}
        self.recovery_point: datetime | None = None
        self.committed: Manifest | None = None
        renew_every, expiry = repo.lease_timing
        self._lease = Lease(repo, target, self.backup_id, renew_every=renew_every, expiry=expiry)
        self._state = _OPEN

    @property
    def ref(self) -> str:
        return f"{self.target}/{self.backup_id}"

    @property
    def data_key(self) -> DataKey:
        """The backup's data key, made when the first object is sealed: with a passphrase
        still being stretched in the background, the source is already started by then."""
        with self._data_key_lock:  # segments may be stored from several threads
            if self._data_key is None:
                self._data_key = self.repo.keyring.new_data_key()
            return self._data_key

    def add_stream(
        self,
        name: str,
        type_: str,
        blocks: Iterator[bytes],
        meta: dict | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> Item:
        """Store a stream as one item (split into segments); return its record."""
        self._hold_lease()
        index = len(self.items)
        seg = _Segmenter(iter(blocks), self.repo.segment_size)
        whole = hashlib.sha256()

        def tap(stream: Iterator[bytes]) -> Iterator[bytes]:
            for block in stream:
                whole.update(block)
                yield block

        records: list[ObjectRecord] = []
        while not records or seg.has_more():
            key = data_key(self.target, self.backup_id, index, len(records))
            if records:  # later segments: the item digest needs their bytes too
                records.append(self._store(key, tap(seg.segment()), progress))
            else:  # the first segment's digest is the item's so far: hash once
                records.append(self._store(key, seg.segment(), progress, plain_sha=whole))
        item = Item(
            name=name,
            type=type_,
            size=sum(r.size for r in records),
            sha256=whole.hexdigest(),
            objects=records,
            meta=meta or {},
        )
        self.items.append(item)
        return item

    def _hold_lease(self) -> None:
        if not self._lease.held:
            self._lease.acquire()

    def _store(self, key: str, blocks: Iterator[bytes], progress, plain_sha=None) -> ObjectRecord:
        dk = self.data_key
        record = encode_to_storage(
            self.repo._storage,
            key,
            blocks,
            slot_type=dk.slot_type,
            slot=dk.slot,
            data_key=dk.key,
            settings=self.repo.codec,
            progress=progress,
            plain_sha=plain_sha,
        )
        stored = self.repo._storage.stat(key)
        if stored.size != record.stored_size:
            raise IntegrityError(
                f"{key}: storage reports {stored.size} bytes after upload, {record.stored_size} were sent"
            )
        return record

    # --- the commit -----------------------------------------------------------------------

    def commit(self) -> Manifest:
        """Write the manifest: from this moment the backup exists (see the module docstring).

        Raises LeaseLostError or IntegrityError when the lease or data was removed under
        the writer (nothing committed), the storage error of a manifest PUT proven not to
        have happened, CommitUncertainError (exit 4) when that cannot be told.
        """
        manifest = self._manifest()
        body = self._encode(manifest)
        self._hold_lease()
        self._lease.stop()
        self._lease.check()
        self._check_data()
        self._state = _UNCERTAIN
        outcome = put_and_resolve(self.repo._storage, manifest.ref.manifest_key, body)
        if outcome.state == ABSENT:
            self._state = _ABSENT
            raise outcome.error
        if outcome.state == UNKNOWN:
            raise self._uncertain(
                f"cannot tell whether its manifest was written ({outcome.reason})"
            )
        self._confirm_lease(manifest.ref)
        self._state = _COMMITTED
        self.committed = manifest
        self._lease.release()
        return manifest

    def _manifest(self) -> Manifest:
        return Manifest(
            backup_id=self.backup_id,
            target=self.target,
            kind=self.kind,
            repository_id=self.repo.id,
            started_at=_iso(self.started),
            finished_at=_iso(datetime.now(UTC)),
            recovery_point=_iso(self.recovery_point) if self.recovery_point else None,
            tool_version=__version__,
            items=self.items,
            meta=self.meta,
        )

    def _encode(self, manifest: Manifest) -> bytes:
        dk = self.data_key
        body = json.dumps(manifest.to_dict(), sort_keys=True).encode()
        data, _ = encode_to_bytes(
            manifest.ref.manifest_key,
            body,
            slot_type=dk.slot_type,
            slot=dk.slot,
            data_key=dk.key,
            settings=self.repo.codec,
        )
        return data

    def _check_data(self) -> None:
        """Raise IntegrityError unless every data object is in storage with its size."""
        stored = {
            info.key: info.size
            for info in self.repo._storage.list(data_prefix(self.target, self.backup_id))
        }
        for record in (r for item in self.items for r in item.objects):
            size = stored.get(record.key)
            if size is None:
                problem = "is missing right before the commit (removed under the running backup)"
            elif size != record.stored_size:
                problem = f"has {size} bytes in storage, {record.stored_size} were written"
            else:
                continue
            raise IntegrityError(
                f"backup {self.ref}: data object {record.key} {problem}; not committed",
                hint="run the backup again; data of a running backup is removed only by "
                "hand, an older drbackup's prune or a lifecycle rule on the bucket",
            )

    def _confirm_lease(self, ref: BackupRef) -> None:
        """After the manifest PUT: if the lease went stale meanwhile, make sure prune did not
        remove it (and with it, the data); if it did, take the manifest back and fail."""
        if self._lease.fresh():
            return  # no prune can have judged it expired: the data is safe
        try:
            if self._lease.still_present():
                return  # prune removes the lease before the data: it has not started
            self.repo._storage.delete(ref.manifest_key)
        except StorageError as exc:
            raise self._uncertain(
                "its manifest was written after a long pause, and whether prune removed "
                f"its data meanwhile cannot be checked ({exc.message})"
            ) from exc
        self._state = _ABSENT
        raise lost_error(
            self.target, self.backup_id, "it was removed during a pause", self._lease.limit
        )

    def _uncertain(self, what: str) -> CommitUncertainError:
        return CommitUncertainError(
            f"backup {self.ref}: {what}; its data is kept",
            hint=f"when the storage answers again, 'drbackup list --target {self.target}' shows "
            f"whether the backup exists and 'drbackup verify {self.ref}' checks it; if it is "
            "not listed, 'drbackup prune' removes its data after the leftover grace",
        )

    # --- cleaning up ----------------------------------------------------------------------

    def abort(self) -> None:
        """Clean up an uncommitted backup (best effort; never raises a storage error).

        Data and lease are removed only while no manifest can exist; otherwise (a manifest
        PUT with an unknown outcome, Ctrl-C during it) both stay: a committed backup then
        keeps its data, and prune removes the data of one that never committed.
        """
        self._lease.stop()
        if self._state in (_UNCERTAIN, _COMMITTED):
            return
        prefix = data_prefix(self.target, self.backup_id)
        try:
            for info in list(self.repo._storage.list(prefix)):
                self.repo._storage.delete(info.key)
            if self._state == _ABSENT:
                self._retract_late_manifest()
        except StorageError:
            return  # the lease expires, and prune removes what is left
        if self._lease.held:
            self._lease.release()

    def _retract_late_manifest(self) -> None:
        # A PUT proven absent could still land late (a request delayed on the way): a
        # manifest appearing after its data was deleted must not stay.
        key = BackupRef(self.backup_id, self.target).manifest_key
        if self.repo._storage.exists(key):
            self.repo._storage.delete(key)

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.committed is None:
            self.abort()


def _start_after(refs: list[BackupRef]) -> datetime:
    """Now, or a moment later if the target's newest id already names this millisecond.

    Ids sort by start time to the millisecond; backups of one target never overlap, so
    this keeps a target's ids in time order (``list_refs()[-1]`` is the newest backup).
    """
    now = datetime.now(UTC)
    while refs and refs[-1].backup_id[:20] >= new_backup_id(now)[:20]:
        time.sleep(0.001)
        now = datetime.now(UTC)
    return now


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
