"""The spool directory between PostgreSQL's archive/restore commands and their background
process (the pgBackRest ``archive-async`` pattern, docs/pitr.md).

A foreground command (``wal-push``, ``wal-fetch``) run by PostgreSQL once per file must be
quick and must not hold the repository key; one background process per spool does the work
with the key open and several files in flight.  They talk through files::

    <spool>/lock              held (flock) by the background process while it runs
    <spool>/want              wal-fetch: the file PostgreSQL asked for last
    <spool>/<name>            wal-fetch: a fetched file, complete (written aside, renamed)
    <spool>/<name>.ok         wal-push: stored in the repository
    <spool>/<name>.missing    wal-fetch: not in the repository
    <spool>/<name>.error      either: why it failed (one line, then the hint)
    <spool>/<kind>.log        the background process's errors

Every file is written aside and renamed, so a reader never sees half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from drbackup.errors import SourceError
from drbackup.sources.postgres import processes

OK, MISSING, ERROR = "ok", "missing", "error"
STATUSES = (OK, MISSING, ERROR)
_LOG_MAX = 4 << 20
T = TypeVar("T")


class Spool:
    """One spool directory (see the module docstring)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock_file = None

    def prepare(self) -> Spool:
        """Create the directory (owner-only) if needed; SourceError if that is impossible."""
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            lock = self.path / "lock"
            if not lock.exists():
                lock.touch(mode=0o600)
                self.own(lock)
        except OSError as exc:
            raise SourceError(
                f"cannot create spool directory {self.path}: {exc.strerror or exc}",
                hint="set postgres.<target>.wal.spool_dir to a directory this user may write",
            ) from None
        return self

    # --- status files -----------------------------------------------------------------------

    def status(self, name: str) -> tuple[str, str] | None:
        """``(status, text)`` recorded for ``name``, or None."""
        for status in STATUSES:
            try:
                return status, (self.path / f"{name}.{status}").read_text()
            except FileNotFoundError:
                continue
        return None

    def status_age(self, name: str, status: str) -> float:
        try:
            return time.time() - (self.path / f"{name}.{status}").stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def mark(self, name: str, status: str, text: str = "") -> None:
        self.write(f"{name}.{status}", text.encode())

    def clear(self, name: str) -> None:
        for status in STATUSES:
            (self.path / f"{name}.{status}").unlink(missing_ok=True)

    def write(self, leaf: str, data: bytes) -> None:
        """Write ``<spool>/<leaf>`` atomically (owned like the spool, see :meth:`own`)."""
        tmp = self.path / f".{leaf}.tmp"
        tmp.write_bytes(data)
        self.own(tmp)
        os.replace(tmp, self.path / leaf)

    def owner(self) -> tuple[int, int] | None:
        """The spool directory's owner when this process is root and that owner is not: a
        restore (root) serves a server that runs as ``postgres``, so what it writes here is
        given to that user."""
        if os.geteuid() != 0:
            return None
        st = self.path.stat()
        return (st.st_uid, st.st_gid) if st.st_uid != 0 else None

    def own(self, path: Path) -> None:
        if (owner := self.owner()) is not None:
            os.chown(path, *owner)

    def entries(self) -> list[str]:
        """Names in the spool (temporary files, the lock and logs excluded)."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return [n for n in names if not n.startswith(".") and n not in ("lock", "want")]

    def wanted(self) -> str | None:
        try:
            return (self.path / "want").read_text().strip() or None
        except FileNotFoundError:
            return None

    # --- the background process's lock ------------------------------------------------------

    def acquire(self) -> bool:
        """Take the lock until :meth:`release`; False if another process holds it.

        (flock on a read-only descriptor: the user that owns the lock file need not be the
        one that takes it.)"""
        handle = (self.path / "lock").open("rb")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lock_file = handle
        return True

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def is_served(self) -> bool:
        """True while a background process holds the lock."""
        try:
            handle = (self.path / "lock").open("rb")
        except FileNotFoundError:
            return False
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def log(self, kind: str, line: str) -> None:
        """Append a line to ``<kind>.log`` (restarted when it grows past 4 MiB)."""
        path = self.path / f"{kind}.log"
        with contextlib.suppress(OSError):
            if path.exists() and path.stat().st_size > _LOG_MAX:
                path.unlink()
            with path.open("a") as out:
                out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} [{os.getpid()}] {line}\n")


def poll_until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call ``check`` until it returns something other than None; back off from 2 ms to
    50 ms between calls.  Raises SourceError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise SourceError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def spawn_background(args: list[str], config_path: str | None, log: Path) -> None:
    """Start ``drbackup [-c CONFIG] ARGS...`` detached from this process (its own session,
    no inherited terminal), its stderr appended to ``log``: the command that started it
    returns without waiting, and the process outlives it."""
    argv = [sys.executable, "-m", "drbackup"]
    if config_path:
        argv += ["-c", str(Path(config_path).absolute())]
    with log.open("a") as err:
        # drbackup itself: it needs its own settings and secrets
        processes.start(
            [*argv, *args], env=os.environ, stderr=err, new_session=True, drbackup_child=True
        )
