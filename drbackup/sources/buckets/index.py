"""The snapshot index: one JSON line per object, sorted by key (docs/buckets.md).

A snapshot stores its index as an ordinary item stream (type ``bucket-index.jsonl``),
compressed and encrypted like any other, so an index of millions of objects is written
and read as a stream and never held in memory.  This module only turns entries into bytes
and back; it knows nothing of storage or encryption.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import BinaryIO

from drbackup.errors import IntegrityError

INDEX_ITEM_TYPE = "bucket-index.jsonl"
INDEX_ITEM_PREFIX = "index:"
BLOCK_SIZE = 1 << 20


def index_item_name(bucket: str) -> str:
    """The item name of a bucket's index in a snapshot manifest: ``index:<bucket>``."""
    return f"{INDEX_ITEM_PREFIX}{bucket}"


def snapshot_buckets(manifest) -> list[str]:
    """The buckets a snapshot manifest holds an index for, in manifest order."""
    return [i.name[len(INDEX_ITEM_PREFIX) :] for i in manifest.items if i.type == INDEX_ITEM_TYPE]


@contextmanager
def open_index(open_item: Callable, manifest, bucket: str) -> Iterator[Iterator[IndexEntry]]:
    """The entries of ``bucket``'s index in ``manifest``; empty if it has none (or no manifest).

    ``open_item`` is the repository's item reader (``Repository.open_item``): every block
    is authenticated and the whole stream's digest checked at its end.
    """
    name = index_item_name(bucket)
    item = next((i for i in manifest.items if i.name == name), None) if manifest else None
    if item is None:
        yield iter(())
        return
    with open_item(item) as reader:
        yield iter_entries(reader, f"{manifest.target}/{manifest.backup_id} {name}")


@dataclass(frozen=True)
class IndexEntry:
    """One object of a snapshot: what it was, and which blob holds its content."""

    key: str
    size: int
    sha256: str  # of the content
    blob: str  # blob id: the content is at blobs/<blob[:2]>/<blob>
    etag: str
    last_modified: str  # as the listing said (compared verbatim by the next snapshot)
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)  # user metadata, names lowercase
    tags: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # cache-control, content-encoding, ...
    version_id: str | None = None

    def to_dict(self) -> dict:
        data = {
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
            "blob": self.blob,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "content_type": self.content_type,
            "metadata": self.metadata,
            "tags": self.tags,
        }
        if self.headers:
            data["headers"] = self.headers
        if self.version_id:
            data["version_id"] = self.version_id
        return data

    def to_line(self) -> bytes:
        """The entry as one UTF-8 JSON line (newline-terminated; keys are escaped)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8") + b"\n"

    @classmethod
    def from_dict(cls, data: dict) -> IndexEntry:
        """Parse one entry; unknown fields are ignored (format compatibility rule)."""
        return cls(
            key=data["key"],
            size=int(data["size"]),
            sha256=data["sha256"],
            blob=data["blob"],
            etag=data.get("etag", ""),
            last_modified=data.get("last_modified", ""),
            content_type=data.get("content_type") or "application/octet-stream",
            metadata=dict(data.get("metadata") or {}),
            tags=dict(data.get("tags") or {}),
            headers=dict(data.get("headers") or {}),
            version_id=data.get("version_id"),
        )


def encode_entries(entries: Iterable[IndexEntry], block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Index lines batched into blocks of about ``block_size`` bytes (for ``add_stream``)."""
    batch: list[bytes] = []
    size = 0
    for entry in entries:
        line = entry.to_line()
        batch.append(line)
        size += len(line)
        if size >= block_size:
            yield b"".join(batch)
            batch, size = [], 0
    if batch:
        yield b"".join(batch)


def iter_entries(reader: BinaryIO, what: str = "index", parse: Callable | None = None) -> Iterator:
    """Parse index lines from a plaintext reader, one block at a time.

    Lines are parsed by ``parse`` (a ``from_dict``; IndexEntry's by default).  Raises
    IntegrityError naming ``what`` for a line that is not a valid entry (the stream
    is authenticated, so this means a bug or a format from the future, not tampering).
    """
    pending = b""
    number = 0
    while block := reader.read(BLOCK_SIZE):
        lines = (pending + block).split(b"\n")
        pending = lines.pop()
        for line in lines:
            number += 1
            yield _parse(line, what, number, parse)
    if pending:
        yield _parse(pending, what, number + 1, parse)


def _parse(line: bytes, what: str, number: int, parse: Callable | None = None):
    try:
        return (parse or IndexEntry.from_dict)(json.loads(line))
    except (ValueError, KeyError, TypeError):
        raise IntegrityError(f"{what}: line {number} is not a valid index entry") from None
