"""Version-aware capture: the history of a versioned bucket since the previous snapshot.

For a bucket whose versioning is ``Enabled``, a snapshot first lists every version and
delete marker (``ListObjectVersions``) and writes the item ``history:<bucket>``: one line
per version or delete marker modified after the previous snapshot's listing (less a
margin for clock skew; repeats are harmless), sorted by key, oldest first within a key.
Each version's content is read by version id (immutable: no ``If-Match`` needed), hashed
and stored as a content-addressed blob like any snapshot object, unless the previous
index already holds that version.  The latest versions read here are remembered (up to
``LATEST_REMEMBERED``) so that the index pass that follows reuses them instead of reading
them again.  The guarantee ``every change since <since>`` holds while the chain of
snapshots with history is unbroken (docs/buckets.md, "Version history").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain

from drbackup.errors import SourceError
from drbackup.repository.manifest import Manifest
from drbackup.sources.buckets.client import (
    BucketClient,
    ObjectChangedError,
    ObjectGoneError,
    unsupported_key_reason,
)
from drbackup.sources.buckets.index import IndexEntry
from drbackup.sources.buckets.listing import is_excluded, listing_prefixes
from drbackup.sources.buckets.pool import ordered_map
from drbackup.sources.buckets.versions import (
    EVENTS_KIND,
    ListedVersion,
    VersionEntry,
    group_by_key,
    history_meta,
    iso_text,
    open_history,
)

HISTORY_MARGIN = timedelta(minutes=5)  # overlap between two snapshots' histories
LATEST_REMEMBERED = 100_000  # latest versions kept for the index pass (about 40 MB at most)
KEYS_RECORDED = 100


@dataclass
class HistoryStats:
    """What one bucket's history capture saw; ``to_meta`` goes into the manifest."""

    versioning: str
    since: str
    until: str
    chained_from: str | None
    versions: int = 0
    delete_markers: int = 0
    read: int = 0
    read_bytes: int = 0
    stored_bytes: int = 0  # compressed, encrypted bytes of the new blobs
    reused: int = 0
    vanished: dict = field(default_factory=lambda: {"count": 0, "keys": []})
    missed_by_events: dict | None = None  # with event capture on: changes no event brought

    def note_vanished(self, key: str) -> None:
        self.vanished["count"] += 1
        if len(self.vanished["keys"]) < KEYS_RECORDED:
            self.vanished["keys"].append(key)

    def note_missed(self, key: str) -> None:
        self.missed_by_events["count"] += 1
        if len(self.missed_by_events["keys"]) < KEYS_RECORDED:
            self.missed_by_events["keys"].append(key)

    def to_meta(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None or k == "chained_from"}


@dataclass
class History:
    """A bucket's captured history: its stats and the latest versions read (key → entry)."""

    stats: HistoryStats
    after: str | None  # versions modified after this are captured (None: every one listed)
    latest: dict[str, IndexEntry] = field(default_factory=dict)
    # reconciliation: versions event captures hold, and the time after which one missing
    # from them counts as missed (the previous snapshot's listing)
    seen: set[tuple[str, str]] | None = None
    missed_after: str = ""

    def expect_events(self, seen: set[tuple[str, str]], after: str) -> None:
        self.seen, self.missed_after = seen, after
        self.stats.missed_by_events = {"count": 0, "keys": []}


def list_versions_selected(
    client: BucketClient, bucket: str, include, exclude
) -> Iterator[ListedVersion]:
    """Versions under ``include`` (all if empty), minus ``exclude``, in key order."""
    listings = (client.list_versions(bucket, prefix) for prefix in listing_prefixes(include))
    return (v for v in chain.from_iterable(listings) if not is_excluded(v.key, exclude))


def start_history(status: str, bucket: str, last_snapshot) -> History | None:
    """A new history for ``bucket`` if its versioning ``status`` is ``Enabled`` (else None).

    Chained to ``last_snapshot`` (the newest snapshot of the target, whatever ``--full``
    says) when that one captured this bucket's history too: the guarantee then reaches
    back to the chain's start.
    """
    if status != "Enabled":
        return None
    until = iso_text(datetime.now(UTC))  # every version listed below was created before
    before = history_meta(last_snapshot, bucket)
    stats = HistoryStats(
        versioning=status,
        since=before["since"] if before else until,
        until=until,
        chained_from=last_snapshot.backup_id if before else None,
    )
    after = None
    if before:
        previous_until = datetime.fromisoformat(before["until"].replace("Z", "+00:00"))
        after = iso_text(previous_until - HISTORY_MARGIN)
    return History(stats, after)


class HistoryCapture:
    """Produces one bucket's history lines, reading each new version once.

    ``job`` is the bucket's :class:`~drbackup.actions.snapshot_minio.BucketSnapshot`,
    whose read and store this shares (blobs, deduplication, the worker count).
    """

    def __init__(self, job, history: History):
        self.job, self.history, self.after = job, history, history.after

    def entries(
        self, versions: Iterable[ListedVersion], previous: Iterable[IndexEntry]
    ) -> Iterator[VersionEntry]:
        """History lines in key order, oldest first within a key; updates the stats."""
        from drbackup.actions.snapshot_minio import SnapshotCancelled  # (imports this module)

        lines = (v for group in group_by_key(_check_order(versions)) for v in group)
        wanted = (v for v in lines if self.after is None or v.last_modified > self.after)
        pairs = _with_previous(wanted, previous)
        results = ordered_map(
            self._capture, pairs, workers=self.job.opts.workers, inline=_needs_no_read
        )
        for (listed, _), line in results:
            if self.job.cancel.is_set():
                raise SnapshotCancelled("snapshot cancelled")
            if line is None:
                self.history.stats.note_vanished(listed.key)
                continue
            self._count(listed, line)
            yield line

    def _count(self, listed: ListedVersion, line: VersionEntry) -> None:
        stats = self.history.stats
        if line.deleted:
            stats.delete_markers += 1
            return
        stats.versions += 1
        seen = self.history.seen
        new = listed.last_modified >= self.history.missed_after
        if seen is not None and new and (listed.key, listed.version_id) not in seen:
            stats.note_missed(listed.key)
        latest = self.history.latest
        if listed.is_latest and len(latest) < LATEST_REMEMBERED:
            latest[listed.key] = line.entry

    def _capture(self, pair: tuple[ListedVersion, IndexEntry | None]) -> VersionEntry | None:
        listed, previous = pair
        base = {"key": listed.key, "version_id": listed.version_id}
        if listed.deleted:
            return VersionEntry(**base, last_modified=listed.last_modified, deleted=True)
        if _same_version(listed, previous):
            self.history.stats.reused += 1
            return VersionEntry(**base, last_modified=listed.last_modified, entry=previous)
        if unsupported_key_reason(listed.key):
            return None  # the index pass names it as skipped
        try:
            transfer = self.job._read(listed, reread=False)  # noqa: SLF001 - its own job
        except (ObjectGoneError, ObjectChangedError):
            return None  # expired or removed since the listing: recorded as vanished
        stats = self.history.stats
        stats.read += 1
        stats.read_bytes += transfer.downloaded
        stats.stored_bytes += transfer.stored
        return VersionEntry(**base, last_modified=listed.last_modified, entry=transfer.entry)


def _needs_no_read(pair) -> bool:
    listed, previous = pair
    return listed.deleted or _same_version(listed, previous)


def _same_version(listed: ListedVersion, previous: IndexEntry | None) -> bool:
    return previous is not None and previous.version_id == listed.version_id


def _check_order(versions: Iterable[ListedVersion]) -> Iterator[ListedVersion]:
    last = None
    for v in versions:
        if last is not None and v.key < last:
            raise SourceError(
                "version listing is not sorted by key",
                hint="the server must list keys in byte order, as S3 does",
            )
        last = v.key
        yield v


def _with_previous(
    lines: Iterable[ListedVersion], previous: Iterable[IndexEntry]
) -> Iterator[tuple[ListedVersion, IndexEntry | None]]:
    """Pair each line with the previous index's entry of its key (both sorted by key)."""
    prev_iter = iter(previous)
    prev = next(prev_iter, None)
    for line in lines:
        while prev is not None and prev.key < line.key:
            prev = next(prev_iter, None)
        yield line, (prev if prev is not None and prev.key == line.key else None)


def event_captures_since(repo, target: str, since: datetime) -> list[Manifest]:
    """The target's event captures started at or after ``since``, oldest first."""
    stamp = since.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    found = []
    for ref in repo.list_refs(target):
        if ref.backup_id[:16] >= stamp:
            m = repo.load_manifest(ref)
            if m.kind == EVENTS_KIND:
                found.append(m)
    return found


def captured_versions(
    repo, captures: list[Manifest], bucket: str, since: str = ""
) -> set[tuple[str, str]]:
    """``(key, version id)`` of every line the ``captures`` hold for ``bucket`` (modified at
    or after ``since``)."""
    seen: set[tuple[str, str]] = set()
    for m in captures:
        with open_history(repo.open_item, m, bucket) as lines:
            seen.update((v.key, v.version_id) for v in lines if v.last_modified >= since)
    return seen


def expect_events(repo, history: History, last: Manifest, bucket: str) -> None:
    """Make ``history`` count the versions that no event capture since ``last`` holds.

    S3 times are often whole seconds: a version of the second of ``last``'s listing may
    be in ``last``'s own history instead, which counts as held.
    """
    second = history_meta(last, bucket)["until"][:19]  # YYYY-MM-DDTHH:MM:SS
    since = datetime.fromisoformat(second).replace(tzinfo=UTC)
    captures = event_captures_since(repo, last.target, since)
    seen = captured_versions(repo, [*captures, last], bucket, second)
    history.expect_events(seen, second)
