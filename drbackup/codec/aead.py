"""The authenticated chunk stream every stored object is written in (format v1).

An object is a header followed by chunks (see docs/crypto.md):

    header = MAGIC(4) | VERSION(1) | FLAGS(1) | SLOT_TYPE(1) | SLOT_LEN(2, BE) | SLOT
             | SALT(16) | CHUNK_SIZE(4, BE)
    chunk  = AES-256-GCM(K_obj, nonce = COUNTER(11, BE) | FINAL(1), plaintext, aad = header)

``K_obj = HKDF-SHA256(ikm=data_key, salt=SALT, info="drbackup/v1/object\\0" + object_key)``:
binding the object key means an object moved or swapped to another key fails to
authenticate; a per-object random salt means a nonce never repeats under one key.  Every
chunk but the last holds exactly CHUNK_SIZE plaintext bytes; the last one (possibly empty)
is sealed with FINAL=1, so truncation at a chunk boundary, reordering and splicing between
objects or backups are all detected.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from drbackup.errors import IntegrityError

MAGIC = b"DRBK"
VERSION = 1
TAG_SIZE = 16
SALT_SIZE = 16
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 16 << 20
FLAG_ZSTD = 0x01
_FIXED = struct.Struct(">4sBBBH")  # magic, version, flags, slot type, slot length
_TAIL = struct.Struct(">16sI")  # salt, chunk size


@dataclass(frozen=True)
class ObjectHeader:
    """The clear-text header of a stored object: how to find its key, never the key."""

    flags: int
    slot_type: int
    slot: bytes
    salt: bytes
    chunk_size: int

    def encode(self) -> bytes:
        return (
            _FIXED.pack(MAGIC, VERSION, self.flags, self.slot_type, len(self.slot))
            + self.slot
            + _TAIL.pack(self.salt, self.chunk_size)
        )

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_ZSTD)


def read_header(reader: BinaryIO, object_key: str) -> tuple[ObjectHeader, bytes]:
    """Read and parse a header from ``reader``; return it and its raw bytes.

    Raises :class:`IntegrityError` naming ``object_key`` if the bytes are not a v1 header.
    """
    fixed = _read_exact(reader, _FIXED.size)
    if len(fixed) < _FIXED.size:
        raise IntegrityError(f"{object_key}: truncated object header")
    magic, version, flags, slot_type, slot_len = _FIXED.unpack(fixed)
    if magic != MAGIC:
        raise IntegrityError(f"{object_key}: not a drbackup object (bad magic)")
    if version != VERSION:
        raise IntegrityError(f"{object_key}: unsupported object format version {version}")
    rest = _read_exact(reader, slot_len + _TAIL.size)
    if len(rest) < slot_len + _TAIL.size:
        raise IntegrityError(f"{object_key}: truncated object header")
    salt, chunk_size = _TAIL.unpack(rest[slot_len:])
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise IntegrityError(f"{object_key}: invalid chunk size {chunk_size} in header")
    header = ObjectHeader(flags, slot_type, rest[:slot_len], salt, chunk_size)
    return header, fixed + rest


def derive_object_key(data_key: bytes, salt: bytes, object_key: str) -> bytes:
    """Per-object AES-256 key from the backup's data key, the object's salt and its key."""
    info = b"drbackup/v1/object\x00" + object_key.encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(data_key)


def _nonce(counter: int, final: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


class ChunkSealer:
    """Seals plaintext into chunks; feed with :meth:`update`, end with :meth:`finish`.

    Memory: at most one chunk of buffered plaintext.  Whole chunks inside a large
    :meth:`update` are sealed straight from the caller's buffer, without a copy.

    Raises :class:`ValueError` for a chunk size outside 1..MAX_CHUNK_SIZE.
    """

    def __init__(self, data_key: bytes, object_key: str, header: ObjectHeader):
        if not 0 < header.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be 1..{MAX_CHUNK_SIZE}, not {header.chunk_size}")
        self.header_bytes = header.encode()
        self._aead = AESGCM(derive_object_key(data_key, header.salt, object_key))
        self._chunk_size = header.chunk_size
        self._buf = bytearray()
        self._counter = 0

    def update(self, data: bytes) -> list[bytes]:
        """Add plaintext; return the chunks it completed (possibly none).

        A full chunk is held back until more data arrives, because only then is it known
        not to be the final one.
        """
        size = self._chunk_size
        if len(self._buf) + len(data) <= size:
            self._buf += data
            return []
        out = []
        with memoryview(data) as view:
            rest = view
            if self._buf:  # complete the pending chunk: more data follows it
                need = size - len(self._buf)
                self._buf += rest[:need]
                rest = rest[need:]
                out.append(self._seal(self._buf, final=False))
                self._buf.clear()
            while len(rest) > size:
                out.append(self._seal(rest[:size], final=False))
                rest = rest[size:]
            self._buf += rest
        return out

    def finish(self) -> bytes:
        """Seal what is left (maybe nothing) as the final chunk."""
        chunk = self._seal(self._buf, final=True)
        self._buf.clear()
        return chunk

    @property
    def chunks(self) -> int:
        return self._counter

    def _seal(self, plaintext, final: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._counter, final), plaintext, self.header_bytes)
        self._counter += 1
        return sealed


def open_chunks(
    reader: BinaryIO, data_key: bytes, object_key: str, header: ObjectHeader, header_bytes: bytes
) -> Iterator[bytes]:
    """Yield authenticated plaintext chunks read from ``reader`` (positioned after the header).

    Raises :class:`IntegrityError` naming ``object_key`` and the chunk index when a chunk
    fails authentication, the stream is truncated, or data follows the final chunk.
    """
    aead = AESGCM(derive_object_key(data_key, header.salt, object_key))
    sealed_size = header.chunk_size + TAG_SIZE
    counter = 0
    current = _read_exact(reader, sealed_size)
    while True:
        if len(current) < TAG_SIZE:
            raise IntegrityError(
                f"{object_key}: truncated at chunk {counter} (no final chunk)",
                hint="the object was cut short; restore from another backup",
            )
        nxt = _read_exact(reader, sealed_size) if len(current) == sealed_size else b""
        final = not nxt
        try:
            yield aead.decrypt(_nonce(counter, final), current, header_bytes)
        except InvalidTag:
            raise IntegrityError(_auth_failure(object_key, counter, final)) from None
        if final:
            return
        counter += 1
        current = nxt


def _auth_failure(object_key: str, counter: int, final: bool) -> str:
    if final and counter > 0:
        return (
            f"{object_key}: chunk {counter} failed authentication "
            "(corrupted, truncated, or chunks reordered or spliced)"
        )
    return (
        f"{object_key}: chunk {counter} failed authentication "
        "(corrupted, tampered, moved from another key, or wrong key)"
    )


def new_header(slot_type: int, slot: bytes, *, compressed: bool, chunk_size: int) -> ObjectHeader:
    """A header with a fresh random salt."""
    return ObjectHeader(
        flags=FLAG_ZSTD if compressed else 0,
        slot_type=slot_type,
        slot=slot,
        salt=os.urandom(SALT_SIZE),
        chunk_size=chunk_size,
    )


def _read_exact(reader: BinaryIO, n: int) -> bytes:
    """Read up to ``n`` bytes, looping over short reads; fewer only at end of stream."""
    data = reader.read(n)
    if data is None:
        data = b""
    if len(data) == n or not data:
        return bytes(data)
    parts = [data]
    got = len(data)
    while got < n:
        more = reader.read(n - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
