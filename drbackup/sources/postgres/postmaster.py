"""A postmaster found through its data directory: its pid, whether it still serves that
directory, a fast shutdown; and a free port for a new one."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

from drbackup.errors import SourceError

HOST = "127.0.0.1"
STOP_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def read_postmaster_pid(data_dir: Path) -> int | None:
    """The pid in ``data_dir/postmaster.pid``, or None if the file is missing or unreadable."""
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    except OSError:
        return None
    return int(first) if first.strip().isdigit() else None


def is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is a live process serving ``data_dir``.

    On Linux the postmaster's working directory is its data directory, which guards against
    a reused pid; zombies count as gone.  Elsewhere, any live pid counts.
    """
    if not Path("/proc/self").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except FileNotFoundError:
        return False
    except PermissionError:
        return True  # not ours to inspect; trust postmaster.pid
    return os.path.realpath(cwd) == os.path.realpath(data_dir)


def stop_postmaster(data_dir: Path, timeout: float = STOP_TIMEOUT) -> bool:
    """Fast shutdown (SIGINT, as ``pg_ctl stop -m fast``) of the server in ``data_dir``,
    whoever started it; waits until it is gone.

    Returns True if a server was running, False if none was.  Raises SourceError if it
    cannot be signalled or is still running after ``timeout`` seconds.
    """
    pid = read_postmaster_pid(data_dir)
    if pid is None or not is_postmaster_of(pid, data_dir):
        return False
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        raise SourceError(
            f"cannot stop the postgresql server (pid {pid}) in {data_dir}: permission denied",
            hint="run as root or as the user that owns it",
        ) from exc
    deadline = time.monotonic() + timeout
    delay = 0.01
    while is_postmaster_of(pid, data_dir):
        if time.monotonic() > deadline:
            raise SourceError(f"postgresql server (pid {pid}) in {data_dir} did not stop in time")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    return True


def cleanup_stale(base_dir: Path) -> list[Path]:
    """Stop every server whose data directory (one holding postmaster.pid) is under ``base_dir``.

    For leftovers of killed runs.  Deletes nothing.  Returns the data directories whose
    server was stopped.  Raises SourceError as :func:`stop_postmaster`.
    """
    stopped = []
    for pid_file in sorted(Path(base_dir).glob("**/postmaster.pid")):
        if stop_postmaster(pid_file.parent):
            stopped.append(pid_file.parent)
    return stopped
