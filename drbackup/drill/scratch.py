"""Scratch targets of drills: databases, ephemeral clusters, and the marker that makes them ours.

The one rule: a drill removes only what it made, proven twice -- by the exact name it
generates and by a marker it sets when it creates the thing -- never by a name prefix or an
age alone.  The marker text, :func:`scratch_marker`, names the scratch and the drill:
``drbackup drill scratch <name> of drill <drill id>`` (``, kept for inspection`` appended
when kept).  It is the comment of a scratch database, the ``drbackup-drill-scratch`` tag of
a scratch bucket (drill/bucket.py) and the content of the ``DRBACKUP_DRILL_SCRATCH`` file in
an ephemeral cluster's directory.  A database renamed after it was made, a user's database
with the prefix, a directory or bucket that merely looks like scratch: none carries the
marker for its own name, and none is touched.

Names.  A scratch database is ``<prefix><target>_<drill id>``, lowercased, with every
character outside ``[a-z0-9_]`` turned into ``_`` (see :func:`scratch_database_name`);
:func:`require_scratch_name` refuses any other form.

Who owns a scratch database.  While a drill runs, it holds a session advisory lock
``(DRILL_LOCK_KEY, hashtext(name))`` on the scratch server for each database it made.  The
server releases the lock when the drill's connection ends, however the drill ended (even
SIGKILL).  :meth:`ScratchServer.remove_leftovers` drops a database only when its name and
marker prove it a drill's scratch and it can take that lock itself: a database of a drill
still running is left alone.  A kept one (``--keep``) is left alone too, until
``drbackup drill cleanup --kept``.  A database with a scratch name but no marker (made by an
older drbackup, or a drill killed between CREATE and COMMENT) is reported, never dropped.

Ephemeral clusters live in ``<base_dir>/<drill id>/`` (an :class:`EphemeralCluster`) next to
``<drill id>.lock``, held with ``flock`` while the drill runs, and ``<drill id>.kept`` when
kept.  The server is tied to the drill process (``pdeathsig``) unless kept; a directory
(not a link) whose marker file names it and whose lock is free is stopped and removed by the
next drill.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from drbackup.errors import SourceError, UsageError
from drbackup.sources.postgres import databases as db
from drbackup.sources.postgres.cluster import EphemeralCluster
from drbackup.sources.postgres.commands import mask_dsn
from drbackup.sources.postgres.connection import connect, database_of, dsn_for_database
from drbackup.sources.postgres.postmaster import cleanup_stale
from drbackup.sources.postgres.restore_marker import user_comment
from drbackup.sources.postgres.server_bin import server_major_version

DRILL_LOCK_KEY = 0x6472696C  # "dril": the first key of every scratch advisory lock
KEPT_SUFFIX = ", kept for inspection"
MARKER_FILE = "DRBACKUP_DRILL_SCRATCH"  # in an ephemeral cluster's directory
MAX_IDENTIFIER = 63  # PostgreSQL's NAMEDATALEN - 1
_DRILL_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
_NAME_TAIL_RE = re.compile(r"_(\d{8})t(\d{6})z_([0-9a-f]{6})(?:_[1-9]\d{0,3})?$")
_MARKER_RE = re.compile(
    r"^drbackup drill scratch (?P<name>\S+) of drill (?P<drill>\d{8}T\d{6}Z-[0-9a-f]{6})"
    r"(?P<kept>, kept for inspection)?$"
)
_UNSAFE = re.compile(r"[^a-z0-9_]")
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


# -- names, markers and the guard ---------------------------------------------------------------


def new_drill_id(now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-<6 hex>``: the UTC start time and randomness; sorts by time."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()


def is_drill_id(text: str) -> bool:
    return bool(_DRILL_ID_RE.match(text))


def scratch_marker(drill_id: str, name: str, *, kept: bool = False) -> str:
    """The marker a drill sets on scratch ``name`` it made (comment, tag or file content)."""
    return f"drbackup drill scratch {name} of drill {drill_id}" + (KEPT_SUFFIX if kept else "")


def marked_by(marker: str | None, name: str) -> tuple[str, bool] | None:
    """``(drill id, kept)`` if ``marker`` is a drill's marker for exactly ``name``, else None."""
    match = _MARKER_RE.match(marker or "")
    if match is None or match.group("name") != name:
        return None
    return match.group("drill"), match.group("kept") is not None


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


def drill_id_of_name(name: str, prefix: str) -> str | None:
    """The drill id a generated scratch name embeds, or None if ``name`` is not of that form."""
    if (
        not isinstance(name, str)
        or not name.startswith(prefix)
        or len(name) > MAX_IDENTIFIER
        or _UNSAFE.search(name)
    ):
        return None
    match = _NAME_TAIL_RE.search(name, len(prefix))
    if match is None or match.start() == len(prefix):  # the target part may not be empty
        return None
    day, clock, rand = match.groups()
    return f"{day}T{clock}Z-{rand}"


def require_scratch_name(name: str, prefix: str) -> str:
    """The guard: return ``name`` if it is a scratch database name a drill generates with
    ``prefix`` (``<prefix><target>_<drill id>[_<n>]``), else raise UsageError.

    A plain identifier (no quoting tricks) of at most 63 bytes.  A drill never creates or
    drops a database of any other name; and drops one of this name only with its marker.
    """
    _check_prefix(prefix)
    if drill_id_of_name(name, prefix) is None:
        raise UsageError(
            f"refusing to touch database {name!r}: not a scratch database "
            f"(scratch names are {prefix}<target>_<drill id>)",
            hint="drills create and drop only databases they named and marked",
        )
    return name


def owner_of(name: str, comment: str | None, prefix: str) -> tuple[str, bool] | None:
    """``(drill id, kept)`` when ``name`` is a generated scratch name and ``comment`` the
    marker of the same drill for exactly that name; else None (not ours: leave it).  A
    restore that failed inside the scratch leaves its own marker over the drill's, keeping
    the drill's as the comment it replaced: that one counts."""
    drill_id = drill_id_of_name(name, prefix)
    owner = marked_by(user_comment(comment), name)
    if drill_id is None or owner is None or owner[0].lower() != drill_id.lower():
        return None
    return owner


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
    """The scratch databases of one server, seen through one maintenance connection.

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
            with contextlib.suppress(Exception):  # closing a broken connection: nothing to report
                self._conn.close()
            self._conn = None

    def dsn(self, name: str) -> str:
        """Connection string of scratch database ``name`` (guarded)."""
        return dsn_for_database(self.admin_dsn, require_scratch_name(name, self.prefix))

    def claim(self, name: str) -> bool:
        """Take the advisory lock of ``name`` for this drill; False if another session has it."""
        return db.try_advisory_lock(
            self.conn, DRILL_LOCK_KEY, require_scratch_name(name, self.prefix)
        )

    def release(self, name: str) -> None:
        db.advisory_unlock(self.conn, DRILL_LOCK_KEY, require_scratch_name(name, self.prefix))

    def exists(self, name: str) -> bool:
        return db.database_exists(self.conn, name)

    def create(self, name: str, drill_id: str, *, encoding: str | None = None) -> None:
        """Create scratch database ``name`` of drill ``drill_id`` and set its marker.

        Raises UsageError unless ``name`` is the scratch name of that drill, SourceError if
        the server refuses (e.g. the database exists: then it is not this drill's).
        """
        if drill_id_of_name(require_scratch_name(name, self.prefix), self.prefix) != drill_id:
            raise UsageError(
                f"refusing to create database {name!r}: not named for drill {drill_id}"
            )
        db.create_database(
            self.conn, name, comment=scratch_marker(drill_id, name), encoding=encoding
        )

    def owner(self, name: str) -> tuple[str, bool] | None:
        """``(drill id, kept)`` if ``name`` exists and carries a drill's marker for its name."""
        return owner_of(name, db.database_comment(self.conn, name), self.prefix)

    def _require_owned(self, name: str, drill_id: str | None, verb: str) -> str:
        require_scratch_name(name, self.prefix)
        owner = self.owner(name)
        if owner is None or (drill_id is not None and owner[0] != drill_id):
            whose = f"drill {drill_id}" if drill_id else "a drill"
            raise UsageError(
                f"refusing to {verb} database {name!r}: it does not carry the marker of {whose}",
                hint="drills drop only databases they created and marked (docs/drills.md)",
            )
        return owner[0]

    def drop(self, name: str, drill_id: str | None = None) -> None:
        """Drop scratch database ``name`` (and end its sessions) if it carries the marker of
        ``drill_id`` (of any drill when None); a missing database is not an error.

        Raises UsageError for a database that is not a marked scratch database.
        """
        if not self.exists(name):
            return
        self._require_owned(name, drill_id, "drop")
        db.drop_database(self.conn, name)

    def mark_kept(self, name: str, drill_id: str | None = None) -> None:
        """Mark the scratch kept, so that later drills leave it alone (``--keep``)."""
        owner = self._require_owned(name, drill_id, "keep")
        db.set_database_comment(self.conn, name, scratch_marker(owner, name, kept=True))

    def scratch_databases(self) -> list[tuple[str, bool]]:
        """Every marked scratch database of this prefix: ``(name, kept)``."""
        found = []
        for name, comment in db.databases_named(self.conn, self.prefix):
            owner = owner_of(name, comment, self.prefix)
            if owner is not None:
                found.append((name, owner[1]))
        return found

    def unmarked(self) -> list[str]:
        """Databases with a scratch name but no marker for it: never dropped, only reported."""
        return [
            name
            for name, comment in db.databases_named(self.conn, self.prefix)
            if drill_id_of_name(name, self.prefix) and owner_of(name, comment, self.prefix) is None
        ]

    def remove_leftovers(self, *, include_kept: bool = False) -> list[str]:
        """Drop marked scratch databases no running drill holds; returns the names dropped."""
        dropped = []
        for name, kept in self.scratch_databases():
            if kept and not include_kept:
                continue
            if not self.claim(name):
                continue  # a drill that is still running holds it
            try:
                self.drop(name)
                dropped.append(name)
            finally:
                self.release(name)
        return dropped


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
    _made: bool = field(default=False, repr=False)  # this drill made the directory

    @property
    def directory(self) -> Path:
        return self.base_dir / self.drill_id

    @property
    def major(self) -> int:
        """The cluster's PostgreSQL major version (of its binaries)."""
        return server_major_version(self.bin_dir or self.cluster.bin_dir)

    def start(self) -> EphemeralCluster:
        """Lock, make and mark the directory, initdb and start the cluster (tied to this
        process unless ``keep``).  Raises SourceError if the directory exists already."""
        self._lock = claim_scratch_directory(self.base_dir, self.drill_id, "scratch cluster")
        self._made = True
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
            elif self._made and self.directory.exists():
                _remove_cluster_dir(self.directory)
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None
            if not self.keep:
                with contextlib.suppress(OSError):
                    (self.base_dir / f"{self.drill_id}.lock").unlink()


_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def _write_marker(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")


def _is_marked_cluster(base_dir: Path, name: str) -> bool:
    """``base_dir/name`` is a directory (not a link) whose marker file names it."""
    directory = base_dir / name
    try:
        if not stat.S_ISDIR(os.lstat(directory).st_mode):
            return False
        fd = os.open(directory / MARKER_FILE, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd) as marker:
        owner = marked_by(marker.read(200).strip(), name)
    return owner is not None and owner[0] == name


def _flock(path: Path, *, blocking: bool):
    """Open ``path`` (never through a link) and take an exclusive flock on it; None if
    ``blocking`` is False and another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o644)
    handle = os.fdopen(fd, "r+")
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


def _cluster_names(base_dir: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(base_dir) if is_drill_id(e.name))
    except (FileNotFoundError, NotADirectoryError):
        return []


def unmarked_clusters(base_dir: Path) -> list[Path]:
    """Entries of ``base_dir`` named like a drill's cluster but not marked as one (or links):
    never removed, only reported."""
    return [base_dir / n for n in _cluster_names(base_dir) if not _is_marked_cluster(base_dir, n)]


def remove_stale_clusters(base_dir: Path, *, include_kept: bool = False) -> list[Path]:
    """Stop and remove drill clusters under ``base_dir`` whose drill is gone.

    Only a directory (never a link) named with a drill id and holding that drill's marker
    file is a drill cluster.  One whose lock file is held (its drill is running) is left
    alone, and so is a kept one unless ``include_kept``.  Returns the directories removed.
    """
    removed = []
    for name in _cluster_names(base_dir):
        if not _is_marked_cluster(base_dir, name):
            continue  # not ours: whatever it is, it stays
        kept = base_dir / f"{name}.kept"
        if kept.exists() and not include_kept:
            continue
        lock_path = base_dir / f"{name}.lock"
        lock = _flock(lock_path, blocking=False)
        if lock is None:
            continue  # a running drill holds it
        try:
            _remove_cluster_dir(base_dir / name)
            removed.append(base_dir / name)
        finally:
            lock.close()
            for leftover in (lock_path, kept):
                with contextlib.suppress(OSError):
                    leftover.unlink()
    return removed


def claim_scratch_directory(base_dir: Path, drill_id: str, what: str):
    """Make ``base_dir/drill_id`` for a drill, locked and marked as its own; returns the
    lock (held until the drill is done).  Raises SourceError if the directory exists (a
    drill never takes over a directory it did not make), UsageError for a bad drill id."""
    if not is_drill_id(drill_id):
        raise UsageError(f"invalid drill id {drill_id!r}")
    if not base_dir.exists():
        base_dir.mkdir(parents=True)
        base_dir.chmod(0o755)  # the server's user must traverse it when we are root
    lock = _flock(base_dir / f"{drill_id}.lock", blocking=True)
    directory = base_dir / drill_id
    try:
        directory.mkdir()
    except OSError as exc:
        raise SourceError(f"cannot make {what} directory {directory}: {exc}") from None
    directory.chmod(0o755)  # the server's user reads below it when we are root
    _write_marker(directory / MARKER_FILE, scratch_marker(drill_id, drill_id))
    return lock
