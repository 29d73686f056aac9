"""A versioned bucket's history: the version listing, history lines, and the state at a time.

A snapshot of a versioned bucket stores, besides its index (the current objects), an item
``history:<bucket>`` of type ``bucket-history.jsonl``: one JSON line per object version or
delete marker created since the previous snapshot, sorted by key and, within a key, oldest
first (docs/buckets.md, "Version history").  :func:`state_at` merges a snapshot's index
with the histories of the snapshots after it into the bucket as it was at one second.
Nothing here does I/O except parsing bytes the client hands over.
"""

from __future__ import annotations

import heapq
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from urllib.parse import unquote_plus

from drbackup.sources.buckets.index import IndexEntry, iter_entries

HISTORY_ITEM_TYPE = "bucket-history.jsonl"
HISTORY_ITEM_PREFIX = "history:"
EVENTS_KIND = "bucket-events"  # the kind of the backups event-driven capture commits
_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def history_item_name(bucket: str) -> str:
    """The item name of a bucket's version history in a snapshot: ``history:<bucket>``."""
    return f"{HISTORY_ITEM_PREFIX}{bucket}"


@dataclass(frozen=True)
class ListedVersion:
    """One line of a version listing: an object version or a delete marker."""

    key: str
    version_id: str
    last_modified: str  # ISO 8601 UTC, milliseconds (as in snapshot indexes)
    is_latest: bool
    deleted: bool  # a delete marker
    size: int = 0
    etag: str = ""


@dataclass(frozen=True)
class VersionEntry:
    """One history line: a version (with what the index records for it) or a delete marker."""

    key: str
    version_id: str
    last_modified: str
    deleted: bool = False
    entry: IndexEntry | None = None  # None for a delete marker

    def to_line(self) -> bytes:
        data = {"key": self.key, "version_id": self.version_id}
        data["last_modified"] = self.last_modified
        if self.deleted:
            data["deleted"] = True
        else:
            data.update({k: v for k, v in self.entry.to_dict().items() if k not in data})
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8") + b"\n"

    @classmethod
    def from_dict(cls, data: dict) -> VersionEntry:
        """Parse one history line; unknown fields are ignored (format compatibility rule)."""
        deleted = bool(data.get("deleted"))
        return cls(
            key=data["key"],
            version_id=data["version_id"],
            last_modified=data["last_modified"],
            deleted=deleted,
            entry=None if deleted else IndexEntry.from_dict(data),
        )


def iso_text(ts: datetime) -> str:
    """A time in the form snapshot indexes use (``2026-11-23T02:44:00.123Z``)."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- the version listing ----------------------------------------------------------------


@dataclass
class VersionPage:
    versions: list[ListedVersion] = field(default_factory=list)
    truncated: bool = False
    next_key: str | None = None
    next_version: str | None = None


def parse_versions_page(body: bytes) -> VersionPage:
    """A ``ListObjectVersions`` answer, versions and delete markers in key order.

    S3 interleaves versions and delete markers newest first within a key; some servers
    (moto) list every version before every delete marker, so the page is re-sorted by key
    (stable) and each key's lines by time, newest first, the latest one first on a tie.
    """
    root = ET.fromstring(body)
    url = _text(root, "EncodingType") == "url"
    kinds = (_S3_NS + "Version", _S3_NS + "DeleteMarker")
    lines = [_parse_line(e, url) for e in root if e.tag in kinds]
    lines.sort(key=lambda v: (v.key, _newest_first(v)))
    next_key = _text(root, "NextKeyMarker")
    return VersionPage(
        versions=lines,
        truncated=(_text(root, "IsTruncated") or "").lower() == "true",
        next_key=unquote_plus(next_key) if next_key and url else next_key,
        next_version=_text(root, "NextVersionIdMarker"),
    )


def _newest_first(v: ListedVersion) -> tuple:
    # ISO strings of one form sort as times; inverted code points sort them newest first
    return (not v.is_latest, [-ord(c) for c in v.last_modified])


def _text(element, name: str) -> str | None:
    found = element.find(_S3_NS + name)
    return found.text if found is not None else None


def _parse_line(e, url: bool) -> ListedVersion:
    key = _text(e, "Key") or ""
    stamp = datetime.fromisoformat((_text(e, "LastModified") or "").replace("Z", "+00:00"))
    return ListedVersion(
        key=unquote_plus(key) if url else key,
        version_id=_text(e, "VersionId") or "null",
        last_modified=iso_text(stamp),
        is_latest=(_text(e, "IsLatest") or "").lower() == "true",
        deleted=e.tag == _S3_NS + "DeleteMarker",
        size=int(_text(e, "Size") or 0),
        etag=(_text(e, "ETag") or "").strip('"'),
    )


def group_by_key(versions: Iterable[ListedVersion]) -> Iterator[list[ListedVersion]]:
    """Consecutive lines of one key, oldest first (listings give them newest first)."""
    for _, lines in groupby(versions, key=lambda v: v.key):
        yield list(reversed(list(lines)))


# --- the bucket at one second -----------------------------------------------------------


def state_at(
    base: Iterable[IndexEntry], histories: list[Iterable[VersionEntry]], at: str
) -> Iterator[IndexEntry]:
    """The objects as they were at ``at`` (ISO text as :func:`iso_text` writes it).

    ``base`` is a snapshot index taken at or before ``at``; ``histories`` the history items
    of the snapshots after it, oldest snapshot first; all sorted by key.  For each key the
    newest line at or before ``at`` wins (a later history wins a tie, then a later line);
    a key whose winner is a delete marker, or that has none, is absent.  Constant memory
    per key.
    """
    streams = [_rows(base, -1)] + [_rows(h, s) for s, h in enumerate(histories)]
    merged = heapq.merge(*streams, key=lambda row: row[0])
    for _, rows in groupby(merged, key=lambda row: row[0]):
        best = max((r for r in rows if r[1] <= at), key=lambda r: r[1:4], default=None)
        if best is None:
            continue
        winner = best[4]
        if isinstance(winner, IndexEntry):
            yield winner
        elif not winner.deleted:
            yield winner.entry


@contextmanager
def open_history(open_item: Callable, manifest, bucket: str) -> Iterator[Iterator[VersionEntry]]:
    """The lines of ``bucket``'s history in ``manifest``; empty if it has none.

    ``open_item`` is the repository's item reader (every block authenticated).
    """
    name = history_item_name(bucket)
    item = next((i for i in manifest.items if i.name == name), None) if manifest else None
    if item is None:
        yield iter(())
        return
    with open_item(item) as reader:
        what = f"{manifest.target}/{manifest.backup_id} {name}"
        yield iter_entries(reader, what, VersionEntry.from_dict)


def history_buckets(manifest) -> list[str]:
    """The buckets a snapshot (or event capture) holds a history for, in manifest order."""
    n = len(HISTORY_ITEM_PREFIX)
    return [i.name[n:] for i in manifest.items if i.type == HISTORY_ITEM_TYPE]


def history_meta(manifest, bucket: str) -> dict | None:
    """What a snapshot recorded about ``bucket``'s history (``since``, ``until``, counts),
    or None when it captured none (an unversioned bucket, or a snapshot older than this)."""
    if manifest is None:
        return None
    found = (manifest.meta.get("buckets") or {}).get(bucket) or {}
    history = found.get("history")
    return history if isinstance(history, dict) and history.get("until") else None


def _rows(lines: Iterable, stream: int) -> Iterator[tuple]:
    """(key, time, stream, position, line): what :func:`state_at` orders lines by."""
    for n, line in enumerate(lines):
        yield line.key, line.last_modified, stream, n, line


def bucket_guarantees(manifest) -> dict[str, str]:
    """Per bucket of a snapshot, the history a restore can reach: ``every change since
    <time>`` (versioned, history captured) or ``state at snapshot times only``."""
    out = {}
    for bucket in manifest.meta.get("buckets") or {}:
        history = history_meta(manifest, bucket)
        if history is not None:
            out[bucket] = f"every change since {history['since']}"
        elif (manifest.meta["buckets"][bucket] or {}).get("versioning") == "Unknown":
            out[bucket] = "state at snapshot times only (versioning not readable: grant "
            out[bucket] += "s3:GetBucketVersioning)"
        else:
            out[bucket] = "state at snapshot times only"
    return out
