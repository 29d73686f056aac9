"""Bucket-snapshot blobs: ``blobs/<2 hex>/<blob id>``, one per distinct content.

A blob's id is an HMAC of its content's SHA-256 (``Repository.blob_id``); its object is
encrypted like every data object, bound to its key.  Blobs are shared by every snapshot
that holds the same content: snapshots add them (deduplicated through :class:`BlobOracle`),
only gc removes them, and the two are kept apart by the repository locks (locks.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator

from drbackup.codec.pipeline import CodecSettings, ObjectRecord, encode_to_storage
from drbackup.errors import ObjectNotFoundError
from drbackup.repository.manifest import BLOB_PREFIX, blob_id_of, blob_key
from drbackup.storage.base import ObjectInfo

ORACLE_LIMIT = 200_000  # blob names loaded by one listing before falling back to HEADs


def put_blob(
    storage, blob_id: str, blocks: Iterable[bytes], data_key, settings: CodecSettings
) -> ObjectRecord:
    """Encrypt ``blocks`` under ``data_key`` (a writer's) into the blob ``blob_id``; atomic
    like every put.  Raises StorageError as the storage does."""
    return encode_to_storage(
        storage,
        blob_key(blob_id),
        iter(blocks),
        slot_type=data_key.slot_type,
        slot=data_key.slot,
        data_key=data_key.key,
        settings=settings,
    )


def list_blobs(storage) -> Iterator[tuple[ObjectInfo, str]]:
    """``(object, blob id)`` of every blob; objects under ``blobs/`` that are not named
    like a blob are passed over (never ours to touch)."""
    for info in storage.list(BLOB_PREFIX):
        blob_id = blob_id_of(info.key)
        if blob_id is not None:
            yield info, blob_id


def delete_blob(storage, key: str) -> None:
    """Delete the blob object ``key``; one already gone is not an error."""
    with contextlib.suppress(ObjectNotFoundError):
        storage.delete(key)


class BlobOracle:
    """Answers "must this blob be uploaded?" once per blob id, safely across threads.

    The first question lists ``blobs/`` once (up to ``limit`` names, 1000 per request);
    above the limit each new blob costs one ``exists``.  Two threads with the same content
    never both upload: the second waits for the first and uploads only if it failed.
    """

    def __init__(self, storage, limit: int = ORACLE_LIMIT):
        self._storage, self._limit = storage, limit
        self._lock = threading.Lock()
        self._state: dict[str, threading.Event | bool] = {}  # True: stored
        self._listed: set[bytes] | None = None
        self._list_lock = threading.Lock()
        self._list_done = False

    def claim(self, blob_id: str) -> bool:
        """True if the caller must upload ``blob_id`` and then call :meth:`done`."""
        while True:
            with self._lock:
                state = self._state.get(blob_id)
                if state is True:
                    return False
                if state is None:
                    self._state[blob_id] = threading.Event()
                    break
            state.wait()
        if self._exists(blob_id):
            self.done(blob_id, True)
            return False
        return True

    def done(self, blob_id: str, stored: bool) -> None:
        with self._lock:
            event = self._state.pop(blob_id)
            if stored:
                self._state[blob_id] = True
        event.set()

    def _exists(self, blob_id: str) -> bool:
        listed = self._listing()
        if listed is not None:
            return bytes.fromhex(blob_id) in listed
        return self._storage.exists(blob_key(blob_id))

    def _listing(self) -> set[bytes] | None:
        with self._list_lock:
            if not self._list_done:
                self._listed = self._load()
                self._list_done = True
            return self._listed

    def _load(self) -> set[bytes] | None:
        names: set[bytes] = set()
        for _, blob_id in list_blobs(self._storage):
            names.add(bytes.fromhex(blob_id))
            if len(names) > self._limit:
                return None
        return names
