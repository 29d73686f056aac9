"""``drbackup daemon``: schedules on APScheduler, run history in the catalog, HTTP probes.

Flow of one fire (see docs/daemon.md)::

    CronTrigger fires ─► scheduled time = latest fire time <= now (same on every replica)
      ─► claim (job, scheduled time) in the catalog ─► taken? skip : jitter ─► per target:
         target lock ─► attempts: worker process with timeout ─► metrics, logs, runs rows
      ─► finish the job's run row (ok / failed)

Missed runs (docs/daemon.md): a fire delayed while the process runs runs once
(``coalesce``); across restarts the catalog is the memory, and a job whose latest fire
before now is later than its latest run gets ONE catch-up run, keyed by that fire time.

Signals.  SIGTERM/SIGINT: stop firing, let in-flight runs finish within ``grace`` seconds,
then cancel them (SIGTERM to the worker, SIGKILL :data:`jobs.ABORT_GRACE` later) and record
them failed; a cancelled backup leaves no manifest.  SIGHUP: reload the schedules (a broken
file is logged and the old schedules stay).  WAL streaming (scheduler/streams.py) runs
beside the schedule, from start until the in-flight runs are done at stop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import traceback
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler

from drbackup.actions.context import AppContext
from drbackup.actions.runs import RUN_FAILED, RUN_OK, RUN_REFUSED, CatalogIndex
from drbackup.config import Config
from drbackup.errors import ConfigError, DrbackupError, LockedError, UsageError
from drbackup.scheduler import jobs as jobkinds
from drbackup.scheduler.attempts import TargetRuns
from drbackup.scheduler.events import EventService
from drbackup.scheduler.heartbeat import FAILURE, START, SUCCESS, beat
from drbackup.scheduler.http import HttpEndpoint, Metrics, RepositoryProbe
from drbackup.scheduler.locks import CatalogLock, Coordinator, LocalLocks
from drbackup.scheduler.logs import emit
from drbackup.scheduler.pages import StatusPages
from drbackup.scheduler.schedule import Job, Schedule, load_schedules, previous_fire_time
from drbackup.scheduler.source_heartbeat import install_heartbeats
from drbackup.scheduler.streams import WalStreams

_NOT_FAILED = (RUN_OK, RUN_REFUSED)  # run results that do not fail a job
SEED_KINDS = ("backup", "snapshot", "drill", "prune", "verify", "wal-check")


class Daemon:
    """Loads schedules, runs jobs on time, serves probes and metrics.  See module docs."""

    def __init__(
        self,
        config: Config,
        schedules_dir: str,
        *,
        listen: str | None = None,
        grace: float = 60.0,
        runner=None,
        replica: str | None = None,
        probe_interval: float = 30.0,
        status_page: bool = True,
    ):
        self.config = config
        self.app = AppContext(config)
        self.schedules_dir = schedules_dir
        self.listen = listen
        self.grace = grace
        self.replica = replica or f"{socket.gethostname()}:{os.getpid()}"
        self.runner = runner
        self.metrics = Metrics()
        self.pages = StatusPages(self.app) if status_page else None
        self.schedule: Schedule | None = None
        self.http: HttpEndpoint | None = None
        self.events = EventService(self.app, self.metrics)  # served with the HTTP endpoint
        probe = (self._check_repository, self._repository_size, self.metrics)
        self.probe = RepositoryProbe(*probe, interval=probe_interval, on_tick=self._refresh_drills)
        self._coord: Coordinator | None = None
        self.streams = WalStreams(self.app, self.metrics, emit)  # its threads: start()
        self.index = CatalogIndex(lambda: self.app.catalog, self._catalog_warning)
        self.targets: TargetRuns | None = None  # with the runner (_make_runner)
        self._catalog_lock: CatalogLock | None = None
        self._job_locks = LocalLocks()
        self._stopping = threading.Event()
        self._stop_at: float | None = None
        self._wake = threading.Event()
        self._reload = False
        self._inflight = 0
        self._idle = threading.Condition()
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=8)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    # --- setup -------------------------------------------------------------------------

    @property
    def coord(self) -> Coordinator:
        if self._coord is None:
            self._coord = Coordinator(self.app.catalog, self.replica)
        return self._coord

    def load(self) -> Schedule:
        """Load and check the schedules; raises ConfigError listing every problem."""
        schedule = load_schedules(self.schedules_dir, self.config)
        jobkinds.check_available(j.kind for j in schedule.jobs if j.spec.enabled)
        return schedule

    def _make_runner(self, schedule: Schedule):
        if self.runner is None:
            modules = {jobkinds.REGISTRY[j.kind].module for j in schedule.jobs} | {
                "drbackup.actions.report",
                "drbackup.drill.report",
                "drbackup.drill.history",
                "psycopg",
            }
            self.runner = jobkinds.ProcessRunner(preload=sorted(modules))
        self.targets = TargetRuns(
            self.config, self.runner, self.metrics, self.index, self._stopping, self._cancel_at
        )
        return self.runner

    def lock_catalog(self) -> None:
        """Hold the SQLite catalog's daemon lock (no-op on PostgreSQL, or when held).

        Raises LockedError when another daemon holds it: before anything else runs, so a
        second daemon never marks the first one's live runs abandoned.
        """
        if self._catalog_lock is None:
            self._catalog_lock = CatalogLock.for_catalog(self.app.catalog)
        if self._catalog_lock is not None:
            self._catalog_lock.acquire()

    def _unlock_catalog(self) -> None:
        if self._catalog_lock is not None:
            self._catalog_lock.release()

    def start(self) -> None:
        """Load schedules, recover abandoned runs, serve HTTP, start firing, catch up."""
        self.lock_catalog()
        self.schedule = self.load()
        self._make_runner(self.schedule)
        for run_id in self.coord.recover_abandoned():
            emit(
                "run_abandoned", logging.WARNING, run_id=run_id, error="daemon died during the run"
            )
        self._seed_metrics()
        self.probe.start()
        if self.listen:
            pages = self.pages.get if self.pages is not None else None
            receiver = self.events.receiver
            self.http = HttpEndpoint(self.listen, self.metrics, self.readiness, pages, receiver)
            self.http.start()
            emit("listening", address=self.http.address)
        self._install(self.schedule)
        self._catch_up(self.schedule)
        self.streams.start()
        self.scheduler.start()
        self._update_next_fires()
        emit("started", replica=self.replica, jobs=len(self.schedule.jobs))

    def _install(self, schedule: Schedule) -> None:
        self.scheduler.remove_all_jobs()
        for job in schedule.jobs:
            if not job.spec.enabled:
                continue
            if not self._schedulable(job):
                emit("job_without_targets", logging.WARNING, job=job.name, source=job.source)
                continue
            aps = self.scheduler.add_job(
                self._fire, trigger=job.trigger(), args=[job.name], id=job.name, name=job.name
            )
            per_target = jobkinds.REGISTRY[job.kind].per_target
            self.metrics.declare_job(
                job.name, job.kind, list(job.targets) if per_target else ["(all)"]
            )
            emit(
                "job_scheduled",
                job=job.name,
                kind=job.kind,
                cron=job.spec.cron,
                timezone=job.spec.timezone,
                next_fire=_next_fire(aps),
            )
        install_heartbeats(self.scheduler, self.app, emit)
        self.metrics.schedules_loaded.set(time.time())
        self._update_next_fires()

    @staticmethod
    def _schedulable(job: Job) -> bool:
        return bool(job.targets) or not jobkinds.REGISTRY[job.kind].per_target

    def _catch_up(self, schedule: Schedule) -> None:
        now = datetime.now(UTC)
        for job in schedule.jobs:
            if not job.spec.enabled or not self._schedulable(job):
                continue
            last = self.coord.last_fire(job.name)
            missed = previous_fire_time(job.trigger(), now)
            if last is None or missed is None or missed <= last:
                continue
            emit(
                "missed_run",
                logging.WARNING,
                job=job.name,
                scheduled_at=missed.isoformat(),
                last_scheduled_at=last.isoformat(),
            )
            # Take the job's lock now, before the scheduler starts: a regular fire arriving
            # while the catch-up runs is then coalesced into it, never run beside it.
            lock = self._job_locks.get(job.name)
            lock.acquire()
            threading.Thread(
                target=self._catch_up_run, args=(job, missed, lock), name=f"catch-up:{job.name}"
            ).start()

    def _catch_up_run(self, job: Job, missed: datetime, lock: threading.Lock) -> None:
        try:
            with self._track():
                self._run_claimed(job, missed, "catch-up")
        except Exception as exc:  # noqa: BLE001 - logged like any job error
            emit("job_error", logging.ERROR, job=job.name, error=f"{type(exc).__name__}: {exc}")
        finally:
            lock.release()

    def _seed_metrics(self) -> None:
        """Last success times and drill results survive restarts: read them back from the
        catalog; the objectives come from the config."""
        self.metrics.set_objectives(self.config)
        with contextlib.suppress(DrbackupError):
            self._refresh_drills()
        try:
            since = datetime.now(UTC) - timedelta(days=400)
            runs = self.app.catalog.runs(since=since, status=RUN_OK)
        except DrbackupError:
            return
        for run in runs:
            if run.kind in SEED_KINDS and run.target and run.finished_at:
                labels = {"kind": run.kind, "target": run.target}
                self.metrics.last_success.labels(**labels).set(run.finished_at.timestamp())
                self.metrics.record_wal(run.kind, run.target, run.details or {})

    def _refresh_drills(self) -> None:
        """Every drill's result from the catalog: those run from the command line (or by
        another replica) reach the metrics too.  Raises DrbackupError."""
        from drbackup.catalog.drills import drill_summaries

        self.metrics.record_drills(drill_summaries(self.app.catalog))

    # --- running -----------------------------------------------------------------------

    def _fire(self, name: str, scheduled: datetime | None = None, reason: str = "schedule"):
        job = self._job(name)
        if job is None:
            return
        now = datetime.now(UTC)
        scheduled = scheduled or previous_fire_time(job.trigger(), now) or now
        try:
            self.run_job(job, scheduled, reason)
        except Exception as exc:  # noqa: BLE001 - a daemon bug must not kill the schedule
            emit(
                "job_error",
                logging.ERROR,
                job=job.name,
                error=f"{type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
        self._update_next_fires()

    def _job(self, name: str) -> Job | None:
        return next((j for j in self.schedule.jobs if j.name == name), None)

    def run_job(self, job: Job, scheduled: datetime, reason: str) -> str:
        """Claim and run ``job`` for ``scheduled``; returns ok, failed or skipped."""
        lock = self._job_locks.get(job.name)
        if self._stopping.is_set() or not lock.acquire(blocking=False):
            emit("job_skipped", job=job.name, reason="stopping or already running")
            return "skipped"
        try:
            with self._track():
                return self._run_claimed(job, scheduled, reason)
        finally:
            lock.release()

    def _run_claimed(self, job: Job, scheduled: datetime, reason: str) -> str:
        details = {"job_kind": job.kind, "targets": list(job.targets), "reason": reason}
        run_id = self.coord.claim(job.name, scheduled, details)
        if run_id is None:
            emit(
                "job_skipped",
                job=job.name,
                scheduled_at=scheduled.isoformat(),
                reason="this fire was already claimed",
            )
            self.metrics.job_runs.labels(job=job.name, status="skipped").inc()
            return "skipped"
        started = time.monotonic()
        emit(
            "job_started",
            job=job.name,
            run_id=run_id,
            scheduled_at=scheduled.isoformat(),
            reason=reason,
        )
        beat(job.heartbeat, START, job.name, f"run {run_id} of job {job.name} started ({reason})")
        results: dict[str, Any] = {}
        with self.coord.hold_run(run_id) as held:
            if job.jitter and self._stopping.wait(job.jitter_delay()):
                results["(job)"] = {
                    "status": "failed",
                    "error": "abandoned: the daemon is stopping",
                }
            elif jobkinds.REGISTRY[job.kind].per_target:
                for target in job.targets:
                    results[target] = self.targets.run(job, target, held, run_id)
            else:
                results["(all)"] = self.targets.run(job, None, None, run_id)
        return self._finish(job, run_id, results, started)

    def _finish(self, job: Job, run_id: int, results: dict, started: float) -> str:
        # A run refused by a target's lock is the lock doing its job: it fails no job and
        # pages nobody (the results still say it).
        failed = {t: r["error"] for t, r in results.items() if r["status"] not in _NOT_FAILED}
        status = RUN_FAILED if failed else RUN_OK
        error = "; ".join(f"{t}: {e}" for t, e in failed.items()) or None
        duration = time.monotonic() - started
        details = {"results": results, "duration_s": round(duration, 3), "replica": self.replica}
        self.index(lambda catalog: catalog.finish_run(run_id, status, error=error, details=details))
        self.metrics.job_runs.labels(job=job.name, status=status).inc()
        level = logging.INFO if status == RUN_OK else logging.ERROR
        emit(
            "job_finished",
            level,
            job=job.name,
            run_id=run_id,
            status=status,
            duration_s=round(duration, 3),
            error=error,
        )
        event, said = (FAILURE, error) if status == RUN_FAILED else (SUCCESS, "ok")
        beat(job.heartbeat, event, job.name, f"run {run_id} of job {job.name}: {said}")
        self.probe.refresh_size()
        if self.pages is not None:
            self.pages.invalidate()
        if status == RUN_FAILED:
            self._notify_failure(job, error or "failed")
        return status

    def _notify_failure(self, job: Job, error: str) -> None:
        from drbackup.actions.report import notify_failure

        def send() -> None:
            try:
                notify_failure(self.config, job.name, job.kind, error)
            except DrbackupError as exc:
                emit("notify_failed", logging.ERROR, job=job.name, error=exc.message)

        threading.Thread(target=send, name="notify", daemon=True).start()

    @staticmethod
    def _catalog_warning(text: str) -> None:
        emit("catalog_warning", logging.WARNING, error=text)

    def _cancel_at(self) -> float | None:
        return self._stop_at

    @contextlib.contextmanager
    def _track(self):
        with self._idle:
            self._inflight += 1
        try:
            yield
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def _update_next_fires(self) -> None:
        for aps in self.scheduler.get_jobs():
            when = getattr(aps, "next_run_time", None)  # unset before the scheduler starts
            if when and not aps.id.startswith(("catch-up:", "source-heartbeat:")):
                self.metrics.job_next.labels(job=aps.id).set(when.timestamp())

    # --- probes ------------------------------------------------------------------------

    def readiness(self) -> str | None:
        """None when ready, else the reason (for /readyz)."""
        if self.schedule is None:
            return "schedules not loaded"
        if self._stopping.is_set():
            return "stopping"
        if not self.probe.fresh():
            return f"repository not reachable: {self.probe.error or 'probe is stale'}"
        return None

    def _check_repository(self) -> None:
        self.app.storage.check()

    def _repository_size(self) -> int:
        return sum(info.size for info in self.app.storage.list(""))

    # --- lifecycle -----------------------------------------------------------------------

    def reload(self) -> bool:
        """Re-read the schedules; on error keep the current ones.  Returns success."""
        try:
            schedule = self.load()
        except ConfigError as exc:
            emit("reload_failed", logging.ERROR, error=exc.message)
            return False
        self.schedule = schedule
        self._install(schedule)
        emit("reloaded", jobs=len(schedule.jobs))
        return True

    def serve_forever(self) -> None:
        """Start, then handle signals until SIGTERM/SIGINT; stop gracefully."""
        self.lock_catalog()  # refused: one line, nothing started, nothing to stop
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)
        try:
            self.start()
            while not self._stopping.is_set():
                self._wake.wait()
                self._wake.clear()
                if self._reload:
                    self._reload = False
                    self.reload()
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_stop_signal(self, signum, frame) -> None:
        emit("stopping", signal=signal.Signals(signum).name, grace_s=self.grace)
        self._stop_at = time.monotonic() + self.grace
        self._stopping.set()
        self._wake.set()

    def _on_reload_signal(self, signum, frame) -> None:
        self._reload = True
        self._wake.set()

    def stop(self) -> None:
        """Stop firing; wait for in-flight runs (cancelled after ``grace``); close."""
        if self._stop_at is None:
            self._stop_at = time.monotonic() + self.grace
        self._stopping.set()
        with contextlib.suppress(SchedulerNotRunningError):  # stopped before it started
            self.scheduler.shutdown(wait=False)
        bound = self._stop_at + jobkinds.ABORT_GRACE + 5
        with self._idle:
            self._idle.wait_for(
                lambda: self._inflight == 0, timeout=max(0, bound - time.monotonic())
            )
        self.streams.stop()  # streamed until now: WAL kept flowing while runs finished
        self.probe.stop()
        if self.http:
            self.http.stop()
        self.events.stop()
        self._unlock_catalog()
        emit("stopped", inflight=self._inflight)

    def run_once(self, name: str) -> str:
        """``--once JOB``: run one job now (claimed like any fire); ok or failed."""
        schedule = self.load()
        self.schedule = schedule
        job = schedule.job(name)
        if not job.targets and jobkinds.REGISTRY[job.kind].per_target:
            raise UsageError(
                f"job '{name}' has no targets", hint="check its 'targets' and the config"
            )
        self._make_runner(schedule)
        self.lock_catalog()
        try:
            status = self.run_job(job, datetime.now(UTC), "once")
        finally:
            self._unlock_catalog()
        if status == "skipped":
            raise LockedError(f"job '{name}' is already running")
        return status


def _next_fire(aps) -> str | None:
    when = getattr(aps, "next_run_time", None)
    return when.isoformat() if when else None
