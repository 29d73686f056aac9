"""``wal-fetch`` (PostgreSQL's ``restore_command``): hand recovery the WAL files it asks for.

The exit codes are PostgreSQL's: 0 with the file in place; 1, quietly, when the file is not
in the archive (recovery probes for history files that do not exist, and ends at the first
missing segment); 1 with a message on stderr when it failed (damaged, unreachable).

With read-ahead (``fetch_ahead`` > 0) one :class:`Fetcher` per spool keeps the requested
segment and the next ``fetch_ahead`` ones decrypted in the spool, so that replay never waits
for one round trip per segment.  The fetcher runs in the background (``wal-async fetch``,
started by the first ``wal-fetch``), or inside the process of a restore that started the
server itself (which already holds the key).  Each fetched file is written aside and renamed;
the spool never holds more than ``fetch_ahead + 1`` segments.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from drbackup.actions.wal_spool import ERROR, MISSING, Spool, poll_until, spawn_background
from drbackup.actions.wal_take import FetchFailed, answer
from drbackup.errors import DrbackupError, SourceError
from drbackup.sources.postgres.wal import (
    PARTIAL,
    SEGMENT,
    parse_wal_file_name,
    read_segment_header,
    segment_name,
)

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext
    from drbackup.repository.wal import WalArchive

# The repository, codec and config are imported where they are used: a restore's own
# server runs ``wal-fetch --no-spawn`` once per WAL file, and that path only takes files
# from the spool (importing them would cost it most of a second per file).

FETCHER_IDLE = timedelta(seconds=60)
_POLL = 0.02


@dataclass(frozen=True)
class FetchRequest:
    """What ``wal-fetch`` was asked, and where it may look."""

    target: str
    name: str
    dest: Path
    spool: Path
    cluster: str | None = None  # None: the target's current cluster
    spawn: bool = True  # start a background fetcher when none serves the spool
    server_major: int | None = None  # the major of the server asking (its PG_VERSION)


def wal_fetch(app: AppContext, request: FetchRequest, *, config_path: str | None = None) -> bool:
    """Put WAL file ``request.name`` at ``request.dest``; False if the archive lacks it.

    Raises DrbackupError with the reason when it failed (damaged, unreachable, timed out,
    or WAL of another major than ``request.server_major``: nothing is left at the
    destination).
    """
    parse_wal_file_name(request.name)
    found = _fetch(app, request, config_path)
    if found and request.server_major is not None:
        _refuse_other_major(request)
    return found


def _refuse_other_major(request: FetchRequest) -> None:
    """A segment of another major never reaches the server: its WAL format differs, and
    recovery would take the unreadable page for the end of the WAL and stop there."""
    if parse_wal_file_name(request.name).kind not in (SEGMENT, PARTIAL):
        return
    with request.dest.open("rb") as f:
        header = read_segment_header(f.read(1 << 16), request.name)
    if header.major == request.server_major:
        return
    request.dest.unlink(missing_ok=True)
    raise SourceError(
        f"WAL file {request.name} of target {request.target} is PostgreSQL {header.major} WAL "
        f"and the server recovering is PostgreSQL {request.server_major}; refusing it",
        hint="restore a base backup of this major (after pg_upgrade: take a new base backup "
        f"and 'drbackup wal register {request.target}')",
    )


def _fetch(app: AppContext | None, request: FetchRequest, config_path: str | None) -> bool:
    settings = None
    if app is not None:
        from drbackup.actions.wal_push import read_settings

        settings = read_settings(app, request.target)
    if settings is not None and (not settings.asynchronous or settings.fetch_ahead == 0):
        return _fetch_now(app, request)
    spool = Spool(request.spool).prepare()
    spool.write("want", request.name.encode())
    started: list[float] = []

    def outcome() -> bool | None:
        try:
            got = answer(str(spool.path), request.name, str(request.dest))
        except FetchFailed as exc:
            raise SourceError(exc.message, hint=exc.hint) from None
        if got is None and not spool.is_served():
            _start_fetcher(request, spool, started, config_path)
        return got

    timeout = settings.timeout.total_seconds() if settings is not None else 60.0
    return poll_until(outcome, timeout, f"WAL file {request.name} from the read-ahead fetcher")


def _start_fetcher(request: FetchRequest, spool: Spool, started: list, config_path) -> None:
    if not request.spawn:
        raise SourceError(
            f"no WAL fetcher serves {spool.path}: the restore that started this server has ended",
            hint="stop this server; restore again",
        )
    if started and time.monotonic() - started[-1] < 5:
        return
    args = ["wal-async", "fetch", "--target", request.target, "--spool", str(spool.path)]
    if request.cluster:
        args += ["--cluster", request.cluster]
    spawn_background(args, config_path, spool.path / "fetcher.log")
    started.append(time.monotonic())


def _fetch_now(app: AppContext, request: FetchRequest) -> bool:
    from drbackup.actions.wal_files import fetch_wal_file
    from drbackup.repository.wal import WalArchive

    archive = WalArchive(app.repository(), request.target)
    cluster = request.cluster or _current_cluster(archive)
    return fetch_wal_file(archive, cluster, request.name, request.dest) is not None


def _current_cluster(archive: WalArchive) -> str:
    cluster = archive.current_cluster()
    if cluster is None:
        raise SourceError(f"target {archive.target} has no WAL archive in the repository")
    return cluster


def default_fetch_spool(app: AppContext, target: str) -> Path:
    """``<spool_dir>/<target>/fetch/<server>``: one per data directory (PostgreSQL runs
    restore_command in it), so that two restores on one host never share read-ahead."""
    server = hashlib.sha256(str(Path.cwd().resolve()).encode()).hexdigest()[:12]
    from drbackup.actions.wal_push import spool_root

    return spool_root(app, target) / "fetch" / server


# --- the read-ahead fetcher -------------------------------------------------------------------


@dataclass
class FetchLog:
    """What a fetcher saw, for a restore to explain where recovery stopped."""

    requested: list[str] = field(default_factory=list)  # what the server asked for, in order
    fetched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # name -> first line of the error
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class Fetcher:
    """Keeps the wanted WAL file and the next ``ahead`` segments in ``spool``.

    ``run`` until ``stop`` is set, or (``idle``) until nothing was asked for that long.
    """

    def __init__(
        self, archive: WalArchive, cluster: str, spool: Spool, *, ahead: int, jobs: int = 4
    ):
        self.archive, self.cluster, self.spool = archive, cluster, spool
        self.ahead, self.jobs = ahead, max(1, min(jobs, ahead or 1))
        self.inflight: dict[str, Future] = {}
        self.segment_size: int | None = None
        self.log = FetchLog()
        self.stop = threading.Event()

    def run(self, idle: timedelta | None = None) -> None:
        last_want, last_change = None, time.monotonic()
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="drbackup-fetch") as pool:
            while not self.stop.is_set():
                want = self.spool.wanted()
                if want != last_want:
                    last_want, last_change = want, time.monotonic()
                    if want:
                        with self.log.lock:
                            self.log.requested.append(want)
                plan = self._plan(want) if want else []
                self._evict(plan)
                self._submit(pool, plan)
                self._collect()
                quiet = time.monotonic() - last_change
                if idle is not None and not self.inflight and quiet > idle.total_seconds():
                    return
                time.sleep(_POLL)

    def _plan(self, want: str) -> list[str]:
        """The wanted file, then (for a segment) the next ``ahead`` on its timeline."""
        try:
            name = parse_wal_file_name(want)
        except SourceError:  # no archive has it (00000001.history, say): answer at once
            if self.spool.status(want) is None:
                self.spool.mark(want, MISSING)
            return [want]  # kept (not evicted) until the client took the answer
        if name.kind != SEGMENT or self.segment_size is None:
            return [want]
        segno = name.segno(self.segment_size)
        ahead = [
            segment_name(name.timeline, segno + i, self.segment_size)
            for i in range(1, self.ahead + 1)
        ]
        return [want, *ahead]

    def _evict(self, plan: list[str]) -> None:
        keep = set(plan) | set(self.inflight)
        for entry in self.spool.entries():
            base = (
                entry.rsplit(".", 1)[0] if entry.endswith((".missing", ".error", ".log")) else entry
            )
            if entry.endswith(".log") or base in keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                (self.spool.path / entry).unlink()

    def _submit(self, pool: ThreadPoolExecutor, plan: list[str]) -> None:
        for name in plan:
            if len(self.inflight) >= self.jobs:
                return
            if name in self.inflight:
                continue
            if not _archivable(name):  # answered missing by _plan; the client may have
                continue  # taken that answer already: never fetch it
            status = self.spool.status(name)
            if status is not None and status[0] == MISSING:
                return  # nothing beyond a missing file is fetched ahead
            if status is None and not (self.spool.path / name).exists():
                self.inflight[name] = pool.submit(self._fetch, name)

    def _fetch(self, name: str):
        dest = self.spool.path / name
        from drbackup.actions.wal_files import fetch_wal_file

        fetched = fetch_wal_file(self.archive, self.cluster, name, dest, owner=self.spool.owner())
        # read before the rename: the client may take the file the moment it appears
        if fetched is not None and fetched.segment_size is not None:
            self.segment_size = self.segment_size or fetched.segment_size
        return fetched

    def _collect(self) -> None:
        for name, future in list(self.inflight.items()):
            if not future.done():
                continue
            del self.inflight[name]
            exc = future.exception()
            with self.log.lock:
                if exc is None and future.result() is None:
                    self.log.missing.append(name)
                    self.spool.mark(name, MISSING)
                elif exc is None:
                    self.log.fetched.append(name)
                else:
                    self._failed(name, exc)

    def _failed(self, name: str, exc: BaseException) -> None:
        if isinstance(exc, DrbackupError):
            text = exc.message + (f"\n{exc.hint}" if exc.hint else "")
        else:
            text = f"internal error: {type(exc).__name__}: {exc}"
        self.log.failed[name] = text.splitlines()[0]
        self.spool.mark(name, ERROR, text)
        self.spool.log("fetcher", f"{name}: {text.splitlines()[0]}")


def _archivable(name: str) -> bool:
    """True for a name an archive can hold (``00000001.history`` is not one)."""
    try:
        parse_wal_file_name(name)
    except SourceError:
        return False
    return True


def run_fetcher(
    app: AppContext, target: str, spool_path: Path, cluster: str | None, *, idle=FETCHER_IDLE
) -> None:
    """The background fetcher of ``wal-async fetch``: serve ``spool_path`` until idle."""
    from drbackup.actions.wal_push import read_settings
    from drbackup.repository.wal import WalArchive

    spool = Spool(spool_path).prepare()
    if not spool.acquire():
        return
    try:
        archive = WalArchive(app.repository(), target)
        chosen = cluster or _current_cluster(archive)
        ahead = read_settings(app, target).fetch_ahead
        Fetcher(archive, chosen, spool, ahead=ahead).run(idle)
    finally:
        spool.release()
