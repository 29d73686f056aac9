"""Event-driven capture: the keys a bucket's event notifications named, captured at once.

The daemon receives S3 event notifications (sources/buckets/events.py) and hands the keys
to :func:`capture_keys`, which lists each key's versions, reads the ones modified in the
last ``HISTORY_MARGIN`` (content-addressed blobs, as snapshots store them) and commits a
backup of kind ``bucket-events`` holding one ``history:<bucket>`` item per bucket, in the
history format of snapshots.  A restore to a second merges these captures with the
snapshots' histories (actions/restore_history.py).  A key that no longer exists when it
is captured is recorded (``gone``), never an error.  The scheduled snapshot stays the
safety net: its history names what no event capture held (``missed_by_events``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from drbackup.actions.snapshot_minio import (
    BucketSnapshot,
    SnapshotOptions,
    encode_entries,
    minio_target,
)
from drbackup.actions.snapshot_versions import (
    EVENTS_KIND,
    HISTORY_MARGIN,
    History,
    HistoryCapture,
    HistoryStats,
)
from drbackup.repository.manifest import Manifest
from drbackup.sources.buckets.client import BucketClient
from drbackup.sources.buckets.events import BucketEvent
from drbackup.sources.buckets.versions import (
    HISTORY_ITEM_TYPE,
    ListedVersion,
    history_item_name,
    iso_text,
)

KEYS_RECORDED = 100


@dataclass
class PendingKeys:
    """Keys waiting for capture: ``(bucket, key)`` → when the first event for it arrived."""

    keys: dict[tuple[str, str], datetime] = field(default_factory=dict)
    events: int = 0

    def add(self, event: BucketEvent, received: datetime) -> None:
        self.keys.setdefault((event.bucket, event.key), received)
        self.events += 1


class EventQueue:
    """Changed keys per target, filled by the HTTP handler, drained by the capture worker."""

    def __init__(self):
        self._lock = threading.Condition()
        self._pending: dict[str, PendingKeys] = {}

    def add(self, target: str, events: list[BucketEvent], received: datetime) -> None:
        with self._lock:
            pending = self._pending.setdefault(target, PendingKeys())
            for event in events:
                pending.add(event, received)
            self._lock.notify_all()

    def take(self, timeout: float) -> dict[str, PendingKeys]:
        """Everything pending (waiting up to ``timeout`` seconds for something)."""
        with self._lock:
            if not self._pending:
                self._lock.wait(timeout)
            taken, self._pending = self._pending, {}
            return taken

    def put_back(self, target: str, pending: PendingKeys) -> None:
        """Keys whose capture failed wait for the next attempt."""
        with self._lock:
            again = self._pending.setdefault(target, PendingKeys())
            for where, received in pending.keys.items():
                again.keys.setdefault(where, received)
            again.events += pending.events


def capture_keys(app, target: str, pending: PendingKeys, *, workers: int = 4) -> Manifest:
    """Capture the recent versions of ``pending`` keys of ``target`` as one commit.

    Raises SourceError/SourceUnreachableError (the caller puts the keys back), LockedError
    while gc deletes blobs.
    """
    cfg = minio_target(app, target)
    repo = app.repository()
    repo.keyring.require(write=True)
    client = BucketClient.from_target(target, cfg, max_connections=workers + 4)
    opts = SnapshotOptions(workers=workers)
    by_bucket: dict[str, list[str]] = {}
    for bucket, key in sorted(pending.keys):
        by_bucket.setdefault(bucket, []).append(key)
    with repo.new_backup(target, EVENTS_KIND) as writer:
        lock = repo.lock("snapshot", writer.backup_id, target=target)
        with lock.acquire(conflicts_with="gc"):
            oracle = repo.blob_oracle(opts.oracle_limit)
            meta = {"capture": "events", "events": pending.events, "buckets": {}}
            gone = {"count": 0, "keys": []}
            for bucket, keys in by_bucket.items():
                job = BucketSnapshot(repo, writer, client, bucket, oracle, opts)
                after = iso_text(min(pending.keys[(bucket, k)] for k in keys) - HISTORY_MARGIN)
                stats = _capture_bucket(job, writer, keys, after, gone)
                meta["buckets"][bucket] = stats.to_meta()
            now = datetime.now(UTC)
            writer.recovery_point = now
            first = min(pending.keys.values())
            meta.update(gone=gone, keys=len(pending.keys), lag_s=(now - first).total_seconds())
            writer.meta.update(meta)
            return writer.commit()


def _capture_bucket(job, writer, keys: list[str], after: str, gone: dict) -> HistoryStats:
    until = iso_text(datetime.now(UTC))
    stats = HistoryStats("events", since=after, until=until, chained_from=None)
    capture = HistoryCapture(job, History(stats, after))
    versions = _versions_of(job.client, job.bucket, keys, gone)
    blocks = encode_entries(capture.entries(versions, []))
    name = history_item_name(job.bucket)
    writer.add_stream(name, HISTORY_ITEM_TYPE, blocks, {"bucket": job.bucket})
    return stats


def _versions_of(
    client: BucketClient, bucket: str, keys: list[str], gone: dict
) -> Iterator[ListedVersion]:
    """Each key's versions (newest first), keys in order; a key with none is ``gone``."""
    for key in keys:
        found = False
        for version in client.list_versions(bucket, key):
            if version.key == key:
                found = True
                yield version
        if not found:
            gone["count"] += 1
            if len(gone["keys"]) < KEYS_RECORDED:
                gone["keys"].append(f"{bucket}/{key}")
