"""Taking a WAL file the read-ahead fetcher put in a spool: the client side of ``wal-fetch``.

Standard library only, so that the ``restore_command`` of a server that a restore started
itself can run this file as a script (``python3 -I -S wal_take.py SPOOL %f %p``): one bare
interpreter start (~25 ms) instead of ``drbackup wal-fetch`` (~200 ms of imports) for each
file recovery asks for, while the restoring process serves the spool.  ``wal-fetch`` answers
through the same :func:`answer`.

The spool's protocol (actions/wal_spool.py): the client writes the name it wants into
``want`` (aside, then renamed); the fetcher answers with ``<name>`` (the file, complete),
``<name>.missing`` or ``<name>.error`` (the message, then the hint); the fetcher holds an
flock on ``lock`` while it serves the spool.  A ``.missing`` older than ``STALE_MISSING``
was read ahead before the file existed: it is asked for again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import time

MISSING, ERROR = "missing", "error"
STALE_MISSING = 2.0  # seconds after which a read-ahead "missing" is checked again
TIMEOUT = 60.0


class FetchFailed(Exception):
    """The fetcher could not provide the file (damaged, unreachable): message and hint."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message, self.hint = message, hint


def ask(spool: str, name: str) -> None:
    """Write ``want`` (as the spool's owner when run by the server)."""
    tmp = os.path.join(spool, ".want.tmp")
    with open(tmp, "w") as f:
        f.write(name)
    os.replace(tmp, os.path.join(spool, "want"))


def answer(spool: str, name: str, dest: str) -> bool | None:
    """True once the file is at ``dest``; False if the archive lacks it; None: not yet (or
    a stale read-ahead answer was cleared: ask again).  Raises FetchFailed."""
    if _take(os.path.join(spool, name), dest):
        return True
    missing = os.path.join(spool, f"{name}.{MISSING}")
    try:
        age = time.time() - os.stat(missing).st_mtime
    except FileNotFoundError:
        age = None
    if age is not None:
        _unlink(missing)
        return None if age > STALE_MISSING else False
    error = os.path.join(spool, f"{name}.{ERROR}")
    try:
        with open(error) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    _unlink(error)
    message, _, hint = text.partition("\n")
    raise FetchFailed(message, hint or None)


def served(spool: str) -> bool:
    """True while a fetcher holds the spool's lock."""
    try:
        handle = open(os.path.join(spool, "lock"), "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _take(source: str, dest: str) -> bool:
    """Move ``source`` to ``dest`` (rename, or copy aside and rename across file systems)."""
    if not os.path.exists(source):
        return False
    try:
        os.replace(source, dest)
    except OSError:
        tmp = os.path.join(os.path.dirname(dest) or ".", f".{os.path.basename(dest)}.drbackup-tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
        _unlink(source)
    return True


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def main(argv: list[str]) -> int:
    """``wal_take.py SPOOL NAME DEST``: PostgreSQL's exit codes (0: the file is at DEST; 1
    quietly: not archived; 1 with a message: failed)."""
    spool, name, dest = argv
    ask(spool, name)
    deadline, delay = time.monotonic() + TIMEOUT, 0.001
    while True:
        try:
            got = answer(spool, name, dest)
        except FetchFailed as exc:
            print(f"drbackup: error: {exc.message}", file=sys.stderr)
            return 1
        if got is not None:
            return 0 if got else 1
        if not served(spool):
            print(f"drbackup: error: no WAL fetcher serves {spool}", file=sys.stderr)
            return 1
        if time.monotonic() > deadline:
            print(f"drbackup: error: timed out waiting for WAL file {name}", file=sys.stderr)
            return 1
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
