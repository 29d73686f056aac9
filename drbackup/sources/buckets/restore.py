"""Writing snapshot entries into a bucket, verifying every object's SHA-256 on the way.

The content comes from a caller-supplied ``open_content(entry)`` (the repository's blob
reader, which authenticates every chunk); this module hashes the plaintext while it is
uploaded and raises before the last byte is handed to the upload when the size or digest
differs from the index, so a wrong object is never completed in the destination.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from drbackup.errors import (
    DrbackupError,
    IntegrityError,
    SourceUnreachableError,
    StorageUnreachableError,
)
from drbackup.sources.buckets.client import BucketClient
from drbackup.sources.buckets.index import IndexEntry
from drbackup.sources.buckets.pool import ordered_map

MAX_FAILURES_KEPT = 1000  # failures listed in a summary; the count is always exact


class VerifyingReader:
    """Reads exactly ``entry.size`` bytes from ``inner``; checks size and SHA-256.

    The check runs when the last expected byte has been read, *before* that block is
    returned, because uploaders stop reading once they have ``length`` bytes.
    """

    def __init__(self, inner, entry: IndexEntry, what: str):
        self._inner, self._entry, self._what = inner, entry, what
        self._sha = hashlib.sha256()
        self.count = 0

    def read(self, n: int | None = -1) -> bytes:
        remaining = self._entry.size - self.count
        if remaining <= 0:
            if self.count == 0:  # an empty object: the uploader may never call read
                self._finish()
            return b""
        want = remaining if n is None or n < 0 else min(n, remaining)
        data = self._inner.read(want)
        if not data:
            raise IntegrityError(
                f"{self._what}: content ends after {self.count} bytes, expected {self._entry.size}"
            )
        self._sha.update(data)
        self.count += len(data)
        if self.count >= self._entry.size:
            self._finish()
        return data

    def _finish(self) -> None:
        if self._inner.read(1):
            raise IntegrityError(f"{self._what}: content is longer than {self._entry.size} bytes")
        if self._sha.hexdigest() != self._entry.sha256:
            raise IntegrityError(f"{self._what}: content sha256 does not match the snapshot index")

    def verify_all(self) -> None:
        """Read to the end without uploading (empty objects, dry checks)."""
        while self.read(1 << 20):
            pass


@dataclass
class RestoreSummary:
    """What a restore wrote: counts, bytes, and every object that failed (first 1000)."""

    objects: int = 0
    bytes: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (key, message)

    def add_failure(self, key: str, message: str) -> None:
        self.failed += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append((key, message))


def restore_entry(
    client: BucketClient, bucket: str, entry: IndexEntry, open_content: Callable
) -> None:
    """Upload one entry into ``bucket`` with its content type, metadata and tags.

    Raises IntegrityError (content does not match the index, naming the object key),
    ObjectNotFoundError/IntegrityError from ``open_content`` (blob missing or damaged),
    SourceError from the destination.
    """
    what = f"object {entry.key}"
    with open_content(entry) as inner:
        reader = VerifyingReader(inner, entry, what)
        if entry.size == 0:
            reader.verify_all()
        client.put_object(
            bucket,
            entry.key,
            reader,
            entry.size,
            content_type=entry.content_type,
            metadata=entry.metadata,
            tags=entry.tags,
            headers=entry.headers,
        )
        if reader.count != entry.size:
            raise IntegrityError(f"{what}: uploaded {reader.count} of {entry.size} bytes")


def restore_entries(
    client: BucketClient,
    bucket: str,
    entries: Iterable[IndexEntry],
    open_content: Callable,
    *,
    workers: int = 8,
    progress: Callable[[int], None] | None = None,
) -> RestoreSummary:
    """Restore every entry, ``workers`` at a time; go on past objects that fail.

    Returns the summary; the caller decides whether failures fail the run (a restore
    raises, a drill records them).  A repository or destination that becomes unreachable
    stops the run instead (raised as it is: exit 4): every remaining object would fail the
    same way, and calling them failures would send the operator looking for damage.
    """
    summary = RestoreSummary()

    def one(entry: IndexEntry) -> str | None:
        try:
            restore_entry(client, bucket, entry, open_content)
        except (StorageUnreachableError, SourceUnreachableError):
            raise
        except DrbackupError as exc:
            message = exc.message
            return message if entry.key in message else f"object {entry.key}: {message}"
        return None

    for entry, error in ordered_map(one, entries, workers=workers):
        if error is None:
            summary.objects += 1
            summary.bytes += entry.size
            if progress:
                progress(entry.size)
        else:
            summary.add_failure(entry.key, error)
    return summary
