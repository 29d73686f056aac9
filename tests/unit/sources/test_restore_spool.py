"""The spooled restore (``run_pg_restore`` with ``{archive}``, i.e. ``--jobs`` > 1) and the
target preparation it runs alongside.  No PostgreSQL: pg_restore is a small Python script
that checks the spooled archive and leaves a marker when it runs.

What must hold: the preparation overlaps the spool; pg_restore starts only once both are
done; a failed preparation stops the spool, removes it, restores nothing and is the error
raised; a failed spool is raised after the preparation has finished; the spool directory is
removed in every case.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from drbackup.errors import IntegrityError, RestoreError
from drbackup.sources.postgres.restore import run_pg_restore

BLOCK = 64 << 10

FAKE_PG_RESTORE = """
import hashlib, pathlib, sys
marker, expected, archive = sys.argv[1], sys.argv[2], sys.argv[-1]
pathlib.Path(marker).write_text(archive)
if hashlib.sha256(pathlib.Path(archive).read_bytes()).hexdigest() != expected:
    print("pg_restore: error: archive differs", file=sys.stderr)
    sys.exit(1)
"""


class Blocks:
    """A reader of ``count`` blocks of BLOCK bytes; ``hook(index)`` runs before each."""

    def __init__(self, count: int, hook=None):
        self.count, self.hook = count, hook
        self.read_blocks = 0

    def read(self, n: int = -1) -> bytes:
        if self.read_blocks == self.count:
            return b""
        if self.hook:
            self.hook(self.read_blocks)
        self.read_blocks += 1
        return bytes([self.read_blocks % 256]) * BLOCK

    def content(self) -> bytes:
        return b"".join(bytes([i % 256]) * BLOCK for i in range(1, self.count + 1))


@pytest.fixture
def spool_dir(tmp_path) -> Path:
    path = tmp_path / "spool"
    path.mkdir()
    return path


def argv_for(tmp_path: Path, expected: bytes) -> tuple[list[str], Path]:
    marker = tmp_path / "pg_restore-ran"
    digest = hashlib.sha256(expected).hexdigest()
    return [sys.executable, "-c", FAKE_PG_RESTORE, str(marker), digest, "{archive}"], marker


def run(argv, reader, spool_dir, alongside=None):
    return run_pg_restore(
        argv,
        dict(os.environ),
        reader,
        spool_dir=str(spool_dir),
        what="restore",
        alongside=alongside,
    )


def test_preparation_overlaps_the_spool_and_precedes_pg_restore(tmp_path, spool_dir):
    halfway = threading.Event()
    log = []
    reader = Blocks(40, hook=lambda i: halfway.set() if i == 20 else None)
    argv, marker = argv_for(tmp_path, reader.content())

    def prepare():
        log.append(("prepare saw the spool half way", halfway.wait(timeout=30)))
        log.append(("pg_restore not started", not marker.exists()))

    result = run(argv, reader, spool_dir, prepare)
    assert log == [("prepare saw the spool half way", True), ("pg_restore not started", True)]
    assert marker.exists()  # pg_restore ran on the whole archive (it checks the digest)
    assert result.bytes == 40 * BLOCK
    assert list(spool_dir.iterdir()) == []


def test_failed_preparation_stops_the_spool_and_restores_nothing(tmp_path, spool_dir):
    failed = threading.Event()

    def hook(i):
        if i == 3:  # the preparation fails while the spool is running
            assert failed.wait(timeout=30)
            time.sleep(0.05)

    reader = Blocks(2000, hook)  # 125 MiB if nothing stopped it
    argv, marker = argv_for(tmp_path, reader.content())

    def prepare():
        failed.set()
        raise RestoreError("target database x is not empty (3 objects)")

    with pytest.raises(RestoreError, match=r"^target database x is not empty \(3 objects\)$"):
        run(argv, reader, spool_dir, prepare)
    assert not marker.exists()
    assert reader.read_blocks < 100  # stopped, not spooled to the end
    assert list(spool_dir.iterdir()) == []


def test_failed_spool_is_raised_after_the_preparation_finished(tmp_path, spool_dir):
    done = []

    def hook(i):
        if i == 5:
            raise IntegrityError("data/app/x/0000-00000: chunk 5 failed authentication")

    reader = Blocks(50, hook)
    argv, marker = argv_for(tmp_path, reader.content())

    def prepare():
        time.sleep(0.3)  # still preparing when the spool fails
        done.append(True)

    with pytest.raises(IntegrityError, match=r"^data/app/x/0000-00000: chunk 5 failed"):
        run(argv, reader, spool_dir, prepare)
    assert done == [True]
    assert not marker.exists()
    assert list(spool_dir.iterdir()) == []


def test_failed_preparation_wins_over_a_failed_spool(tmp_path, spool_dir):
    def hook(i):
        if i == 2:
            raise IntegrityError("data/app/x/0000-00000: chunk 2 failed authentication")

    def prepare():
        time.sleep(0.2)
        raise RestoreError("cannot create target database x: permission denied")

    reader = Blocks(50, hook)
    argv, marker = argv_for(tmp_path, reader.content())
    with pytest.raises(RestoreError, match="^cannot create target database x"):
        run(argv, reader, spool_dir, prepare)
    assert not marker.exists()
    assert list(spool_dir.iterdir()) == []


def test_pg_restore_failure_after_the_spool_removes_it(tmp_path, spool_dir):
    reader = Blocks(10)
    argv, marker = argv_for(tmp_path, b"something else")
    with pytest.raises(RestoreError, match="pg_restore reported 1 error"):
        run(argv, reader, spool_dir, lambda: None)
    assert marker.exists()
    assert list(spool_dir.iterdir()) == []


def test_streamed_restore_runs_the_preparation_first(tmp_path):
    marker = tmp_path / "pg_restore-ran"
    reader = Blocks(10)
    script = (
        "import hashlib, pathlib, sys; data = sys.stdin.buffer.read();"
        f"pathlib.Path({str(marker)!r}).write_text(hashlib.sha256(data).hexdigest())"
    )
    log = []
    result = run_pg_restore(
        [sys.executable, "-c", script],
        dict(os.environ),
        reader,
        spool_dir=None,
        what="restore",
        alongside=lambda: log.append(marker.exists()),
    )
    assert log == [False]
    assert marker.read_text() == hashlib.sha256(reader.content()).hexdigest()
    assert result.bytes == 10 * BLOCK
