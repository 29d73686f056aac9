"""Pure listing logic: prefix selection, the sorted merge-join with a previous index.

S3 lists keys in UTF-8 byte order, which is Python's ``str`` order (code points), so a
listing and a snapshot index (written in listing order) can be merge-joined in constant
memory.  Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol, TypeVar

from drbackup.errors import SourceError


class Keyed(Protocol):
    key: str


A = TypeVar("A", bound=Keyed)
B = TypeVar("B", bound=Keyed)


def listing_prefixes(include: Iterable[str]) -> list[str]:
    """The prefixes to list, sorted, with those under another include removed.

    ``[]`` (no include) means the whole bucket: ``[""]``.  For two prefixes where neither
    starts with the other, every key under the smaller sorts before every key under the
    larger, so listing them one after the other keeps the whole listing sorted.
    """
    chosen: list[str] = []
    for prefix in sorted(set(include)):
        if not chosen or not prefix.startswith(chosen[-1]):
            chosen.append(prefix)
    return chosen or [""]


def is_excluded(key: str, exclude: Iterable[str]) -> bool:
    """True if ``key`` is under one of the ``exclude`` prefixes."""
    return any(key.startswith(prefix) for prefix in exclude)


def check_sorted(items: Iterable[A], what: str) -> Iterator[A]:
    """Pass ``items`` through; raise SourceError if a key is not after the one before.

    A merge-join on an unsorted listing would silently treat objects as new or deleted.
    """
    last: str | None = None
    for item in items:
        if last is not None and item.key <= last:
            raise SourceError(
                f"{what} is not sorted by key ({item.key!r} after {last!r})",
                hint="the server must list keys in byte order, as S3 does",
                redacted=f"{what} is not sorted by key",
            )
        last = item.key
        yield item


def merge_join(current: Iterable[A], previous: Iterable[B]) -> Iterator[tuple[A, B | None]]:
    """Pair each current item with the previous item of the same key (or None).

    Both inputs must be sorted by key (wrap them in :func:`check_sorted`); previous items
    without a current one (deleted objects) are skipped.  Constant memory.
    """
    prev_iter = iter(previous)
    prev = next(prev_iter, None)
    for item in current:
        while prev is not None and prev.key < item.key:
            prev = next(prev_iter, None)
        if prev is not None and prev.key == item.key:
            yield item, prev
            prev = next(prev_iter, None)
        else:
            yield item, None


def is_unchanged(listed, previous) -> bool:
    """Same size, ETag and last-modified as in the previous snapshot: reuse its blob."""
    return previous is not None and (
        listed.size == previous.size
        and listed.etag == previous.etag
        and listed.last_modified == previous.last_modified
    )
