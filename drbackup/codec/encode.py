"""Encoding: plaintext → zstd → AES-256-GCM chunks, pulled by ``Storage.put``; the
:class:`ObjectRecord` (sizes and SHA-256 digests) that a manifest records."""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterator

import zstandard

from drbackup.codec.aead import ChunkSealer, ObjectHeader, new_header
from drbackup.codec.blocks import MT_JOB_SIZE, CodecSettings, ObjectRecord


class EncodingReader:
    """A file-like ``read(n)`` over the encoded object, pulled by ``Storage.put``.

    ``plain_sha``: a fresh ``hashlib.sha256()`` to hash the plaintext into instead of a new
    one, so that a caller who needs the same digest (an item of one segment) hashes once.
    """

    def __init__(
        self,
        blocks: Iterator[bytes],
        header: ObjectHeader,
        data_key: bytes,
        object_key: str,
        settings: CodecSettings,
        progress: Callable[[int], None] | None = None,
        plain_sha=None,
    ):
        self._blocks = blocks
        self._sealer = ChunkSealer(data_key, object_key, header)
        self._cctx = _compressor(settings).compressobj() if settings.compress else None
        self._out: deque[bytes] = deque([self._sealer.header_bytes])
        self._out_len = len(self._sealer.header_bytes)
        self._done = False
        self._progress = progress
        self.plain_sha = fresh_sha256(plain_sha)
        self.stored_sha = hashlib.sha256()
        self.plain_size = 0
        self.stored_size = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or self._out_len < n):
            self._advance()
        if n < 0 or n >= self._out_len:
            data = b"".join(self._out)
            self._out.clear()
        else:
            data = self._take(n)
        self._out_len -= len(data)
        self.stored_sha.update(data)
        self.stored_size += len(data)
        return data

    def _take(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            part = self._out.popleft()
            if got + len(part) > n:
                cut = n - got
                self._out.appendleft(part[cut:])
                part = part[:cut]
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def _advance(self) -> None:
        block = next(self._blocks, None)
        if block is None:
            tail = self._cctx.flush() if self._cctx else b""
            chunks = self._sealer.update(tail) if tail else []
            chunks.append(self._sealer.finish())
            self._done = True
        else:
            self.plain_sha.update(block)
            self.plain_size += len(block)
            if self._progress:
                self._progress(len(block))
            data = self._cctx.compress(block) if self._cctx else block
            chunks = self._sealer.update(data) if data else []
        for chunk in chunks:
            self._out.append(chunk)
            self._out_len += len(chunk)

    def record(self, key: str) -> ObjectRecord:
        """The manifest record; valid once the reader has been read to the end."""
        if not self._done or self._out_len:
            raise RuntimeError("record() before the stream was fully read")
        return ObjectRecord(
            key=key,
            size=self.plain_size,
            sha256=self.plain_sha.hexdigest(),
            stored_size=self.stored_size,
            stored_sha256=self.stored_sha.hexdigest(),
            chunks=self._sealer.chunks,
            compressed=self._cctx is not None,
        )


_EMPTY_SHA256 = hashlib.sha256().digest()


def fresh_sha256(sha):
    """``sha`` if it is a SHA-256 that has hashed nothing yet, a new one if ``None``.

    Raises ValueError otherwise: a shared hash that already holds data would put a wrong
    digest in the manifest.
    """
    if sha is None:
        return hashlib.sha256()
    if sha.name != "sha256" or sha.digest() != _EMPTY_SHA256:
        raise ValueError("plain_sha must be a fresh hashlib.sha256()")
    return sha


def _compressor(settings: CodecSettings) -> zstandard.ZstdCompressor:
    """zstd at ``settings.level``; multithreaded with jobs of max(2 MiB, one window).

    zstd's default job is four windows (8 MiB at level 3) with several jobs in flight per
    worker: ~60 MiB of buffers at level 3 on two cores.  Jobs of one window keep ~15 MiB
    with the same ratio on dump data.
    """
    threads = _threads(settings.threads)
    if threads == 0:
        return zstandard.ZstdCompressor(level=settings.level)
    window = 1 << zstandard.ZstdCompressionParameters.from_level(settings.level).window_log
    params = zstandard.ZstdCompressionParameters.from_level(
        settings.level, threads=threads, job_size=max(MT_JOB_SIZE, window)
    )
    return zstandard.ZstdCompressor(compression_params=params)


def _threads(threads: int) -> int:
    # zstandard: -1 means "as many as cores"; 0/1 single-threaded.
    return -1 if threads == 0 else (0 if threads == 1 else threads)


def encode_to_storage(
    storage,
    object_key: str,
    blocks: Iterator[bytes],
    *,
    slot_type: int,
    slot: bytes,
    data_key: bytes,
    settings: CodecSettings,
    progress: Callable[[int], None] | None = None,
    plain_sha=None,
) -> ObjectRecord:
    """Compress, encrypt and store ``blocks`` under ``object_key``; return its record.

    ``plain_sha`` (optional): a fresh ``hashlib.sha256()`` that receives the plaintext and
    gives the record its digest; the caller may go on using it (see :class:`EncodingReader`).
    Raises whatever the storage raises; an interrupted put leaves no object (storage
    contract), and the object is referenced by nothing until a manifest names it.
    """
    header = new_header(
        slot_type, slot, compressed=settings.compress, chunk_size=settings.chunk_size
    )
    reader = EncodingReader(blocks, header, data_key, object_key, settings, progress, plain_sha)
    storage.put(object_key, reader)
    return reader.record(object_key)


def encode_to_bytes(
    object_key: str,
    body: bytes,
    *,
    slot_type: int,
    slot: bytes,
    data_key: bytes,
    settings: CodecSettings,
) -> tuple[bytes, ObjectRecord]:
    """A small object (a manifest, a document) encoded in memory: its stored bytes and record.

    For writes whose outcome must be checked by reading the object back (the manifest of
    a commit): the caller keeps the exact bytes it sent.
    """
    header = new_header(
        slot_type, slot, compressed=settings.compress, chunk_size=settings.chunk_size
    )
    reader = EncodingReader(iter([body]), header, data_key, object_key, settings)
    data = reader.read()
    return data, reader.record(object_key)
