"""LocalStorage hands written data to the disk as it goes (storage/local.py)."""

from __future__ import annotations

import hashlib
import io
import os

from drbackup.storage import local
from drbackup.storage.local import LocalStorage


def test_large_put_starts_writeback_as_it_goes_and_keeps_every_byte(tmp_path, monkeypatch):
    # The advice the kernel gets (the real call goes through): the ranges it covers.
    calls: list[tuple[int, int]] = []
    real = os.posix_fadvise

    def observed(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_DONTNEED
        calls.append((offset, offset + length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", observed)
    step = local._WRITEBACK_EVERY
    data = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(80_000))
    data = data * (2 * step // len(data) + 1) + b"tail"  # a little over two steps
    storage = LocalStorage(tmp_path)
    storage.prepare()
    assert storage.put("k", io.BufferedReader(io.BytesIO(data), 1 << 16)) == len(data)

    assert storage.get("k") == data
    # Every step of the object, in order, each reaching one step back (to drop the pages
    # still being written last time); the last partial step is left to the final fsync.
    assert len(calls) == len(data) // step
    assert calls[0] == (0, step)
    assert all(start == max(0, end - 2 * step) for start, end in calls)
    assert [end for _, end in calls] == [step * (i + 1) for i in range(len(calls))]
