"""LocalStorage hands written data to the disk as it goes (storage/local.py)."""

from __future__ import annotations

import hashlib
import io

from drbackup.storage import local
from drbackup.storage.local import LocalStorage


def test_large_put_starts_writeback_as_it_goes_and_keeps_every_byte(tmp_path, monkeypatch):
    calls: list[tuple[int, int]] = []
    real = local._start_writeback

    def observed(fd: int, start: int, end: int) -> None:
        calls.append((start, end))
        real(fd, start, end)

    monkeypatch.setattr(local, "_start_writeback", observed)
    step = local._WRITEBACK_EVERY
    data = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(80_000))
    data = data * (2 * step // len(data) + 1) + b"tail"  # a little over two steps
    storage = LocalStorage(tmp_path)
    storage.prepare()
    assert storage.put("k", io.BufferedReader(io.BytesIO(data), 1 << 16)) == len(data)

    assert storage.get("k") == data
    # Every step of the object, in order, without gaps; the last partial step is left to
    # the final fsync.
    assert [s for s, _ in calls] == [e for _, e in [(0, 0), *calls[:-1]]]
    assert len(calls) == len(data) // step
    assert all(e - s >= step for s, e in calls)
