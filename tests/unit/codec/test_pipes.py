"""The pipes to pg_dump and from pg_restore get a 1 MiB buffer (``widen_pipe``): pg_dump
writes 4 KiB pieces, and through the default 64 KiB pipe the reader would wake for nearly
every one.  Where the kernel refuses, the pipe keeps its size and nothing fails."""

from __future__ import annotations

import fcntl
import os

from drbackup.codec.pipeline import PIPE_SIZE, widen_pipe
from drbackup.sources.postgres.processes import StreamingProcess as _Process


def pipe_size(fd: int) -> int:
    return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)


def test_widen_pipe_sets_the_buffer():
    r, w = os.pipe()
    try:
        assert pipe_size(r) < PIPE_SIZE
        widen_pipe(w)
        assert pipe_size(r) == PIPE_SIZE
        os.write(w, b"x" * (PIPE_SIZE // 2))  # would block with the default buffer
        assert len(os.read(r, PIPE_SIZE)) == PIPE_SIZE // 2
    finally:
        os.close(r)
        os.close(w)


def test_widen_pipe_refused_is_harmless(tmp_path):
    with open(tmp_path / "f", "wb") as f:  # not a pipe: the kernel says EBADF
        widen_pipe(f.fileno())
        f.write(b"still usable")
    r, w = os.pipe()
    try:
        before = pipe_size(r)
        # beyond /proc/sys/fs/pipe-max-size: EPERM, unless the process has CAP_SYS_RESOURCE
        widen_pipe(w, size=(1 << 31) - 1)
        assert pipe_size(r) in (before, 1 << 31)
        os.write(w, b"still usable")
        assert os.read(r, 100) == b"still usable"
    finally:
        os.close(r)
        os.close(w)


def test_dump_process_reads_through_a_wide_pipe():
    with _Process(["sh", "-c", "head -c 300000 /dev/zero"], dict(os.environ), "test") as proc:
        assert pipe_size(proc.stdout.fileno()) == PIPE_SIZE
        assert len(proc.stdout.read()) == 300000
        proc.finish()
