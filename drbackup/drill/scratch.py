"""Scratch targets of drills: databases named with a fixed prefix, and ephemeral clusters.

The one rule: a drill creates, drops and removes only what carries its prefix.  Every
create or drop goes through :func:`require_scratch_name`, which refuses any other name;
leftovers are found by that prefix alone.

Names.  A scratch database is ``<prefix><target>_<drill id>``, lowercased, with every
character outside ``[a-z0-9_]`` turned into ``_`` (see :func:`scratch_database_name`).

Who owns a scratch database.  While a drill runs, it holds a session advisory lock
``(DRILL_LOCK_KEY, hashtext(name))`` on the scratch server for each database it made.  The
server releases the lock when the drill's connection ends, however the drill ended (even
SIGKILL).  :meth:`ScratchServer.remove_leftovers` drops a prefixed database only when it can
take that lock itself: a database of a drill still running is left alone.  A database kept
with ``--keep`` carries the comment :data:`KEPT_COMMENT` and is left alone too, until
``drbackup drill cleanup --kept``.

Ephemeral clusters live in ``<base_dir>/<drill id>/`` (an :class:`EphemeralCluster`) next to
``<drill id>.lock``, held with ``flock`` while the drill runs, and ``<drill id>.kept`` when
kept.  The server is tied to the drill process (``pdeathsig``) unless kept; a directory whose
lock is free is stopped and removed by the next drill.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from psycopg import sql

from drbackup.errors import SourceError, UsageError
from drbackup.sources.postgres.cluster import (
    EphemeralCluster,
    cleanup_stale,
    server_major_version,
)
from drbackup.sources.postgres.commands import mask_dsn
from drbackup.sources.postgres.connection import connect, database_of, dsn_for_database

DRILL_LOCK_KEY = 0x6472696C  # "dril": the first key of every scratch advisory lock
KEPT_COMMENT = "drbackup drill scratch, kept for inspection"
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1
_DRILL_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
_UNSAFE = re.compile(r"[^a-z0-9_]")
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


# -- names and the guard -------------------------------------------------------------------


def new_drill_id(now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-<6 hex>``: the UTC start time and randomness; sorts by time."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()


def is_drill_id(text: str) -> bool:
    return bool(_DRILL_ID_RE.match(text))


def scratch_database_name(prefix: str, target: str, drill_id: str, index: int = 0) -> str:
    """``<prefix><target>_<drill id>`` made a safe identifier of at most 63 bytes.

    ``index`` > 0 appends ``_<index>`` (a backup holding several databases).  The target part
    is shortened when the whole would be too long; the prefix and drill id never are.
    Raises UsageError for an empty or unsafe prefix.
    """
    _check_prefix(prefix)
    tail = "_" + _UNSAFE.sub("_", drill_id.lower()) + (f"_{index}" if index else "")
    room = MAX_IDENTIFIER - len(prefix) - len(tail)
    if room < 1:
        raise UsageError(f"scratch prefix {prefix!r} is too long for a database name")
    return prefix + _UNSAFE.sub("_", target.lower())[:room] + tail


def _check_prefix(prefix: str) -> None:
    if not prefix or _UNSAFE.search(prefix):
        raise UsageError(
            f"invalid scratch prefix {prefix!r}",
            hint="drill.scratch_prefix must be non-empty and use only a-z, 0-9 and '_'",
        )


def require_scratch_name(name: str, prefix: str) -> str:
    """The guard: return ``name`` if it is a scratch database name of ``prefix``, else raise.

    A scratch name starts with the prefix, has something after it, and is a plain
    identifier (no quoting tricks).  Raises UsageError for anything else: a drill never
    creates or drops a database outside its prefix.
    """
    _check_prefix(prefix)
    if (
        not isinstance(name, str)
        or not name.startswith(prefix)
        or len(name) == len(prefix)
        or len(name) > MAX_IDENTIFIER
        or _UNSAFE.search(name)
    ):
        raise UsageError(
            f"refusing to touch database {name!r}: not a scratch database "
            f"(scratch names start with {prefix!r})",
            hint="drills create and drop only databases named with drill.scratch_prefix",
        )
    return name


# -- signals -------------------------------------------------------------------------------


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM off while the body (a cleanup) runs; raise after it.

    A second Ctrl-C must not leave a half-dropped scratch behind.  Outside the main thread
    signals cannot be handled here, and the body simply runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: received.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if received:
            raise KeyboardInterrupt


# -- a scratch server -------------------------------------------------------------------------


class ScratchServer:
    """The prefixed databases of one server, seen through one maintenance connection.

    ``admin_dsn`` names the server and a maintenance database (``postgres`` if it names
    none).  The connection holds this drill's advisory locks; :meth:`close` releases them.
    """

    def __init__(self, admin_dsn: str, password: str | None, prefix: str):
        _check_prefix(prefix)
        dbname = database_of(admin_dsn)
        if not dbname or dbname.startswith(prefix):
            admin_dsn = dsn_for_database(admin_dsn, "postgres")
        self.admin_dsn, self.password, self.prefix = admin_dsn, password, prefix
        self.shown = _PASSWORD_PARAM.sub(r"\1***", mask_dsn(admin_dsn))
        self._conn = None

    def open(self) -> ScratchServer:
        """Connect; raises SourceError / SourceUnreachableError."""
        if self._conn is None:
            self._conn = connect(self.admin_dsn, self.password)
        return self

    @property
    def conn(self):
        return self.open()._conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def dsn(self, name: str) -> str:
        """Connection string of scratch database ``name`` (guarded)."""
        return dsn_for_database(self.admin_dsn, require_scratch_name(name, self.prefix))

    def claim(self, name: str) -> bool:
        """Take the advisory lock of ``name`` for this drill; False if another session has it."""
        require_scratch_name(name, self.prefix)
        query = "SELECT pg_try_advisory_lock(%s, hashtext(%s))"
        return bool(self.conn.execute(query, (DRILL_LOCK_KEY, name)).fetchone()[0])

    def release(self, name: str) -> None:
        query = "SELECT pg_advisory_unlock(%s, hashtext(%s))"
        self.conn.execute(query, (DRILL_LOCK_KEY, require_scratch_name(name, self.prefix)))

    def exists(self, name: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return row.fetchone() is not None

    def drop(self, name: str) -> None:
        """Drop scratch database ``name`` and end its sessions (guarded; idempotent)."""
        require_scratch_name(name, self.prefix)
        ident = sql.Identifier(name)
        if self.conn.info.server_version >= 130000:
            self.conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            return
        self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        self.conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident))

    def mark_kept(self, name: str) -> None:
        """Comment the database so that later drills leave it alone (``--keep``)."""
        query = sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(require_scratch_name(name, self.prefix)), sql.Literal(KEPT_COMMENT)
        )
        self.conn.execute(query)

    def scratch_databases(self) -> list[tuple[str, bool]]:
        """Every database named with the prefix: ``(name, kept)``."""
        rows = self.conn.execute(
            "SELECT d.datname, coalesce(shobj_description(d.oid, 'pg_database'), '') = %s"
            " FROM pg_database d WHERE left(d.datname, %s) = %s ORDER BY 1",
            (KEPT_COMMENT, len(self.prefix), self.prefix),
        ).fetchall()
        return [(name, kept) for name, kept in rows if name != self.prefix]

    def remove_leftovers(self, *, include_kept: bool = False) -> list[str]:
        """Drop prefixed databases no running drill holds; returns the names dropped."""
        dropped = []
        for name, kept in self.scratch_databases():
            if (kept and not include_kept) or not _is_safe(name, self.prefix):
                continue
            if not self.claim(name):
                continue  # a drill that is still running holds it
            try:
                self.drop(name)
                dropped.append(name)
            finally:
                self.release(name)
        return dropped


def _is_safe(name: str, prefix: str) -> bool:
    try:
        require_scratch_name(name, prefix)
    except UsageError:
        return False
    return True


# -- ephemeral clusters ---------------------------------------------------------------------


def default_base_dir() -> Path:
    """``$TMPDIR/drbackup-drill``: short enough for the cluster's unix socket path."""
    return Path(tempfile.gettempdir()) / "drbackup-drill"


@dataclass
class EphemeralScratch:
    """One drill's private cluster in ``base_dir/<drill id>``, locked while the drill runs."""

    base_dir: Path
    drill_id: str
    keep: bool = False
    bin_dir: Path | None = None  # server binaries; None: the newest found
    cluster: EphemeralCluster | None = None
    _lock: object | None = field(default=None, repr=False)

    @property
    def directory(self) -> Path:
        return self.base_dir / self.drill_id

    @property
    def major(self) -> int:
        """The cluster's PostgreSQL major version (of its binaries)."""
        return server_major_version(self.bin_dir or self.cluster.bin_dir)

    def start(self) -> EphemeralCluster:
        """Lock, initdb and start the cluster (tied to this process unless ``keep``)."""
        if not is_drill_id(self.drill_id):
            raise UsageError(f"invalid drill id {self.drill_id!r}")
        if not self.base_dir.exists():
            self.base_dir.mkdir(parents=True)
            self.base_dir.chmod(0o755)  # the server's user must traverse it when we are root
        self._lock = _flock(self.base_dir / f"{self.drill_id}.lock", blocking=True)
        self.cluster = EphemeralCluster(
            self.directory, fast=True, detach=self.keep, bin_dir=self.bin_dir
        )
        self.cluster.start()
        return self.cluster

    def finish(self) -> None:
        """Destroy the cluster (or mark it kept), then unlock."""
        try:
            if self.keep and self.cluster is not None and self.cluster.is_running:
                (self.base_dir / f"{self.drill_id}.kept").touch()
            elif self.cluster is not None:
                self.cluster.destroy()
            elif self.directory.exists():
                _remove_cluster_dir(self.directory)
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None
            if not self.keep:
                with contextlib.suppress(OSError):
                    (self.base_dir / f"{self.drill_id}.lock").unlink()


def _flock(path: Path, *, blocking: bool):
    """Open ``path`` and take an exclusive flock on it; None if ``blocking`` is False and
    another process holds it."""
    handle = open(path, "a+")  # noqa: SIM115 - the lock lives as long as the handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _remove_cluster_dir(directory: Path, timeout: float = 10.0) -> None:
    """Stop the server in ``directory`` if one runs, then remove the directory.

    A server told to stop by its dying drill (pdeathsig) may still be removing its own files
    (pid file, socket locks) while we walk the tree: retry until the directory is gone.
    """
    deadline = time.monotonic() + timeout
    while True:
        cleanup_stale(directory)  # stops a server still running there (postmaster.pid)
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass  # a file vanished under us; look again
        except OSError as exc:
            if time.monotonic() > deadline:
                raise SourceError(f"cannot remove scratch cluster {directory}: {exc}") from exc
        if not directory.exists():
            return
        if time.monotonic() > deadline:
            raise SourceError(f"cannot remove scratch cluster {directory}: it keeps changing")
        time.sleep(0.05)


def remove_stale_clusters(base_dir: Path, *, include_kept: bool = False) -> list[Path]:
    """Stop and remove drill clusters under ``base_dir`` whose drill is gone.

    A cluster whose lock file is held (its drill is running) is left alone, and so is a
    kept one unless ``include_kept``.  Returns the directories removed.
    """
    if not base_dir.is_dir():
        return []
    removed = []
    for directory in sorted(p for p in base_dir.iterdir() if p.is_dir() and is_drill_id(p.name)):
        kept = base_dir / f"{directory.name}.kept"
        if kept.exists() and not include_kept:
            continue
        lock_path = base_dir / f"{directory.name}.lock"
        lock = _flock(lock_path, blocking=False)
        if lock is None:
            continue  # a running drill holds it
        try:
            _remove_cluster_dir(directory)
            removed.append(directory)
        finally:
            lock.close()
            for leftover in (lock_path, kept):
                with contextlib.suppress(OSError):
                    leftover.unlink()
    return removed
