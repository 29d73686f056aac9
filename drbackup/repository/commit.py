"""A write whose outcome must be known: put, and when the put raises, read back.

A PUT whose reply was lost (a connection cut after the request body, a proxy timing out)
may or may not have taken effect.  :func:`put_and_resolve` puts the object and, if that
raises, reads it back a few times: the same bytes there mean it took effect, a missing
object means it did not, anything else leaves the outcome unknown.  The commit of a backup
(repository/writer.py) is built on it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from drbackup.errors import ObjectNotFoundError, StorageError

PRESENT, ABSENT, UNKNOWN = "present", "absent", "unknown"
RESOLVE_ATTEMPTS = 3
RESOLVE_PAUSE_S = 0.5  # before the second read-back; doubled before each next one


@dataclass(frozen=True)
class PutOutcome:
    """What a put did: ``present`` (written), ``absent`` (proven not written), ``unknown``.

    ``error`` is the put's own error when it raised, ``reason`` why an outcome is unknown.
    """

    state: str
    error: StorageError | None = None
    reason: str | None = None


def put_and_resolve(storage, key: str, data: bytes) -> PutOutcome:
    """Put ``data`` at ``key``; when the put raises a storage error, resolve by reading back.

    Other exceptions (Ctrl-C) propagate with the outcome unresolved: the caller must then
    treat the object as possibly written.
    """
    try:
        storage.put(key, BytesReader(data))
    except StorageError as exc:
        return resolve(storage, key, hashlib.sha256(data).hexdigest(), exc)
    return PutOutcome(PRESENT)


def resolve(storage, key: str, sha256: str, error: StorageError | None = None) -> PutOutcome:
    """Whether ``key`` holds the bytes whose SHA-256 is ``sha256``, read back with retries."""
    reason = None
    for attempt in range(RESOLVE_ATTEMPTS):
        if attempt:
            time.sleep(RESOLVE_PAUSE_S * 2 ** (attempt - 1))
        try:
            stored = storage.get(key)
        except ObjectNotFoundError:
            return PutOutcome(ABSENT, error)
        except StorageError as exc:
            reason = exc.message
            continue
        if hashlib.sha256(stored).hexdigest() == sha256:
            return PutOutcome(PRESENT, error)
        return PutOutcome(UNKNOWN, error, f"{key} holds other bytes than were sent")
    return PutOutcome(UNKNOWN, error, reason)


class BytesReader:
    """``read(n)`` over bytes: what ``Storage.put`` takes."""

    def __init__(self, data: bytes):
        self._data, self._pos = data, 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._data) if n < 0 else self._pos + n
        chunk = self._data[self._pos : end]
        self._pos += len(chunk)
        return chunk
