"""``restore minio``: a bucket snapshot back into a bucket, every object's SHA-256 verified.

Works with only the repository and the key: the snapshot is chosen from manifests (by id,
by point in time, or the latest), its index streamed, each blob decrypted (every chunk
authenticated) and uploaded with its content type, user metadata and tags while its
plaintext is hashed; an object whose digest differs is never completed.  The destination
is the target's own server unless ``into_target`` names another configured minio target.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from drbackup.actions.progress import SILENT, Progress
from drbackup.actions.restore_history import HistoryPlan, open_state, plan_history
from drbackup.actions.selection import Selection, select_backup
from drbackup.actions.snapshot_minio import minio_target
from drbackup.drill.bucket import BucketDrillResult, run_bucket_drill
from drbackup.errors import DrbackupError, RestoreError, StorageUnreachableError, UsageError
from drbackup.repository.manifest import Manifest
from drbackup.sources.buckets.client import BucketClient
from drbackup.sources.buckets.index import (
    INDEX_ITEM_TYPE,
    IndexEntry,
    index_item_name,
    open_index,
    snapshot_buckets,
)
from drbackup.sources.buckets.pool import ordered_map
from drbackup.sources.buckets.restore import RestoreSummary, VerifyingReader, restore_entries
from drbackup.sources.buckets.versions import history_buckets, open_history

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext

FAILURES_IN_MESSAGE = 3


@dataclass
class MinioRestoreResult:
    selection: Selection
    source_bucket: str
    into_bucket: str
    endpoint: str
    dry_run: bool
    prefix: str | None
    created_bucket: bool = False
    non_empty: str | None = None  # a key found in the destination before restoring
    objects: int = 0
    bytes: int = 0
    elapsed_s: float = 0.0
    planned: list[dict] = field(default_factory=list)  # dry run: what would be written
    history: dict | None = None  # restored to a second from version history (HistoryPlan)


def select_snapshot(
    repo, target: str, *, snapshot_id: str | None = None, point_in_time: datetime | None = None
) -> Selection:
    """By id, the newest with recovery point at or before the time, or the latest."""
    selection = select_backup(
        repo, target, backup_id=snapshot_id, point_in_time=point_in_time, kind="bucket"
    )
    if selection.manifest.kind != "bucket":
        raise UsageError(
            f"backup {selection.manifest.backup_id} of {target} is a "
            f"{selection.manifest.kind} backup, not a bucket snapshot",
            hint="'drbackup restore postgres' restores database backups",
        )
    return selection


def pick_bucket(manifest: Manifest, bucket: str | None) -> str:
    """The snapshot's bucket to restore: ``bucket``, or the only one it holds."""
    buckets = snapshot_buckets(manifest)
    if bucket is not None:
        if bucket not in buckets:
            raise UsageError(
                f"snapshot {manifest.backup_id} has no bucket {bucket}",
                hint="it has: " + ", ".join(buckets),
            )
        return bucket
    if len(buckets) != 1:
        raise UsageError(
            f"snapshot {manifest.backup_id} holds {len(buckets)} buckets; choose one with --bucket",
            hint="it has: " + ", ".join(buckets),
        )
    return buckets[0]


def destination_client(
    app: AppContext, target: str, into_target: str | None, workers: int
) -> BucketClient:
    """The server to restore into: ``into_target``'s, else the target's own."""
    name = into_target or target
    targets = app.config.minio
    if name not in targets:
        if into_target is None and target not in app.config.targets:
            raise UsageError(
                f"target '{target}' is not in the config: no server to restore into",
                hint="name a configured minio target with --into-target",
            )
        app.config.target(name)  # raises UsageError naming the known targets
        raise UsageError(f"target '{name}' is not a minio target")
    return BucketClient.from_target(name, targets[name], max_connections=workers + 4)


def _check_destination(client, result: MinioRestoreResult, *, force: bool) -> bool:
    """Whether the destination bucket exists; RestoreError if it holds objects (unless
    ``force``): the first one is named."""
    exists = client.bucket_exists(result.into_bucket)
    result.non_empty = client.first_key(result.into_bucket) if exists else None
    if result.non_empty is not None and not force:
        raise RestoreError(
            f"destination bucket {result.into_bucket} is not empty (it holds {result.non_empty!r})",
            hint="restore into an empty or new bucket, or add --force to overwrite "
            "objects with the same keys",
        )
    return exists


def _plan_all(result: MinioRestoreResult, selected) -> MinioRestoreResult:
    """A dry run: what would be written, nothing written."""
    for entry in selected:
        result.planned.append(_plan(entry))
        result.objects += 1
        result.bytes += entry.size
    return result


def restore_minio(
    app: AppContext,
    target: str,
    *,
    into_bucket: str,
    snapshot_id: str | None = None,
    point_in_time: datetime | None = None,
    bucket: str | None = None,
    prefix: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    into_target: str | None = None,
    workers: int = 8,
    progress: Progress = SILENT,
) -> MinioRestoreResult:
    """Restore one bucket of a snapshot into ``into_bucket``.

    Refuses a non-empty destination without ``force`` (RestoreError); ``dry_run`` lists
    the objects that would be written and writes nothing.  Raises RestoreError listing
    the objects that failed (each other object is restored and verified).
    """
    repo = app.repository()
    repo.keyring.require(read=True)
    selection, source, history = _choose(repo, target, snapshot_id, point_in_time, bucket)
    client = destination_client(app, target, into_target, workers)
    result = MinioRestoreResult(selection, source, into_bucket, client.endpoint, dry_run, prefix)
    result.history = history.to_dict() if history else None
    exists = _check_destination(client, result, force=force or dry_run)
    started = time.monotonic()
    with _open_entries(repo, selection.manifest, source, history) as entries:
        selected = _under_prefix(entries, prefix)
        if dry_run:
            return _plan_all(result, selected)
        if not exists:
            client.make_bucket(into_bucket)
            result.created_bucket = True
        total = None if prefix or history else _bucket_bytes(selection.manifest, source)
        with progress.phase(f"restore {target}", "restored", total) as tick:
            summary = restore_entries(
                client,
                into_bucket,
                selected,
                lambda e: repo.open_blob(e.blob),
                workers=workers,
                progress=tick,
            )
            _raise_failed(summary, into_bucket)  # inside: a failed phase prints no line
    result.objects, result.bytes = summary.objects, summary.bytes
    result.elapsed_s = time.monotonic() - started
    return result


def _raise_failed(summary: RestoreSummary, into_bucket: str) -> None:
    if summary.failed:
        total = summary.objects + summary.failed
        raise RestoreError(
            _failure_message(summary, into_bucket),
            hint=_failure_hint(summary),
            redacted=f"{summary.failed} of {total} objects failed to restore into {into_bucket}",
        )


def _bucket_bytes(manifest: Manifest, bucket: str) -> int | None:
    """The bytes of ``bucket``'s objects in a snapshot, as its index item records them."""
    for item in manifest.items:
        if item.type == INDEX_ITEM_TYPE and item.name == index_item_name(bucket):
            return item.meta.get("bytes")
    return None


def _choose(repo, target, snapshot_id, point_in_time, bucket):
    """(selection, source bucket, HistoryPlan or None): the bucket at a second from its
    version history when it has one, else one snapshot (by id, time, or the latest)."""
    history = None
    if point_in_time is not None and snapshot_id is None:
        history = plan_history(repo, target, bucket, point_in_time)
    if history is not None:
        return Selection(history.manifest, history.note()), history.bucket, history
    selection = select_snapshot(repo, target, snapshot_id=snapshot_id, point_in_time=point_in_time)
    return selection, pick_bucket(selection.manifest, bucket), None


def _open_entries(repo, manifest: Manifest, bucket: str, history: HistoryPlan | None):
    """The objects to restore: the bucket at a second (versioned history), or a snapshot's."""
    if history is not None:
        return open_state(repo, history)
    return open_index(repo.open_item, manifest, bucket)


def _under_prefix(entries: Iterator[IndexEntry], prefix: str | None) -> Iterator[IndexEntry]:
    return (e for e in entries if not prefix or e.key.startswith(prefix))


def _plan(entry: IndexEntry) -> dict:
    return {
        "key": entry.key,
        "size": entry.size,
        "sha256": entry.sha256,
        "content_type": entry.content_type,
        "metadata": len(entry.metadata),
        "tags": len(entry.tags),
    }


def _failure_message(summary: RestoreSummary, bucket: str) -> str:
    total = summary.objects + summary.failed
    shown = "; ".join(message for _, message in summary.failures[:FAILURES_IN_MESSAGE])
    more = summary.failed - min(summary.failed, FAILURES_IN_MESSAGE)
    return f"{summary.failed} of {total} objects failed to restore into {bucket}: {shown}" + (
        f" (and {more} more)" if more else ""
    )


def _failure_hint(summary: RestoreSummary) -> str:
    return (
        f"{summary.objects} other objects were restored and verified; "
        "'drbackup verify' or a bucket drill shows what is damaged in the repository"
    )


def verify_snapshot_blobs(repo, manifest: Manifest, *, workers: int = 8, tick=None) -> list[str]:
    """Read every blob a snapshot references and check it against its index entries.

    Returns one line per problem (naming the bucket and object key), empty when every
    object's content is intact: what ``verify`` should add for a bucket snapshot, whose
    manifest items cover only the indexes.  ``tick`` gets each object's size once read.
    """
    repo.keyring.require(read=True)
    problems: list[str] = []

    def check(entry: IndexEntry) -> str | None:
        try:
            with repo.open_blob(entry.blob) as blob:
                VerifyingReader(blob, entry, f"object {entry.key}").verify_all()
        except StorageUnreachableError:
            raise  # the storage went away: no conclusion about this blob
        except DrbackupError as exc:
            return exc.message if entry.key in exc.message else f"object {entry.key}: {exc.message}"
        return None

    for bucket in snapshot_buckets(manifest):
        with open_index(repo.open_item, manifest, bucket) as entries:
            for entry, problem in ordered_map(check, entries, workers=workers):
                if problem:
                    problems.append(f"{bucket}: {problem}")
                elif tick:
                    tick(entry.size)
    for bucket in history_buckets(manifest):  # the versions of a versioned bucket's history
        with open_history(repo.open_item, manifest, bucket) as lines:
            versions = (v.entry for v in lines if v.entry is not None)
            for entry, problem in ordered_map(check, versions, workers=workers):
                if problem:
                    problems.append(f"{bucket} (history): {problem}")
                elif tick:
                    tick(entry.size)
    return problems


def drill_bucket(
    app: AppContext, target: str, *, snapshot_id: str | None = None, workers: int = 8
) -> BucketDrillResult:
    """Drill the latest (or ``snapshot_id``) snapshot of a configured minio target.

    Restores into scratch buckets on the target's own server (drill/bucket.py); returns
    the result with every check, whatever they found.
    """
    cfg = minio_target(app, target)
    repo = app.repository()
    repo.keyring.require(read=True)
    client = BucketClient.from_target(target, cfg, max_connections=workers + 4)
    selection = select_snapshot(repo, target, snapshot_id=snapshot_id)
    return run_bucket_drill(
        repo,
        client,
        selection.manifest,
        rto_s=cfg.rto.total_seconds(),
        rpo_s=cfg.rpo.total_seconds(),
        how=selection.note,
        workers=workers,
    )
