"""``wal-push`` (PostgreSQL's ``archive_command``): store each WAL file the server hands over.

Synchronous mode stores the file itself.  Asynchronous mode (the default) leaves the work to
one background pusher per server (``wal-async push``), which scans
``pg_wal/archive_status/*.ready``, uploads up to ``push_jobs`` files at once with the key
opened once, and acknowledges each through the spool (``<name>.ok``): the foreground command
exits 0 only once its own file is stored, so PostgreSQL never recycles a segment that is not
in the repository.  See docs/pitr.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from drbackup.actions.wal_files import ClusterState, upload_wal_file
from drbackup.actions.wal_spool import ERROR, OK, Spool, poll_until, spawn_background
from drbackup.config.wal import WalSettings
from drbackup.errors import DrbackupError, SourceError, UsageError
from drbackup.repository.wal import PutResult, WalArchive
from drbackup.sources.postgres.wal import parse_wal_file_name, ready_files

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext

PUSHER_IDLE = timedelta(seconds=30)  # the background pusher exits after this long idle
_POLL = 0.05


def wal_settings(app: AppContext, target: str):
    """The ``wal`` settings of postgres target ``target``; UsageError for another kind."""
    cfg = app.config.target(target)
    if type(cfg).kind != "postgres":
        raise UsageError(f"target '{target}' is a {type(cfg).kind} target, not a postgres target")
    return cfg.wal


def read_settings(app: AppContext, target: str):
    """The ``wal`` settings for reading ``target``'s WAL back (restores, ``wal-fetch``): the
    target's own when it is configured, else the defaults, since a restore host's config may
    name only the repository.  Writers use :func:`wal_settings`, which refuses unknown names."""
    if target not in app.config.targets:
        return WalSettings()
    return wal_settings(app, target)


def spool_root(app: AppContext, target: str) -> Path:
    """``<spool_dir>/<target>``; the default spool_dir is ``$DRBACKUP_HOME/spool``."""
    configured = read_settings(app, target).spool_dir
    if configured is not None:
        return Path(configured) / target
    from drbackup.config.schema import default_home

    return default_home(os.environ) / "spool" / target


def push_spool(app: AppContext, target: str, pg_wal: Path) -> Spool:
    """``<spool_dir>/<target>/push/<server>``: one per pg_wal directory, so that two servers
    archiving into one target (an old primary and a promoted restore, a standby with
    archive_mode = always) each have their own pusher watching their own pg_wal."""
    server = hashlib.sha256(str(pg_wal.resolve()).encode()).hexdigest()[:12]
    return Spool(spool_root(app, target) / "push" / server)


def wal_push(app: AppContext, target: str, path: Path, *, config_path: str | None = None) -> str:
    """Archive the WAL file at ``path`` (as PostgreSQL passes it: ``pg_wal/<name>``).

    Returns what happened ("stored", "already archived", "stored by the background pusher").
    Raises what :func:`upload_wal_file` raises (synchronous mode), or the background
    pusher's error for this file, or SourceError after the ``wal.timeout``.
    """
    parse_wal_file_name(path.name)  # a usable name before anything else
    settings = wal_settings(app, target)
    # a file outside a pg_wal directory (pushed by hand) has no .ready for the pusher to see
    if not settings.asynchronous or not (path.parent / "archive_status").is_dir():
        result = push_now(app, target, path)
        return "stored" if result.created else "already archived"
    pg_wal = path.absolute().parent
    spool = push_spool(app, target, pg_wal).prepare()
    args = ["wal-async", "push", "--target", target, "--pg-wal", str(pg_wal)]
    started: list[float] = []

    def outcome() -> str | None:
        status = spool.status(path.name)
        if status is not None:
            return _settle(spool, path.name, *status)
        if not spool.is_served() and (not started or time.monotonic() - started[-1] > 5):
            spawn_background(args, config_path, spool.path / "pusher.log")
            started.append(time.monotonic())
        return None

    what = f"the background pusher to store {path.name} (see {spool.path / 'pusher.log'})"
    return poll_until(outcome, settings.timeout.total_seconds(), what)


def _settle(spool: Spool, name: str, status: str, text: str) -> str:
    if status == OK:
        return "stored by the background pusher"
    spool.clear(name)  # PostgreSQL will ask again: the pusher tries again then
    message, _, hint = text.partition("\n")
    raise SourceError(message or f"the background pusher could not store {name}", hint=hint or None)


def push_now(app: AppContext, target: str, path: Path) -> PutResult:
    """Store one file from this process (synchronous mode)."""
    archive = WalArchive(app.repository(), target)
    return upload_wal_file(ClusterState(archive), path)


# --- the background pusher ----------------------------------------------------------------------


def run_pusher(app: AppContext, target: str, pg_wal: Path, *, idle: timedelta = PUSHER_IDLE) -> int:
    """Upload every ready file of ``pg_wal`` until nothing is ready for ``idle``.

    Returns how many files it acknowledged; 0 at once if another pusher serves this spool.
    A file that fails is marked ``.error`` (its foreground command reports it and PostgreSQL
    retries); the pusher goes on with the others.
    """
    spool = push_spool(app, target, pg_wal).prepare()
    if not spool.acquire():
        return 0
    try:
        return _PushLoop(app, target, pg_wal, spool, idle).run()
    finally:
        spool.release()


class _PushLoop:
    def __init__(self, app: AppContext, target: str, pg_wal: Path, spool: Spool, idle: timedelta):
        settings = wal_settings(app, target)
        repo = app.repository()
        # parallelism comes from several files at once: one compression thread each
        repo.codec = replace(repo.codec, threads=1)
        self.state = ClusterState(WalArchive(repo, target))
        self.pg_wal, self.spool, self.idle = pg_wal, spool, idle.total_seconds()
        self.jobs = settings.push_jobs
        self.inflight: dict[str, Future] = {}
        self.acknowledged = 0

    def run(self) -> int:
        last_work = time.monotonic()
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="drbackup-push") as pool:
            while True:
                ready = ready_files(self.pg_wal)
                self._forget_done(ready)
                self._submit(pool, ready)
                if self.inflight:
                    last_work = time.monotonic()
                    done, _ = wait(self.inflight.values(), _POLL, FIRST_COMPLETED)
                    self._collect(done)
                elif time.monotonic() - last_work > self.idle:
                    return self.acknowledged
                else:
                    time.sleep(_POLL)

    def _forget_done(self, ready: list[str]) -> None:
        # PostgreSQL renamed .ready to .done: the acknowledgement served its purpose
        waiting = set(ready)
        for entry in self.spool.entries():
            name, _, status = entry.rpartition(".")
            if status == OK and name not in waiting:
                with contextlib.suppress(FileNotFoundError):
                    (self.spool.path / entry).unlink()

    def _submit(self, pool: ThreadPoolExecutor, ready: list[str]) -> None:
        for name in ready:
            if len(self.inflight) >= self.jobs:
                return
            if name not in self.inflight and self.spool.status(name) is None:
                self.inflight[name] = pool.submit(upload_wal_file, self.state, self.pg_wal / name)

    def _collect(self, done) -> None:
        for name, future in list(self.inflight.items()):
            if future not in done:
                continue
            del self.inflight[name]
            exc = future.exception()
            if exc is None:
                self.spool.mark(name, OK)
                self.acknowledged += 1
                continue
            text = _error_text(exc)
            self.spool.mark(name, ERROR, text)
            self.spool.log("pusher", f"{name}: {text.splitlines()[0]}")


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, DrbackupError):
        return exc.message + (f"\n{exc.hint}" if exc.hint else "")
    return f"internal error: {type(exc).__name__}: {exc}"
