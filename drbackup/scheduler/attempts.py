"""One target of a claimed job run: its lock, its attempts in worker processes, its result.

An attempt that fails is retried after the job's delay until its attempts are used up; a
run refused by a lock (the target's, or the action's own) is final and fails nothing.
Every attempt is measured (metrics), logged (``run_ok``, ``run_failed``, ``run_refused``)
and, for kinds whose actions do not record their own runs, recorded in the catalog.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from drbackup.actions.runs import (
    RUN_FAILED,
    RUN_INTERRUPTED,
    RUN_OK,
    RUN_REFUSED,
    CatalogIndex,
    Run,
)
from drbackup.errors import LockedError, shareable
from drbackup.scheduler import jobs as jobkinds
from drbackup.scheduler.logs import emit

if TYPE_CHECKING:
    from drbackup.config import Config
    from drbackup.scheduler.http import Metrics
    from drbackup.scheduler.locks import HeldRun
    from drbackup.scheduler.schedule import Job


class TargetRuns:
    """Runs the targets of claimed job runs: what :class:`Daemon` hands each target to."""

    def __init__(
        self,
        config: Config,
        runner,
        metrics: Metrics,
        index: CatalogIndex,
        stopping: threading.Event,
        cancel_at: Callable[[], float | None],
    ):
        self.config = config
        self.runner = runner  # jobs.ProcessRunner, or an InlineRunner in tests
        self.metrics = metrics
        self.index = index
        self._stopping = stopping
        self._cancel_at = cancel_at

    def run(self, job: Job, target: str | None, held: HeldRun | None, run_id: int) -> dict:
        """Run ``job`` on ``target`` under its lock; the result for the job's run row."""
        try:
            lock = held.target(target, job.timeout) if held and target else contextlib.nullcontext()
            with lock:
                return self._attempts(job, target, run_id)
        except LockedError as exc:
            return self._refused(job, target, run_id, exc.message, attempt=None)

    def _refused(self, job: Job, target: str | None, run_id: int, error: str, attempt) -> dict:
        """A run declined because another run held its target's lock (not a failure)."""
        self.metrics.record_refusal(job.kind, target or "(all)")
        emit(
            "run_refused",
            logging.WARNING,
            job=job.name,
            target=target,
            run_id=run_id,
            attempt=attempt,
            error=error,
        )
        return {"status": RUN_REFUSED, "error": error, "attempts": attempt or 0}

    def _attempts(self, job: Job, target: str | None, run_id: int) -> dict:
        for attempt in range(1, job.retry.attempts + 1):
            started, wall = time.monotonic(), datetime.now(UTC)
            try:
                outcome = self.runner.run(self.config, job, target, job.timeout, self._cancel_at)
            except jobkinds.ActionError as exc:
                self._warnings(job, target, run_id, exc.warnings)
                result = self._failed(job, target, run_id, attempt, exc, started, wall)
                if result is not None:
                    return result
                continue
            self._warnings(job, target, run_id, outcome.warnings)
            return self._succeeded(job, target, run_id, attempt, outcome, started, wall)
        raise AssertionError("unreachable")

    def _failed(self, job, target, run_id, attempt, exc, started, wall) -> dict | None:
        """Measure, record and log a failed attempt; the result when it was the last one,
        None to try again (after the job's retry delay)."""
        if exc.kind == LockedError.__name__:  # the action's own lock: final, no retry
            self._record(job, target, wall, RUN_REFUSED, exc)
            return self._refused(job, target, run_id, exc.message, attempt)
        label, duration = target or "(all)", time.monotonic() - started
        abandoned = isinstance(exc, jobkinds.ActionAbandoned)
        final = attempt == job.retry.attempts or abandoned
        self.metrics.record_failure(job.kind, label, duration, final=final)
        self.metrics.record_drill(job.kind, label, exc.details)
        self.metrics.record_wal(job.kind, label, exc.details)
        self._record(job, target, wall, RUN_INTERRUPTED if abandoned else RUN_FAILED, exc)
        emit(
            "run_failed",
            logging.ERROR,
            job=job.name,
            target=target,
            run_id=run_id,
            attempt=attempt,
            attempts=job.retry.attempts,
            duration_s=round(duration, 3),
            error=exc.message,
            error_kind=exc.kind,
            traceback=getattr(exc, "traceback", None),
        )
        if final or self._stopping.wait(job.retry.delay(attempt)):
            # recorded in the catalog and sent to chat: without object keys
            return {"status": "failed", "error": shareable(exc), "attempts": attempt}
        return None

    def _succeeded(self, job, target, run_id, attempt, outcome, started, wall) -> dict:
        duration = time.monotonic() - started
        self.metrics.record_success(job.kind, target or "(all)", duration, outcome, time.time())
        self._record(job, target, wall, RUN_OK, None, outcome)
        emit(
            "run_ok",
            job=job.name,
            target=target,
            run_id=run_id,
            attempt=attempt,
            duration_s=round(duration, 3),
            backup_id=outcome.backup_id,
            stored_bytes=outcome.stored_bytes,
        )
        return {
            **small(outcome.details),
            "status": "ok",
            "attempts": attempt,
            "backup_id": outcome.backup_id,
            "duration_s": round(duration, 3),
        }

    def _record(self, job, target, started, status, exc, outcome=None) -> None:
        """Per-target runs rows for kinds whose actions do not record their own, and for
        runs the daemon had to SIGKILL (the action could not record those)."""
        spec = jobkinds.REGISTRY[job.kind]
        killed = exc is not None and not exc.unwound  # SIGKILLed: it could not record
        if target is None or (spec.records_runs and not killed):
            return
        run = Run(job.kind, target, started, details={"job": job.name})
        if outcome is not None:
            run.backup_id = outcome.backup_id
            run.details.update(small(outcome.details))
        self.index.record_run(run, status, shareable(exc) if exc else None)

    @staticmethod
    def _warnings(job: Job, target: str | None, run_id: int, warnings: list[str]) -> None:
        """What the action's run warned about (a catalog write it could not do)."""
        for text in warnings:
            emit(
                "run_warning",
                logging.WARNING,
                job=job.name,
                target=target,
                run_id=run_id,
                error=text,
            )


def small(details: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of ``details``: what a run row and a job's results keep."""
    return {k: v for k, v in details.items() if isinstance(v, str | int | float | bool | None)}
