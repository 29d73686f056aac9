"""``pg_receivewal``: its argv (a pure builder) and its supervision (started through
``processes``, the one place children start).

pg_receivewal (PostgreSQL's own streaming client) writes the WAL a server sends over a
replication connection into a directory: the segment being filled as
``<segment>.partial``, padded to the segment size with zeros when it is created and renamed
to ``<segment>`` once complete (after an fsync); a timeline switch leaves the old timeline's
last segment as ``.partial`` for good and writes the new timeline's ``<tli>.history``.  On
start it resumes after the newest complete segment in its directory, or at the start of the
newest ``.partial`` (an empty ``.partial`` file marks where to start), else (PostgreSQL 15)
at the replication slot's ``restart_lsn``, else at the server's current position.

drbackup runs it with ``--no-loop`` (a lost connection ends it; the supervisor restarts it,
after uploading what it received) and a slot (the server keeps WAL until it was received).
The password travels in ``PGPASSWORD`` (``environment.client_env``), never in argv.  The
child gets the kernel's death signal when the thread that started it dies
(``setpriv --pdeathsig``): a daemon killed with SIGKILL leaves no pg_receivewal holding its
slot.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from psycopg.conninfo import make_conninfo

from drbackup.errors import SourceError
from drbackup.sources.postgres import processes
from drbackup.sources.postgres.environment import dsn_without_password
from drbackup.sources.postgres.run_as import build_run_prefix
from drbackup.sources.postgres.wal import (
    HISTORY,
    PARTIAL,
    SEGMENT,
    WalFileName,
    parse_wal_file_name,
)

STOP_TIMEOUT = 10.0


def receivewal_argv(
    bin_dir: Path,
    dsn: str,
    directory: Path,
    *,
    slot: str,
    synchronous: bool = False,
    status_interval: int = 10,
) -> list[str]:
    """Stream into ``directory`` through ``slot`` until the connection ends.

    The connection's ``application_name`` is the slot's name (what
    ``synchronous_standby_names`` lists for ``synchronous``); ``status_interval`` is how
    often (seconds) pg_receivewal reports its position, which moves the slot on.
    """
    conninfo = make_conninfo(dsn_without_password(dsn), application_name=slot)
    argv = [
        str(bin_dir / "pg_receivewal"),
        f"--directory={directory}",
        f"--slot={slot}",
        "--no-loop",
        "--no-password",
        "--verbose",
        f"--status-interval={status_interval}",
    ]
    if synchronous:
        argv.append("--synchronous")
    return [*argv, f"--dbname={conninfo}"]


def is_routine_line(line: str) -> bool:
    """pg_receivewal's per-segment progress lines (``--verbose``), not worth a log entry."""
    return "finished segment at" in line


class ReceiveWal:
    """One run of pg_receivewal: started, its stderr kept (the last lines) and handed to
    ``on_line``, stopped with SIGINT (then SIGKILL after ``STOP_TIMEOUT``)."""

    def __init__(self, argv: list[str], env: dict, on_line: Callable[[str], None] | None = None):
        self.argv, self.env, self.on_line = argv, env, on_line
        self.tail: deque[str] = deque(maxlen=20)
        self.started = 0.0
        self._proc: processes.Popen | None = None
        self._drain: threading.Thread | None = None

    def start(self) -> ReceiveWal:
        """Start it; SourceError if it cannot be run."""
        prefix = build_run_prefix(
            None, setpriv=shutil.which("setpriv"), runuser=None, pdeathsig=True
        )
        self._proc = processes.start(
            [*prefix, *self.argv],
            env=self.env,
            stderr=processes.PIPE,
            new_session=True,  # a terminal's Ctrl-C reaches us, who stop it in order
            name=self.argv[0],
        )
        self.started = time.monotonic()
        self._drain = threading.Thread(target=self._read_stderr, daemon=True, name="receivewal")
        self._drain.start()
        return self

    def _read_stderr(self) -> None:
        for raw in self._proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.tail.append(line)
            if self.on_line is not None and not is_routine_line(line):
                with contextlib.suppress(Exception):  # a listener never stops the drain
                    self.on_line(line)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def poll(self) -> int | None:
        """Its exit status once it has ended (the stderr reader done), else None."""
        if self._proc is None or self._proc.poll() is None:
            return None
        self._drain.join(timeout=5)
        return self._proc.returncode

    def kill(self) -> None:
        """SIGKILL (tests: a crash of pg_receivewal)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGINT (pg_receivewal closes its file and exits; before PostgreSQL 16 SIGTERM
        kills it outright), SIGKILL after ``timeout``."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=timeout)
            except processes.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self.poll()

    def last_error(self) -> str:
        """Its last line that is not progress, without the program name."""
        lines = [ln for ln in self.tail if ln.strip() and not is_routine_line(ln)]
        if not lines:
            return "(no message)"
        return lines[-1].removeprefix("pg_receivewal: ").removeprefix("error: ").strip()


# --- the directory it writes ------------------------------------------------------------------


class ReceiveDir:
    """pg_receivewal's directory: which files are complete, which one it writes, where it
    will resume.  Names that are not WAL file names are ignored."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def names(self) -> list[WalFileName]:
        try:
            entries = os.listdir(self.path)
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            with contextlib.suppress(SourceError):
                found.append(parse_wal_file_name(entry))
        return found

    def completed(self) -> list[WalFileName]:
        """History files, then complete segments, oldest first: ready to upload."""
        names = [n for n in self.names() if n.kind in (HISTORY, SEGMENT)]
        return sorted(names, key=lambda n: (n.kind != HISTORY, n.log, n.seg, n.timeline))

    def partials(self) -> list[WalFileName]:
        """``.partial`` files, the one pg_receivewal writes (or resumes) last: the highest
        segment, then timeline, as pg_receivewal itself chooses."""
        partials = [n for n in self.names() if n.kind == PARTIAL]
        return sorted(partials, key=lambda n: (n.log, n.seg, n.timeline))

    def is_empty(self) -> bool:
        return not any(n.kind in (SEGMENT, PARTIAL) for n in self.names())

    def waiting_bytes(self) -> int:
        """Bytes of complete segments not uploaded yet (each is removed once stored)."""
        total = 0
        for name in self.names():
            if name.kind == SEGMENT:
                with contextlib.suppress(FileNotFoundError):
                    total += (self.path / name.name).stat().st_size
        return total

    def seed(self, name: str) -> Path:
        """An empty ``<name>.partial``: pg_receivewal starts at the start of segment
        ``name`` (and pads the file when the first byte of it arrives)."""
        path = self.path / f"{name}.partial"
        path.touch()
        return path

    def truncate_unpadded(self, segment_size: int) -> list[str]:
        """Empty each ``.partial`` whose size is neither 0 nor the segment size (pg_receivewal
        stopped while padding a new file, before any WAL went into it): it refuses to resume
        from such a file, and resumes from an empty one at the same place.  Their names."""
        fixed = []
        for name in self.partials():
            path = self.path / name.name
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size not in (0, segment_size):
                    os.truncate(path, 0)
                    fixed.append(name.name)
        return fixed

    def remove_empty_partials(self) -> list[str]:
        """Remove ``.partial`` files nothing was written into (a start position that the
        server refused); their names."""
        removed = []
        for name in self.partials():
            path = self.path / name.name
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size == 0:
                    path.unlink()
                    removed.append(name.name)
        return removed
