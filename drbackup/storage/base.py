"""The storage contract: the only thing the repository knows about where bytes live.

Keys are relative, ``/``-separated, never start with ``/`` and never contain ``..``.
Every backend passes ``tests/contract/test_storage_contract.py``.

Contract, per method:

``put(key, reader)``
    Streams ``reader`` (a binary file-like object with ``read(n)``; not necessarily seekable)
    into ``key``.  **Atomic**: a reader of ``key`` sees either the previous object or the
    complete new one, never a partial object; a failure or crash mid-upload leaves no object
    under ``key`` (local: temp file, fsync, rename; S3: multipart upload completed or
    aborted).  Overwrites an existing object.  Returns the number of bytes stored.
    Memory is bounded by the backend's part size times its concurrency.

``open(key)``
    Returns a binary file-like object streaming the object's bytes; the caller closes it.
    Raises :class:`~drbackup.errors.ObjectNotFoundError` if ``key`` does not exist.

``get(key)``
    Whole object as ``bytes`` (small objects only: headers, manifests).  Raises
    ``ObjectNotFoundError``.

``stat(key)``
    :class:`ObjectInfo` for ``key``; raises ``ObjectNotFoundError``.

``exists(key)``
    ``True`` if ``key`` exists.  Never raises for a missing key.

``list(prefix)``
    Iterates :class:`ObjectInfo` for every key starting with ``prefix`` (a plain string
    prefix, not a directory), sorted by key.  Lazily paginated: constant memory.  Temporary
    files of in-progress local writes are never listed.

``delete(key)``
    Removes ``key``.  **Idempotent**: deleting a missing key is not an error.

``prepare()``
    Creates the location if the backend can (local: the directory and its parents); used
    only by ``drbackup init``.  Other operations never create the location, so a missing
    backup disk is an error, not an empty repository.

``check()``
    Raises :class:`~drbackup.errors.StorageUnreachableError` if the backend cannot be reached
    or accessed (directory missing/unwritable, bucket missing, credentials refused).

Local storage never follows a symbolic link below its root: a listing skips links and
records their keys in its ``skipped_links`` set; reading, writing or deleting through one
raises ``StorageError`` naming it.  :func:`link_warnings` turns what listings met into
lines for the user (prune, gc and list report them).

Optional: ``locked_until(key)`` → ``datetime | None`` where the backend supports object
lock (S3): until when the object is protected.  A plain delete of a locked object on a
versioned bucket only hides it behind a delete marker, so deleters ask first.

Optional: ``list_incomplete(prefix)`` → ``ObjectInfo`` of the temporaries of unfinished
writes under ``prefix`` (local: ``.tmp-*`` files a killed process left behind), keyed so
that ``delete`` removes them; ``mtime`` is their last write.  Prune removes those of dead
writers (docs/retention.md).

Every method raises ``StorageUnreachableError`` when the backend cannot be reached, and
``StorageError`` for other failures, each with a one-line message naming the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol, runtime_checkable

from drbackup.errors import ObjectNotFoundError


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or stat says about one object."""

    key: str
    size: int
    mtime: float = 0.0  # seconds since the epoch; 0 when unknown


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do, as data (not subclasses)."""

    object_lock: bool = False
    server_side_copy: bool = False
    extra: dict = field(default_factory=dict)


@runtime_checkable
class Storage(Protocol):
    """A flat key space of immutable-by-convention objects.  See the module docstring."""

    url: str
    capabilities: Capabilities

    def put(self, key: str, reader: BinaryIO) -> int: ...

    def open(self, key: str) -> BinaryIO: ...

    def get(self, key: str) -> bytes: ...

    def stat(self, key: str) -> ObjectInfo: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    def delete(self, key: str) -> None: ...

    def prepare(self) -> None: ...

    def check(self) -> None: ...


class StatBacked:
    """What every backend derives from its ``stat`` in the same way (mixed in)."""

    def stat(self, key: str) -> ObjectInfo:
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        """``True`` if ``key`` exists; never raises for a missing key (other failures
        raise as ``stat`` does)."""
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid relative storage key, else raise ``ValueError``."""
    if not key or key.startswith("/") or key.endswith("/"):
        raise ValueError(f"invalid storage key: {key!r}")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid storage key: {key!r}")
    return key


def link_warnings(storage) -> list[str]:
    """One line per symbolic link listings of ``storage`` met and did not follow, sorted;
    the record is cleared, so each link is reported once per command."""
    found = getattr(storage, "skipped_links", None)
    if not found:
        return []
    links = sorted(found)
    found.clear()
    return [
        f"{key} is a symbolic link in the repository: not followed, nothing removed through it "
        "(drbackup never follows links in a repository; remove the link)"
        for key in links
    ]
