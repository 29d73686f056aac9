"""``snapshot minio``: incremental, deduplicated, encrypted snapshots of buckets.

A snapshot is a backup of kind ``bucket``: for each bucket one item stream
``index:<bucket>`` of JSON lines sorted by key (docs/buckets.md), and each object's
content stored once as a blob ``blobs/<2 hex>/<HMAC of its sha256>``.  The listing is
merge-joined with the previous snapshot's index (both sorted), so memory does not grow with
the bucket; objects with the same size, ETag and last-modified reuse their blob without a
download; others are read (``If-Match`` the listed ETag), hashed, and uploaded unless the
blob already exists.  Objects that change or vanish while the snapshot runs, and objects
whose key the S3 client cannot address (a ``.`` or ``..`` segment), are recorded in the
manifest, never a crash.  The manifest is written last; a lock in ``locks/`` keeps
gc from deleting blobs under a running snapshot (actions/gc.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import chain
from typing import TYPE_CHECKING

from drbackup.actions.progress import SILENT, Progress
from drbackup.actions.runs import recorded_run
from drbackup.actions.snapshot_versions import (
    HistoryCapture,
    expect_events,
    list_versions_selected,
    start_history,
)
from drbackup.codec.pipeline import iter_blocks
from drbackup.errors import DrbackupError, SourceError, UsageError, shareable
from drbackup.repository.blobs import ORACLE_LIMIT
from drbackup.repository.locks import LOCK_REFRESH_S, LOCK_STALE_S
from drbackup.repository.manifest import Manifest
from drbackup.sources.buckets.client import (
    BucketClient,
    ListedObject,
    ObjectChangedError,
    ObjectGoneError,
    redact_key,
    unsupported_key_reason,
)
from drbackup.sources.buckets.index import (
    INDEX_ITEM_TYPE,
    IndexEntry,
    encode_entries,
    index_item_name,
    open_index,
)
from drbackup.sources.buckets.listing import (
    check_sorted,
    is_excluded,
    is_unchanged,
    listing_prefixes,
    merge_join,
)
from drbackup.sources.buckets.pool import ordered_map
from drbackup.sources.buckets.versions import HISTORY_ITEM_TYPE, history_item_name

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext

SMALL_OBJECT = 8 << 20  # read whole into memory; larger objects stream (two passes)
KEYS_RECORDED = 100  # keys listed per kind of event in the manifest (counts are exact)


@dataclass
class SnapshotOptions:
    workers: int = 8
    full: bool = False  # ignore the previous snapshot: read every object again
    small_object: int = SMALL_OBJECT
    lock_refresh: float = LOCK_REFRESH_S
    lock_stale: float = LOCK_STALE_S
    oracle_limit: int = ORACLE_LIMIT
    events: bool = False  # event capture is on: report what no event capture held


# --- one bucket -------------------------------------------------------------------------


class SnapshotCancelled(Exception):
    """Raised inside the index stream when the snapshot is interrupted (Ctrl-C, SIGTERM)."""


@dataclass
class Transfer:
    """The outcome for one listed object."""

    status: str  # reused | uploaded | deduplicated | vanished | changed_during_snapshot | skipped
    entry: IndexEntry | None = None
    downloaded: int = 0
    stored: int = 0
    reread: bool = False


@dataclass
class BucketStats:
    objects: int = 0
    bytes: int = 0
    reused: int = 0
    transferred: int = 0
    transferred_bytes: int = 0
    uploaded_blobs: int = 0
    uploaded_bytes: int = 0  # stored (compressed, encrypted) bytes written to the repository
    deduplicated: int = 0
    versioning: str | None = None  # Enabled, Suspended, Off, Unknown (not readable)
    history: dict | None = None  # a versioned bucket's history capture (snapshot_versions.py)
    events: dict[str, dict] = field(
        default_factory=lambda: {
            k: {"count": 0, "keys": []}
            for k in ("reread", "changed_during_snapshot", "vanished", "skipped")
        }
    )

    def note(self, event: str, key: str) -> None:
        record = self.events[event]
        record["count"] += 1
        if len(record["keys"]) < KEYS_RECORDED:
            record["keys"].append(key)

    def add(self, key: str, t: Transfer) -> None:
        if t.reread:
            self.note("reread", key)
        if t.entry is None:
            self.note(t.status, key)
            return
        self.objects += 1
        self.bytes += t.entry.size
        self.reused += t.status == "reused"
        self.deduplicated += t.status == "deduplicated"
        if t.status != "reused":
            self.transferred += 1
            self.transferred_bytes += t.downloaded
        if t.status == "uploaded":
            self.uploaded_blobs += 1
            self.uploaded_bytes += t.stored

    def to_meta(self) -> dict:
        data = {k: v for k, v in self.__dict__.items() if k not in ("events", "history")}
        history = {"history": self.history} if self.history else {}
        return {**data, **self.events, **history}


class BucketSnapshot:
    """Produces one bucket's index entries, transferring what changed (see module doc)."""

    def __init__(self, repo, writer, client: BucketClient, bucket: str, oracle, opts, cancel=None):
        self.repo, self.writer, self.client, self.bucket = repo, writer, client, bucket
        self.oracle, self.opts = oracle, opts
        self.known: dict[str, IndexEntry] = {}  # latest versions the history pass has read
        self.cancel = cancel or threading.Event()
        self.codec = replace(repo.codec, threads=1)  # parallel across objects instead
        self.stats = BucketStats()

    def entries(
        self,
        listing: Iterator[ListedObject],
        previous: Iterator[IndexEntry],
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[IndexEntry]:
        """Index entries in key order; updates ``stats`` as they are produced."""
        pairs = merge_join(
            check_sorted(listing, f"listing of bucket {self.bucket}"),
            check_sorted(previous, f"previous index of bucket {self.bucket}"),
        )
        results = ordered_map(
            self._process, pairs, workers=self.opts.workers, inline=lambda p: is_unchanged(*p)
        )
        with contextlib.closing(results):  # closed with this generator, in its thread
            for (listed, _), transfer in results:
                if self.cancel.is_set():
                    raise SnapshotCancelled("snapshot cancelled")
                self.stats.add(listed.key, transfer)
                if progress and transfer.downloaded:
                    progress(transfer.downloaded)
                if transfer.entry is not None:
                    yield transfer.entry

    def _process(self, pair: tuple[ListedObject, IndexEntry | None]) -> Transfer:
        listed, previous = pair
        if unsupported_key_reason(listed.key):
            return Transfer("skipped")  # named in the manifest and in the command's output
        if is_unchanged(listed, previous):
            return Transfer("reused", previous)
        if is_unchanged(listed, self.known.get(listed.key)):  # read by the history pass
            return Transfer("reused", self.known[listed.key])
        try:
            return self._read(listed, reread=False)
        except ObjectGoneError:
            return Transfer("vanished")
        except ObjectChangedError:
            pass
        try:  # changed between the listing and the read: read the new version once
            transfer = self._read(listed, reread=True)
        except ObjectGoneError:
            return Transfer("vanished", reread=True)
        except ObjectChangedError:
            return Transfer("changed_during_snapshot", reread=True)
        transfer.reread = True
        return transfer

    def _read(self, listed: ListedObject, *, reread: bool) -> Transfer:
        """Read one object (``If-Match`` the listed ETag unless re-reading) and store it."""
        version = getattr(listed, "version_id", None)  # a version is immutable: no If-Match
        if_match = None if reread or version else (listed.etag or None)
        with self._open(listed.key, if_match, version) as obj:
            if obj.size <= self.opts.small_object:
                digest, stored, size = self._small(obj, version)
            else:
                digest, stored, size = self._large(obj, version)
            tags = self.client.get_tags(self.bucket, listed.key, version) if obj.tag_count else {}
        entry = IndexEntry(
            key=listed.key,
            size=size,
            sha256=digest,
            blob=self.repo.blob_id(digest),
            etag=obj.etag or listed.etag,
            # the listing's form, so that the next snapshot can compare it; after a re-read
            # the listing is out of date and the response's own time is recorded instead
            last_modified=obj.last_modified if reread else listed.last_modified,
            content_type=obj.content_type,
            metadata=obj.metadata,
            tags=tags,
            headers=obj.headers,
            version_id=obj.version_id,
        )
        return Transfer("uploaded" if stored else "deduplicated", entry, size, stored or 0)

    def _open(self, key: str, if_match: str | None, version: str | None):
        by_version = {"version_id": version} if version else {}  # only versioned reads name one
        return self.client.open_object(self.bucket, key, if_match=if_match, **by_version)

    def _small(self, obj, _version=None) -> tuple[str, int | None, int]:
        data = b"".join(iter_blocks(obj))
        if len(data) != obj.size:
            message = f"{self.bucket}/{obj.key}: read {len(data)} of {obj.size} bytes"
            raise SourceError(message, redacted=redact_key(message, self.bucket, obj.key))
        digest = hashlib.sha256(data).hexdigest()
        return digest, self._store(self.repo.blob_id(digest), lambda: iter([data])), len(data)

    def _large(self, obj, version=None) -> tuple[str, int | None, int]:
        # The blob's name is its content hash, and the name must be known before the
        # upload (it is bound into the encryption): hash in a first pass, upload in a
        # second GET of the same ETag, without ever holding the object in memory.
        sha, size = hashlib.sha256(), 0
        for block in iter_blocks(obj):
            sha.update(block)
            size += len(block)
        digest = sha.hexdigest()
        again = hashlib.sha256()

        def second_pass() -> Iterator[bytes]:
            with self._open(obj.key, obj.etag, version) as src:
                for block in iter_blocks(src):
                    again.update(block)
                    yield block
            if again.hexdigest() != digest:
                message = f"{self.bucket}/{obj.key}: content changed between reads"
                raise ObjectChangedError(
                    message, redacted=redact_key(message, self.bucket, obj.key)
                )

        return digest, self._store(self.repo.blob_id(digest), second_pass), size

    def _store(self, blob_id: str, blocks: Callable[[], Iterator[bytes]]) -> int | None:
        """Upload the blob unless it exists; stored bytes, or None when deduplicated."""
        if not self.oracle.claim(blob_id):
            return None
        stored = False
        try:
            record = self.repo.put_blob(blob_id, blocks(), self.writer.data_key, self.codec)
            stored = True
            return record.stored_size
        finally:
            self.oracle.done(blob_id, stored)


# --- a whole snapshot -------------------------------------------------------------------


def previous_snapshot(repo, target: str) -> Manifest | None:
    """The newest committed bucket snapshot of ``target`` (None without a read key)."""
    if not repo.keyring.can_read:
        return None  # public-key writers cannot read indexes: every object is read again
    for ref in reversed(repo.list_refs(target)):
        manifest = repo.load_manifest(ref)
        if manifest.kind == "bucket":
            return manifest
    return None


def list_selected(client: BucketClient, bucket: str, include, exclude) -> Iterator[ListedObject]:
    """The bucket's objects under ``include`` (all if empty), minus ``exclude``, sorted."""
    listings = (client.list_objects(bucket, prefix) for prefix in listing_prefixes(include))
    return (o for o in chain.from_iterable(listings) if not is_excluded(o.key, exclude))


def take_snapshot(
    repo,
    client: BucketClient,
    target: str,
    buckets: list[str],
    *,
    include: list[str] = (),
    exclude: list[str] = (),
    options: SnapshotOptions | None = None,
    progress: Progress = SILENT,
) -> Manifest:
    """Snapshot ``buckets`` into ``repo`` as one backup of ``target``; return its manifest.

    Raises SourceError/SourceUnreachableError when the server fails (no manifest is
    written; blobs already stored stay for the next snapshot or gc), LockedError while gc
    deletes blobs.
    """
    opts = options or SnapshotOptions()
    repo.keyring.require(write=True)
    for bucket in buckets:
        client.check_bucket(bucket)  # fail before writing anything
    last = previous_snapshot(repo, target)
    previous = None if opts.full else last
    with repo.new_backup(target, "bucket") as writer:
        lock = repo.lock(
            "snapshot",
            writer.backup_id,
            target=target,
            refresh_every=opts.lock_refresh,
            stale_after=opts.lock_stale,
        )
        with lock.acquire(conflicts_with="gc"):
            oracle = repo.blob_oracle(opts.oracle_limit)
            cancel = threading.Event()
            stats = {}
            # Only objects that changed are read: a total is known for a full read alone.
            total = last.meta.get("bytes") if last is not None and previous is None else None
            with progress.phase(f"snapshot {target}", "read", total, estimate=True) as tick:
                for bucket in buckets:
                    job = BucketSnapshot(repo, writer, client, bucket, oracle, opts, cancel)
                    selected = (include, exclude)
                    stats[bucket] = _snapshot_bucket(job, writer, (last, previous), selected, tick)
            writer.recovery_point = datetime.now(UTC)  # every object was read before this
            writer.meta.update(_snapshot_meta(client, stats, include, exclude, previous, opts))
            lock.check(max_age=0)
            return writer.commit()


def _snapshot_bucket(job: BucketSnapshot, writer, before, selected, tick) -> BucketStats:
    """Index one bucket (its history first, for a versioned one); its statistics.
    ``before``: the last snapshot and the one compared with; ``selected``: include, exclude."""
    (last, previous), (include, exclude) = before, selected
    history = capture_history(job, writer, last, previous, include, exclude)
    job.known = history.latest if history else {}
    with open_index(job.repo.open_item, previous, job.bucket) as prev_entries:
        listing = list_selected(job.client, job.bucket, include, exclude)
        blocks = encode_entries(job.entries(listing, prev_entries, tick))
        item = _interruptible(
            lambda b=job.bucket, blocks=blocks: writer.add_stream(
                index_item_name(b), INDEX_ITEM_TYPE, blocks, {"bucket": b}
            ),
            job.cancel,
        )
    item.meta.update(objects=job.stats.objects, bytes=job.stats.bytes)
    job.stats.history = history.stats.to_meta() if history else None
    return job.stats


def capture_history(job: BucketSnapshot, writer, last, previous, include, exclude):
    """Write ``history:<bucket>`` for a versioned bucket (docs/buckets.md, "Version
    history"); the History (stats, latest versions read), or None if not versioned."""
    job.stats.versioning = job.client.versioning(job.bucket)
    history = start_history(job.stats.versioning, job.bucket, last)
    if history is None:
        return None
    if job.opts.events and history.stats.chained_from is not None:
        expect_events(job.repo, history, last, job.bucket)
    capture = HistoryCapture(job, history)
    with open_index(job.repo.open_item, previous, job.bucket) as prev_entries:
        versions = list_versions_selected(job.client, job.bucket, include, exclude)
        blocks = encode_entries(capture.entries(versions, prev_entries))
        name = history_item_name(job.bucket)
        item = _interruptible(
            lambda: writer.add_stream(name, HISTORY_ITEM_TYPE, blocks, {"bucket": job.bucket}),
            job.cancel,
        )
    stats = history.stats
    item.meta.update(versions=stats.versions, delete_markers=stats.delete_markers)
    return history


def _interruptible(fn: Callable, cancel: threading.Event):
    """Run ``fn`` in a helper thread; on Ctrl-C/SIGTERM set ``cancel`` and wait for it to stop.

    The index stream is pulled by the storage backend, for S3 from a transfer thread that
    knows nothing of signals; without this, an interrupted snapshot would go on reading
    the whole bucket before the interrupt could take effect.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="drbackup-index") as pool:
        future = pool.submit(fn)
        try:
            return future.result()
        except BaseException:
            cancel.set()
            with contextlib.suppress(
                BaseException
            ):  # waits for the index thread; the first error is raised
                future.result()
            raise


def _snapshot_meta(client, stats: dict[str, BucketStats], include, exclude, previous, opts):
    return {
        "endpoint": client.endpoint,
        "buckets": {name: s.to_meta() for name, s in stats.items()},
        "objects": sum(s.objects for s in stats.values()),
        "bytes": sum(s.bytes for s in stats.values()),
        "uploaded_bytes": sum(s.uploaded_bytes for s in stats.values()),
        "include_prefixes": list(include),
        "exclude_prefixes": list(exclude),
        "previous_snapshot": previous.backup_id if previous else None,
        "incremental": previous is not None,
        "recovery_point_note": "every object was read at or before the recovery point",
    }


# --- from the configuration -------------------------------------------------------------


def minio_target(app: AppContext, name: str):
    """The ``minio.<name>`` config entry; UsageError if it is unknown or not a bucket target."""
    cfg = app.config.target(name)
    if getattr(cfg, "kind", None) != "minio":
        raise UsageError(
            f"target '{name}' is a {cfg.kind} target, not a minio target",
            hint="'drbackup snapshot minio' takes targets under 'minio:'",
        )
    return cfg


def snapshot_target(
    app: AppContext,
    name: str,
    *,
    options: SnapshotOptions | None = None,
    progress: Progress = SILENT,
) -> Manifest:
    """Snapshot one configured target; record the run in the catalog (best effort)."""
    cfg = minio_target(app, name)
    opts = replace(options or SnapshotOptions(), events=cfg.events_token is not None)
    with recorded_run(app.index, "snapshot", name) as run:  # its error texts name no keys
        client = BucketClient.from_target(name, cfg, max_connections=opts.workers + 4)
        manifest = take_snapshot(
            app.repository(),
            client,
            name,
            list(cfg.buckets),
            include=list(cfg.include_prefixes),
            exclude=list(cfg.exclude_prefixes),
            options=opts,
            progress=progress,
        )
        run.backup_id = manifest.backup_id
    app.index.record_backup(app.repository(), manifest)
    return manifest


def snapshot_targets(
    app: AppContext,
    names: list[str],
    *,
    options: SnapshotOptions | None = None,
    progress: Progress = SILENT,
) -> list[Manifest]:
    """Snapshot each target in turn; every target runs, the error lists those that failed."""
    for name in names:
        minio_target(app, name)  # unknown names fail before any work
    manifests, failures = [], []
    for name in names:
        try:
            manifests.append(snapshot_target(app, name, options=options, progress=progress))
        except DrbackupError as exc:
            if len(names) == 1:
                raise
            failures.append((name, exc))
    if failures:
        head = f"{len(failures)} of {len(names)} snapshots failed: "
        first = failures[0][1]
        error = type(first)(
            head + "; ".join(f"{n}: {e.message}" for n, e in failures), hint=first.hint
        )
        error.redacted = head + "; ".join(f"{n}: {shareable(e)}" for n, e in failures)
        raise error
    return manifests
