"""Streaming stages: plaintext → zstd → AES-256-GCM chunks → storage, and back.

Memory is bounded by a few chunks plus zstd's window; nothing is written to temporary
files.  ``encode_to_storage`` returns an :class:`ObjectRecord` with the plaintext and stored
sizes and SHA-256 digests that go into a manifest; ``open_decoded`` yields a reader that
authenticates every chunk, decompresses, and checks the plaintext digest at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import zstandard

from drbackup.codec.aead import (
    ObjectHeader,
    open_chunks,
    read_header,
)
from drbackup.codec.blocks import (  # noqa: F401 - the stages' shared pieces, found here too
    BLOCK_SIZE,
    PIPE_SIZE,
    QUEUE_DEPTH,
    CodecSettings,
    ObjectRecord,
    iter_blocks,
    widen_pipe,
)
from drbackup.codec.encode import (  # noqa: F401 - the encoding side, found here too
    EncodingReader,
    encode_to_bytes,
    encode_to_storage,
    fresh_sha256,
)
from drbackup.errors import IntegrityError

PIPELINE_AFTER = 8 << 20  # plaintext bytes a DecodedReader reads before it uses helper threads
DECODE_DEPTH = 4  # chunks (and plaintext blocks) queued between a DecodedReader's threads


def iter_blocks_threaded(source: BinaryIO, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Blocks of ``source`` read by a background thread through a bounded queue.

    Reading a pipe (pg_dump's stdout) in its own thread lets the producer run while this
    thread compresses and encrypts.  An exception in the reader is re-raised here.
    """
    blocks = _Prefetcher(iter_blocks(source, block_size), QUEUE_DEPTH, "drbackup-reader")
    try:
        yield from blocks
    finally:
        blocks.close()


class _ChunkReader:
    """File-like view of authenticated chunk plaintexts (for zstd's stream_reader).

    ``chunks`` may be replaced between reads (see :meth:`DecodedReader._start_helpers`).  A
    whole chunk is handed on as it is; a partial read slices a view, never copies the rest.
    """

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = chunks
        self._buf = b""
        self._view: memoryview | None = None  # over _buf once a read took part of it
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        if self._pos >= len(self._buf):
            self._buf, self._view, self._pos = next(self.chunks, b""), None, 0
        if self._pos == 0 and (n < 0 or n >= len(self._buf)):
            data, self._buf = self._buf, b""
            return data
        if self._view is None:
            self._view = memoryview(self._buf)
        end = len(self._buf) if n < 0 else min(len(self._buf), self._pos + n)
        data = self._view[self._pos : end].tobytes()
        self._pos = end
        return data


class _Prefetcher:
    """The items of ``items``, produced by a daemon thread up to ``depth`` ahead.

    Iterating re-raises an exception of the producer (an :class:`IntegrityError` from a
    chunk, a storage error) at the point where the consumer reaches it.
    """

    _END = object()

    def __init__(self, items: Iterator, depth: int, name: str):
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _run(self, items: Iterator) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._put(_Raised(exc))
            return
        self._put(self._END)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._q.put(item, timeout=0.1)
                return True
        return False

    def __iter__(self) -> Iterator:
        while True:
            item = self._q.get()
            if item is self._END:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item

    def close(self) -> None:
        """Stop the producer (it may be waiting on a full queue) and wait for it."""
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._q.get_nowait()
            self._thread.join(timeout=0.05)


@dataclass
class _Raised:
    exc: BaseException


class _BackgroundSha:
    """Feeds a hash from a thread: hashlib releases the GIL on large buffers, so hashing
    the plaintext runs beside decompression instead of after it."""

    def __init__(self, sha, depth: int):
        self._sha = sha
        self._error: BaseException | None = None
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._run, name="drbackup-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._q.get()) is not None:
            if self._error is None:  # after an error, keep draining: update() never blocks
                try:
                    self._sha.update(data)
                except BaseException as exc:  # noqa: BLE001 - raised by finish()
                    self._error = exc

    def update(self, data: bytes) -> None:
        self._q.put(data)

    def finish(self) -> None:
        """Wait until every block given is hashed."""
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


class DecodedReader:
    """Plaintext reader over a stored object; checks size and SHA-256 against ``expected``.

    ``read`` raises :class:`IntegrityError` as soon as a chunk fails authentication, and at
    the end of the stream if the plaintext differs from the manifest's record.
    ``plain_sha``: a fresh ``hashlib.sha256()`` to hash the plaintext into (shared with a
    caller that needs the same digest), else a new one.

    Once ``PIPELINE_AFTER`` plaintext bytes have been read (a large object), reading,
    hashing and authenticating the stored chunks moves to one helper thread and hashing
    the plaintext to another, while ``read`` decompresses: on several cores the stages
    overlap.  Every check is the same; only authenticated chunks reach the decompressor.
    """

    def __init__(
        self,
        raw: BinaryIO,
        header: ObjectHeader,
        header_bytes: bytes,
        data_key: bytes,
        object_key: str,
        expected: ObjectRecord | None,
        plain_sha=None,
    ):
        self._raw = raw
        self._key = object_key
        self._expected = expected
        self._stored_sha = hashlib.sha256(header_bytes)
        chunks = open_chunks(
            _HashingReader(raw, self._stored_sha), data_key, object_key, header, header_bytes
        )
        self._source = _ChunkReader(chunks)
        if header.compressed:
            dctx = zstandard.ZstdDecompressor()
            self._stream = dctx.stream_reader(
                self._source, read_size=BLOCK_SIZE, read_across_frames=True
            )
        else:
            self._stream = self._source
        self._sha = fresh_sha256(plain_sha)
        self._hash = self._sha.update
        self._prefetch: _Prefetcher | None = None
        self._hasher: _BackgroundSha | None = None
        self.size = 0
        self._finished = False

    def read(self, n: int = BLOCK_SIZE) -> bytes:
        if self._finished:
            return b""
        if self._prefetch is None and self.size >= PIPELINE_AFTER:
            self._start_helpers()
        try:
            data = self._stream.read(n if n > 0 else BLOCK_SIZE)
        except zstandard.ZstdError as exc:
            raise IntegrityError(
                f"{self._key}: decompression failed after authentication: {exc}"
            ) from None
        if data:
            self._hash(data)
            self.size += len(data)
            return data
        self._finished = True
        self._stop_helpers()
        self._check_end()
        return b""

    def _start_helpers(self) -> None:
        # The chunk generator is idle between reads: from now on a thread drives it.
        self._prefetch = _Prefetcher(self._source.chunks, DECODE_DEPTH, "drbackup-decrypt")
        self._source.chunks = iter(self._prefetch)
        self._hasher = _BackgroundSha(self._sha, DECODE_DEPTH)
        self._hash = self._hasher.update

    def _stop_helpers(self) -> None:
        if self._prefetch is not None:
            self._prefetch.close()
        if self._hasher is not None:
            self._hasher.finish()
            self._hasher = None
            self._hash = self._sha.update

    def _check_end(self) -> None:
        exp = self._expected
        if exp is None:
            return
        if self.size != exp.size or self._sha.hexdigest() != exp.sha256:
            raise IntegrityError(
                f"{self._key}: plaintext does not match the manifest "
                f"({self.size} bytes, expected {exp.size}; sha256 mismatch)"
            )
        if self._stored_sha.hexdigest() != exp.stored_sha256:
            raise IntegrityError(f"{self._key}: stored bytes do not match the manifest's sha256")

    def __iter__(self) -> Iterator[bytes]:
        while data := self.read(BLOCK_SIZE):
            yield data

    def close(self) -> None:
        try:
            self._stop_helpers()
        finally:
            self._raw.close()

    def __enter__(self) -> DecodedReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _HashingReader:
    def __init__(self, raw: BinaryIO, sha):
        self._raw, self._sha = raw, sha

    def read(self, n: int) -> bytes:
        data = self._raw.read(n)
        if data:
            self._sha.update(data)
        return data


def open_decoded(
    storage,
    object_key: str,
    resolve_key: Callable[[ObjectHeader], bytes],
    expected: ObjectRecord | None = None,
    plain_sha=None,
) -> DecodedReader:
    """Open ``object_key`` for reading plaintext; ``resolve_key`` maps its header to a data key.

    ``plain_sha``: see :class:`DecodedReader`.

    Raises :class:`ObjectNotFoundError` if missing, :class:`IntegrityError` if its header is
    damaged (further damage surfaces on ``read``).
    """
    raw = storage.open(object_key)
    try:
        header, header_bytes = read_header(raw, object_key)
        data_key = resolve_key(header)
        return DecodedReader(raw, header, header_bytes, data_key, object_key, expected, plain_sha)
    except BaseException:
        raw.close()
        raise
