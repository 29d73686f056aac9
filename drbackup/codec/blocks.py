"""The pieces every stream stage shares: block sizes, what a stored object's record holds,
the codec's settings, reading a source in blocks, and wider pipes."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import BinaryIO

from drbackup.codec.aead import DEFAULT_CHUNK_SIZE

BLOCK_SIZE = 1 << 20
QUEUE_DEPTH = 8
MT_JOB_SIZE = 2 << 20  # smallest zstd job when multithreaded; see encode._compressor
PIPE_SIZE = 1 << 20  # buffer asked for the pipes to and from pg_dump / pg_restore


@dataclass
class ObjectRecord:
    """What a manifest records about one stored object."""

    key: str
    size: int  # plaintext bytes
    sha256: str  # of the plaintext
    stored_size: int
    stored_sha256: str  # of the bytes in storage
    chunks: int
    compressed: bool

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ObjectRecord:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class CodecSettings:
    level: int = 1
    threads: int = 0  # 0: as many as cores (zstd "-T0"); 1: single-threaded
    chunk_size: int = DEFAULT_CHUNK_SIZE
    compress: bool = True


def iter_blocks(source: BinaryIO, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
    """Blocks of ``source`` read in the calling thread."""
    while block := source.read(block_size):
        yield block


def widen_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Ask the kernel for a ``size``-byte buffer on pipe ``fd`` (Linux; 64 KiB by default).

    pg_dump writes its archive in 4 KiB stdio pieces: through a 64 KiB pipe the reader wakes
    for nearly every one (~100,000 context switches per GiB); through 1 MiB it takes them
    in batches, about 0.5 CPU-seconds less per GiB dumped (bench/README.md).  Best effort:
    where the call is missing or refused (``/proc/sys/fs/pipe-max-size``, the user's pipe
    quota) the pipe keeps its size, which is only slower.
    """
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setpipe, size)
