"""Streaming a target's WAL into the repository: pg_receivewal, supervised, and its output
uploaded (docs/pitr.md, "Streaming").

::

    server ──replication slot──► pg_receivewal ──► <spool>/stream/wal/
      <segment>          complete: upload_wal_file, its stored partials removed, file removed
      <tli>.history      upload_wal_file, file removed
      <segment>.partial  being written: every flush_interval its whole records are snapshot
                         and uploaded as <segment>.partial with their length (upto)
      older .partial     the last segment of a timeline that ended: uploaded, removed

Supervision: pg_receivewal runs with ``--no-loop``; when it ends (the server went away, a
crash, a kill) what it received is uploaded at once, and it is started again after a
backoff (1 s doubling to 60 s; back to 1 s after a minute of running).  It resumes where its
directory says; with an empty directory (a new host, a lost spool) at the end of the
archive (an empty ``.partial`` marks it), else at the slot's ``restart_lsn``.  A start
position the server no longer has is dropped for the slot's, and the gap is logged (and
``wal check`` names it).  The spool is bounded: completed segments are removed once stored,
and while more than ``stream_spool_max`` of them wait (the repository is down)
pg_receivewal is stopped; the slot keeps the WAL on the server meanwhile.  So the spool
holds at most ``stream_spool_max`` + what arrives within one look (``POLL``; a burst of
segment switches can land several) + one segment being written + one snapshot.

One streamer per spool (an flock on ``<spool>/stream/lock``); the daemon adds one per target
across replicas (scheduler/streams.py); the slot itself admits one client.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drbackup.actions.backup_postgres import PgTarget
from drbackup.actions.wal_files import ClusterState, upload_wal_file
from drbackup.actions.wal_push import spool_root, wal_settings
from drbackup.actions.wal_spool import Spool
from drbackup.errors import DrbackupError, LockedError
from drbackup.repository.wal import WalArchive
from drbackup.sources.postgres import slots
from drbackup.sources.postgres.commands import find_client_bin_dir
from drbackup.sources.postgres.connection import client_env, connect
from drbackup.sources.postgres.physical import server_facts
from drbackup.sources.postgres.receivewal import ReceiveDir, ReceiveWal, receivewal_argv
from drbackup.sources.postgres.wal import (
    HISTORY,
    SEGMENT,
    WalFileName,
    parse_wal_file_name,
    segment_name,
)
from drbackup.sources.postgres.walend import snapshot_partial

POLL = 0.2  # seconds between looks at the spool
SLOT_CHECK = 30.0  # seconds between readings of the slot's state
BACKOFF_MIN, BACKOFF_MAX, HEALTHY_RUN = 1.0, 60.0, 60.0
ERROR_REPEAT = 60.0  # the same error is logged again after this long
EventSink = Callable[..., None]  # (event, level, **fields)


@dataclass
class StreamStatus:
    """What a streamer reports (``/metrics``, its log)."""

    target: str
    slot: str
    running: bool = False
    restarts: int = 0
    segments: int = 0  # complete segments and history files stored
    partials: int = 0  # partial snapshots stored
    last_upload: float | None = None  # unix time of the last file stored
    spool_bytes: int = 0  # complete segments waiting for upload
    slot_state: slots.SlotState | None = None
    slot_max_retained: int = 0
    last_error: str | None = None


@dataclass
class _Run:
    proc: ReceiveWal
    seeded: bool


@dataclass
class _Log:
    """Logs an event, but the same error only once per ``ERROR_REPEAT``."""

    sink: EventSink
    target: str
    _last: dict[str, float] = field(default_factory=dict)

    def event(self, event: str, level: int = logging.INFO, **fields) -> None:
        self.sink(event, level, target=self.target, **fields)

    def error(self, event: str, message: str, level: int = logging.ERROR, **fields) -> None:
        key = f"{event}:{message}"
        now = time.monotonic()
        if now - self._last.get(key, -ERROR_REPEAT) >= ERROR_REPEAT:
            self._last[key] = now
            self.event(event, level, error=message, **fields)


def _no_events(event: str, level: int = logging.INFO, **fields) -> None:
    return None


class WalStreamer:
    """Streams target ``target``'s WAL until told to stop (see the module docstring)."""

    def __init__(
        self,
        app,
        target: str,
        *,
        on_event: EventSink = _no_events,
        on_status: Callable[[StreamStatus], None] | None = None,
    ):
        self.app, self.target = app, target
        self.settings = wal_settings(app, target)
        self.pg = PgTarget.from_config(target, app.config.target(target))
        self.slot = self.settings.slot or slots.default_slot_name(target)
        self.flush_interval = self.settings.flush_interval.total_seconds()
        self.spool = Spool(spool_root(app, target) / "stream")
        self.dir = ReceiveDir(self.spool.path / "wal")
        self.status = StreamStatus(target, self.slot)
        self.status.slot_max_retained = self.settings.slot_max_retained
        self.log = _Log(on_event, target)
        self._on_status = on_status
        self._run: _Run | None = None
        self._stopping = False
        self._no_seed = False
        self._paused = False
        self._backoff = BACKOFF_MIN
        self._restart_at = 0.0
        self._next_flush = 0.0
        self._next_slot_check = 0.0
        self._uploaded: dict[str, int] = {}  # partial name -> upto stored (0: none whole)
        self._state: ClusterState | None = None
        self._segment_size: int | None = None

    # --- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Stream until ``stop`` is set; then stop pg_receivewal and upload what it wrote.

        Raises LockedError if another streamer uses this spool, and what opening the
        repository raises (the key); every other failure is logged and retried.
        """
        self.spool.prepare()
        self.dir.path.mkdir(mode=0o700, exist_ok=True)
        if not self.spool.acquire():
            raise LockedError(
                f"WAL of target {self.target} is already streamed into {self.spool.path}",
                hint="one streamer per target: the daemon streams every target whose "
                "wal.capture is stream",
            )
        try:
            self._state = ClusterState(WalArchive(self.app.repository(), self.target))
            self.log.event("wal_stream_started", slot=self.slot, spool=str(self.dir.path))
            while not stop.is_set():
                self.step()
                stop.wait(POLL)
        finally:
            self._shutdown()
            self.spool.release()

    def step(self) -> None:
        """One round: notice an exit, upload what is ready, snapshot the partial when due,
        read the slot when due, (re)start or pause pg_receivewal."""
        now = time.monotonic()
        if self._run is not None and (code := self._run.proc.poll()) is not None:
            self._exited(code)
        self._upload_completed()
        if now >= self._next_flush:
            self._next_flush = now + self.flush_interval
            self._flush_partials()
        self._pace(now)
        if now >= self._next_slot_check:
            self._next_slot_check = now + SLOT_CHECK
            self._check_slot()
        self._report()

    def _pace(self, now: float) -> None:
        waiting = self.status.spool_bytes = self.dir.waiting_bytes()
        if self._run is not None and waiting > self.settings.stream_spool_max:
            self._paused = True
            self.log.error("wal_stream_paused", "the spool is full", level=logging.WARNING)
            self._stop_receiver()
        elif self._paused and waiting <= self.settings.stream_spool_max // 2:
            self._paused = False
        if self._run is None and not self._paused and now >= self._restart_at:
            self._start()

    def _report(self) -> None:
        self.status.running = self._run is not None
        if self._on_status is not None:
            with contextlib.suppress(Exception):  # a status listener never stops the stream
                self._on_status(self.status)

    # --- pg_receivewal ------------------------------------------------------------------------

    def _start(self) -> None:
        try:
            self._prepare_server()
            for name in self.dir.truncate_unpadded(self._segment_size):
                self.log.event("wal_stream_partial_reset", file=name, reason="not fully padded")
            seeded = self._seed()
            argv = receivewal_argv(
                find_client_bin_dir(None, self.pg.pg_bin_dir),
                self.pg.dsn,
                self.dir.path,
                slot=self.slot,
                synchronous=self.settings.synchronous,
                status_interval=max(1, min(10, int(self.flush_interval))),
            )
            proc = ReceiveWal(argv, client_env(self.pg.password, self.pg.dsn), self._line)
            self._run = _Run(proc.start(), seeded)
        except DrbackupError as exc:
            self.status.last_error = exc.message
            self.log.error("wal_stream_start_failed", exc.message)
            self._schedule_restart(ran=0.0)
            return
        self.log.event("wal_stream_receiver_started", pid=proc.pid, slot=self.slot)

    def _prepare_server(self) -> None:
        """Create the slot if missing; learn the segment size."""
        with connect(self.pg.dsn, self.pg.password) as conn:
            if slots.create_slot(conn, self.slot):
                self.log.event("wal_slot_created", slot=self.slot)
            self._segment_size = server_facts(conn).segment_size

    def _seed(self) -> bool:
        """With nothing in the spool, mark the end of the archive as the start."""
        if self._no_seed or not self.dir.is_empty():
            return False
        name = self._archive_end()
        if name is None:
            return False
        self.dir.seed(name)
        self.log.event("wal_stream_resume", segment=name, reason="the end of the archive")
        return True

    def _archive_end(self) -> str | None:
        """The segment where the archive of the current cluster ends (the one after the
        newest complete segment, or the newest partial's), or None if it is empty."""
        archive = self._state.archive
        cluster = archive.current_cluster()
        if cluster is None or self._segment_size is None:
            return None
        newest = None
        for stored in archive.list_files(cluster):
            if stored.is_segment or stored.is_partial:
                name = parse_wal_file_name(stored.name)
                key = (name.log, name.seg, name.timeline, stored.is_segment)
                newest = max(newest or key, key)
        if newest is None:
            return None
        log, seg, timeline, complete = newest
        segno = WalFileName(timeline, log, seg, SEGMENT, "").segno(self._segment_size)
        return segment_name(timeline, segno + (1 if complete else 0), self._segment_size)

    def _line(self, line: str) -> None:
        self.log.event("wal_stream_receiver", message=line.removeprefix("pg_receivewal: "))

    def _exited(self, code: int) -> None:
        run, self._run = self._run, None
        self.status.running = False
        ran = time.monotonic() - run.proc.started
        message = run.proc.last_error()
        self._flush_partials()  # what it received before it ended
        if self._stopping:
            return
        self.status.restarts += 1
        self.status.last_error = f"pg_receivewal exited with status {code}: {message}"
        self.log.event(
            "wal_stream_receiver_exited",
            logging.WARNING,
            status=code,
            error=message,
            ran_s=round(ran, 1),
        )
        if run.seeded and code != 0 and ran < 30:
            self._drop_seed(message)
        elif "has already been removed" in message:
            self._skip_removed(message)
        self._schedule_restart(ran)

    def _drop_seed(self, message: str) -> None:
        removed = self.dir.remove_empty_partials()
        self._no_seed = True
        self.log.event(
            "wal_stream_gap",
            logging.ERROR,
            error=f"cannot resume at the end of the archive ({message}); resuming at the "
            "replication slot: 'drbackup wal check' names any gap",
            removed=removed,
        )

    def _skip_removed(self, message: str) -> None:
        """The server no longer has the WAL the spool resumes from: everything in the spool
        is stored; clear it and resume at the slot (a gap that 'wal check' names)."""
        partials = self.dir.partials()
        stored = [p for p in partials if p.name in self._uploaded]
        if self.dir.completed() or len(stored) < len(partials):
            return  # not all stored yet: the next exit tries again
        for name in partials:
            (self.dir.path / name.name).unlink(missing_ok=True)
        self._no_seed = True
        self.log.event("wal_stream_gap", logging.ERROR, error=message)

    def _schedule_restart(self, ran: float) -> None:
        """Start again after the backoff: 1 s, doubling to 60 s; 1 s after a healthy run."""
        if ran >= HEALTHY_RUN:
            self._backoff = BACKOFF_MIN
        self._restart_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _stop_receiver(self) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            run.proc.stop()
            self._restart_at = 0.0

    @property
    def receiver_pid(self) -> int | None:
        """The running pg_receivewal's process id."""
        return self._run.proc.pid if self._run is not None else None

    def kill_receiver(self) -> int | None:
        """SIGKILL pg_receivewal (a crash, for tests); its pid."""
        run = self._run
        if run is None:
            return None
        run.proc.kill()
        return run.proc.pid

    def _shutdown(self) -> None:
        self._stopping = True
        self._stop_receiver()
        with contextlib.suppress(Exception):  # best effort: left files are sent on restart
            self._upload_completed()
            self._flush_partials()
        self._report()
        self.log.event("wal_stream_stopped", slot=self.slot)

    # --- uploads ----------------------------------------------------------------------------

    def _upload_completed(self) -> None:
        for name in self.dir.completed():
            if not self._store(self.dir.path / name.name, name.name):
                return
            if name.kind != HISTORY:
                self._uploaded.pop(f"{name.name}.partial", None)
                with contextlib.suppress(DrbackupError):
                    self._state.archive.remove_partials(self._state.current, name.name)
            (self.dir.path / name.name).unlink(missing_ok=True)
            self.status.segments += 1

    def _flush_partials(self) -> None:
        """Snapshot and store each partial that grew; remove the ones pg_receivewal will
        not write again (an ended timeline's last segment) once stored."""
        partials = self.dir.partials()
        for position, name in enumerate(partials):
            if not self._flush_partial(name):
                return
            if position < len(partials) - 1:
                (self.dir.path / name.name).unlink(missing_ok=True)
                self._uploaded.pop(name.name, None)

    def _flush_partial(self, name: WalFileName) -> bool:
        """Store the whole records of partial ``name`` if they grew; False if it failed."""
        snapshot = self.spool.path / ".snapshot"
        try:
            upto = snapshot_partial(self.dir.path / name.name, snapshot)
        except OSError:
            return True  # completed (renamed) meanwhile: uploaded as a segment next round
        try:
            if upto == 0 or self._uploaded.get(name.name) == upto:
                self._uploaded.setdefault(name.name, upto)  # 0: nothing whole to store yet
                return True
            if not self._store(snapshot, name.name, upto):
                return False
            self._uploaded[name.name] = upto
            self.status.partials += 1
            return True
        finally:
            snapshot.unlink(missing_ok=True)

    def _store(self, path: Path, name: str, upto: int | None = None) -> bool:
        try:
            upload_wal_file(self._state, path, name=name, upto=upto)
        except FileNotFoundError:
            return True
        except DrbackupError as exc:
            self.status.last_error = f"{name}: {exc.message}"
            self.log.error("wal_stream_upload_failed", exc.message, file=name, hint=exc.hint)
            return False
        self.status.last_upload = time.time()
        return True

    # --- the slot -------------------------------------------------------------------------------

    def _check_slot(self) -> None:
        try:
            with connect(self.pg.dsn, self.pg.password) as conn:
                self.status.slot_state = slots.read_slot(conn, self.slot)
        except DrbackupError as exc:
            self.log.error("wal_slot_unreadable", exc.message, level=logging.WARNING)
            return
        state = self.status.slot_state
        if (
            state.retained_bytes is not None
            and state.retained_bytes > self.status.slot_max_retained
        ):
            self.log.error(
                "wal_slot_retains",
                f"slot {self.slot} retains {state.retained_bytes} bytes of WAL",
                level=logging.WARNING,
            )
