"""Reading an item back: its segment objects chained, every object and the whole stream
checked against the manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from drbackup.errors import IntegrityError
from drbackup.repository.manifest import Item


class ItemReader:
    """Chains an item's segment objects; checks each object and the whole stream's digest."""

    def __init__(self, repo, item: Item):
        self._repo, self._item = repo, item
        self._records = iter(item.objects)
        self._current = None
        self._sha = hashlib.sha256()
        self._size = 0
        self._opened = 0

    def read(self, n: int = 1 << 20) -> bytes:
        while True:
            if self._current is None:
                record = next(self._records, None)
                if record is None:
                    self._check_end()
                    return b""
                # The first object's digest is the item's so far: let it hash for both.
                shared = self._sha if self._opened == 0 else None
                self._current = self._repo._open(record.key, record, shared)
                self._opened += 1
            data = self._current.read(n)
            if data:
                if self._opened > 1:
                    self._sha.update(data)
                self._size += len(data)
                return data
            self._current.close()
            self._current = None

    def _check_end(self) -> None:
        if self._size != self._item.size or self._sha.hexdigest() != self._item.sha256:
            raise IntegrityError(
                f"item {self._item.name}: reassembled stream does not match the manifest "
                "(segments missing, reordered or swapped)"
            )

    def __iter__(self) -> Iterator[bytes]:
        while data := self.read():
            yield data

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None

    def __enter__(self) -> ItemReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
