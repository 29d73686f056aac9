"""Job kinds: a registry ``kind -> adapter(app, job, target)`` over the actions, and the
worker process each action run happens in.

An adapter calls one action and returns an :class:`Outcome` (ids, bytes, drill verdict).
Action modules are imported when the adapter runs, so a kind whose action is missing is a
clear load-time error from :func:`check_available`, not an import crash.

Every action run happens in a child process (multiprocessing ``forkserver``: forked from a
small single-threaded server, so no lock held by a daemon thread is inherited).  The parent
can then enforce a timeout: SIGTERM first (the action unwinds: a backup writer deletes its
data objects and records the failed run), SIGKILL after :data:`ABORT_GRACE` seconds.  A
backup killed at any point leaves no manifest, so nothing that looks valid: manifests are
written last.  A worker watches a pipe whose other end only the daemon holds: when the
daemon dies, even by SIGKILL, the worker cancels itself the same way (SIGTERM, SIGKILL
after the grace), so no orphan finishes a backup behind a dead daemon's back.  (The fork
server itself stays up while workers run: each holds its "alive" pipe.)
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from drbackup.errors import CheckFailedError, ConfigError, DrbackupError, UsageError

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext
    from drbackup.drill.record import DrillReport
    from drbackup.scheduler.schedule import Job

# Imported once by the fork server: each worker starts with them loaded.
PRELOAD = [
    "drbackup.scheduler.jobs",
    "drbackup.actions.context",
    "drbackup.catalog",
    "drbackup.repository.repo",
    "drbackup.storage.local",
    "drbackup.storage.s3",
    "sqlalchemy.dialects.sqlite",
    "sqlalchemy.dialects.postgresql",
]
ABORT_GRACE = 10.0  # seconds between SIGTERM and SIGKILL of a cancelled action
_PR_SET_PDEATHSIG = 1


@dataclass
class Outcome:
    """What one action run produced (picklable: it crosses the process boundary)."""

    backup_id: str | None = None
    source_bytes: int | None = None
    stored_bytes: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # the action's AppContext.warnings


@dataclass(frozen=True)
class KindSpec:
    """A job kind: the action module it needs and the adapter that calls it.

    ``per_target``: the adapter runs once per target (else once, with target None).
    ``records_runs``: the action records its own catalog runs (else the daemon does).
    """

    name: str
    module: str
    adapter: Callable[..., Outcome]
    per_target: bool = True
    records_runs: bool = False


REGISTRY: dict[str, KindSpec] = {}


def register(name: str, module: str, *, per_target: bool = True, records_runs: bool = False):
    """Decorator adding an adapter to :data:`REGISTRY`."""

    def add(fn: Callable[..., Outcome]) -> Callable[..., Outcome]:
        REGISTRY[name] = KindSpec(name, module, fn, per_target, records_runs)
        return fn

    return add


def check_available(kinds) -> None:
    """Raise ConfigError naming every kind in ``kinds`` whose action module cannot be imported."""
    problems = []
    for kind in sorted(set(kinds)):
        spec = REGISTRY.get(kind)
        if spec is None:
            problems.append(f"job kind '{kind}' is unknown")
            continue
        try:
            importlib.import_module(spec.module)
        except ImportError as exc:
            if exc.name and spec.module.startswith(exc.name):
                problems.append(f"job kind '{kind}' needs {spec.module}, not available")
            else:
                problems.append(f"job kind '{kind}': cannot import {spec.module}: {exc}")
    if problems:
        raise ConfigError(
            "; ".join(problems), hint="remove or disable those jobs, or upgrade drbackup"
        )


# -- adapters -----------------------------------------------------------------------------


@register("backup", "drbackup.actions.backup_postgres", records_runs=True)
def run_backup(app: AppContext, job: Job, target: str) -> Outcome:
    """The kinds the target's ``backup_kinds`` names: logical (pg_dump), physical (a base
    backup), in that order; the outcome is the last one's."""
    kinds = getattr(app.config.target(target), "backup_kinds", ["logical"])
    manifest = None
    if "logical" in kinds:
        from drbackup.actions.backup_postgres import backup_target

        manifest = backup_target(app, target)
    if "physical" in kinds:
        from drbackup.actions.backup_physical import backup_physical

        manifest = backup_physical(app, target)
    return _manifest_outcome(manifest)


@register("wal-check", "drbackup.actions.wal_check", records_runs=True)
def run_wal_check(app: AppContext, job: Job, target: str) -> Outcome:
    """The WAL archive's continuity, window and lag: /metrics shows them; a gap fails."""
    from drbackup.actions.wal_check import check_wal

    status = check_wal(app, target)
    outcome = Outcome(details=status.to_dict())
    if status.problems:
        error = CheckFailedError(f"WAL archive of {target}: {'; '.join(status.problems[:3])}")
        error.details = outcome.details  # the window and lag still reach the metrics
        raise error
    return outcome


@register("snapshot", "drbackup.actions.snapshot_minio", records_runs=True)
def run_snapshot(app: AppContext, job: Job, target: str) -> Outcome:
    from drbackup.actions.snapshot_minio import snapshot_target

    return _manifest_outcome(snapshot_target(app, target))


@register("drill", "drbackup.actions.drill", records_runs=True)
def run_drill(app: AppContext, job: Job, target: str) -> Outcome:
    from drbackup.actions.drill import plan_for, run_drill
    from drbackup.drill.report import failure_summary

    plan = plan_for(app, job.spec.args().get("plan"), (target,))
    result = run_drill(app, plan)
    outcome = drill_outcome(result.record, target)
    if result.failed:
        error = CheckFailedError(failure_summary(result.record))
        error.details = outcome.details  # the verdict still reaches the metrics
        raise error
    return outcome


@register("prune", "drbackup.actions.prune", per_target=False, records_runs=True)
def run_prune(app: AppContext, job: Job, target: None) -> Outcome:
    from drbackup.actions.prune import prune_targets

    names = None if job.spec.targets == "all" else list(job.targets)
    try:
        report = prune_targets(app, names, dry_run=job.spec.args().get("dry_run", False))
    except UsageError as exc:
        if names is not None:
            raise
        return Outcome(details={"note": exc.message})  # no target has a retention policy
    report.raise_for_errors()
    counts: dict[str, int] = {}
    for result in report.targets:
        for key, value in result.counts().items():
            if isinstance(value, int):
                counts[key] = counts.get(key, 0) + value
    return Outcome(details=counts, warnings=list(report.warnings))  # the catalog's, links


@register("verify", "drbackup.actions.repository")
def run_verify(app: AppContext, job: Job, target: str) -> Outcome:
    from drbackup.actions.repository import verify_backup

    refs = app.repository().list_refs(target)
    if not refs:
        raise UsageError(f"target {target} has no backup to verify")
    result = verify_backup(app, refs[-1].backup_id)
    return Outcome(
        backup_id=refs[-1].backup_id,
        source_bytes=result.bytes_read,
        details={"problems": len(result.problems)},
    )


@register("report", "drbackup.actions.report", per_target=False)
def run_report(app: AppContext, job: Job, target: None) -> Outcome:
    from drbackup.actions.report import report_and_notify

    args = job.spec.args()
    report = report_and_notify(
        app,
        targets=list(job.targets) or None,
        fmt=args["format"],
        output=args.get("output"),
        notify=args["notify"],
    )
    return Outcome(details={"report_status": report.status.name})


def _manifest_outcome(manifest) -> Outcome:
    return Outcome(
        backup_id=getattr(manifest, "backup_id", None),
        source_bytes=getattr(manifest, "size", None),
        stored_bytes=getattr(manifest, "stored_size", None),
    )


def drill_outcome(report: DrillReport, target: str) -> Outcome:
    """Pass/fail and restore seconds of ``target`` in a drill report."""
    drilled = report.target(target)
    if drilled is None:
        return Outcome(details={"drill_id": report.drill_id, "passed": False})
    status = drilled.status or report.status
    details = {
        "drill_id": report.drill_id,
        "passed": status != "fail",
        "drill_status": status,
        "rto_seconds": drilled.timings.total_s if drilled.timings else None,
        "started_at": report.started_at.isoformat(),
    }
    return Outcome(backup_id=drilled.backup_id, details=details)


# -- the worker process -------------------------------------------------------------------


class Cancelled(BaseException):  # noqa: N818 - not an error of the action: it was stopped
    """Raised in the worker's main thread on SIGTERM: the daemon cancelled this run."""

    def __str__(self) -> str:
        return "cancelled by the daemon (timeout or shutdown)"


class ActionError(DrbackupError):
    """An action run failed; ``kind`` is the original exception's class name."""

    def __init__(
        self, message: str, *, kind: str = "", hint: str | None = None, redacted: str | None = None
    ):
        super().__init__(message, hint=hint, redacted=redacted)
        self.kind = kind
        self.unwound = True  # the action ran its own error handling (recorded its run)
        self.traceback: str | None = None
        self.details: dict = {}  # what the action found before failing (a drill's verdict)
        self.warnings: list[str] = []  # the action's AppContext.warnings (a catalog write)


class ActionTimeout(ActionError):
    """The action did not finish within the job's timeout and was stopped."""


class ActionAbandoned(ActionError):
    """The daemon stopped and the action did not finish within the stop grace."""


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _raise_cancelled(signum, frame) -> None:
    raise Cancelled


def _watch_daemon(alive) -> None:
    """Stop this worker when the daemon goes away (its end of ``alive`` closes)."""
    with contextlib.suppress(EOFError, OSError):
        alive.recv()
    os.kill(os.getpid(), signal.SIGTERM)  # unwind: no manifest, data objects removed
    time.sleep(ABORT_GRACE)
    os.kill(os.getpid(), signal.SIGKILL)


def _child_main(conn, alive, config, job, target, adapter) -> None:
    """Entry point of the worker: run the adapter, send ("ok", Outcome) or ("failed", info)."""
    _die_with_parent()
    signal.signal(signal.SIGTERM, _raise_cancelled)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the daemon, which decides
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    threading.Thread(target=_watch_daemon, args=(alive,), name="watch-daemon", daemon=True).start()
    from drbackup.actions.context import AppContext

    app = AppContext(config)
    try:
        outcome = adapter(app, job, target)
        outcome.warnings = [*outcome.warnings, *app.warnings]
        conn.send(("ok", outcome))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which records it
        info = {
            "kind": type(exc).__name__,
            "message": getattr(exc, "message", None) or str(exc) or type(exc).__name__,
            "hint": getattr(exc, "hint", None),
            "redacted": getattr(exc, "redacted", None),  # what the catalog and chat get
            "warnings": app.warnings,
        }
        if not isinstance(exc, DrbackupError | Cancelled):
            info["traceback"] = traceback.format_exc(limit=8)
        if isinstance(getattr(exc, "details", None), dict):
            info["details"] = exc.details
        with contextlib.suppress(Exception):  # the parent is gone: nobody is left to tell
            conn.send(("failed", info))
    finally:
        _close_catalog(app)
        conn.close()


class ProcessRunner:
    """Runs adapters in worker processes with a timeout and a cancel deadline."""

    def __init__(self, preload: list[str] | None = None):
        self._ctx = multiprocessing.get_context("forkserver")
        modules = [*PRELOAD, *(preload or [])]
        self._ctx.set_forkserver_preload(modules)

    def run(self, config, job, target, timeout: float, cancel_at: Callable[[], float | None]):
        """Run ``job``'s adapter on ``target``; return its Outcome.

        Raises ActionError (the action failed), ActionTimeout, or ActionAbandoned (when
        ``cancel_at()`` returns a monotonic deadline that passes: the daemon is stopping).
        """
        recv, send = self._ctx.Pipe(duplex=False)
        # Held open by this process only: its end closes when the daemon dies, even by
        # SIGKILL, and the worker stops (the fork server outlives us while workers run).
        alive_r, alive_w = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_child_main,
            # the adapter travels by reference (module + name): tests can register their own
            args=(send, alive_r, config, job, target, REGISTRY[job.kind].adapter),
            name=f"drbackup-{job.name}",
        )
        proc.start()
        send.close()
        alive_r.close()
        try:
            return self._wait(proc, recv, time.monotonic() + timeout, cancel_at, timeout)
        finally:
            recv.close()
            if proc.is_alive():
                proc.kill()
            proc.join()
            alive_w.close()

    def _wait(self, proc, recv, deadline, cancel_at, timeout):
        while True:
            limit = min(deadline, cancel_at() or deadline)
            ready = wait([recv, proc.sentinel], timeout=max(0.0, min(limit - time.monotonic(), 1)))
            if recv in ready:
                with contextlib.suppress(EOFError):
                    return _result(recv.recv())
            if proc.sentinel in ready and not recv.poll():
                raise ActionError(f"worker process died (exit status {proc.exitcode})")
            now = time.monotonic()
            if now >= deadline:
                error = ActionTimeout(f"timed out after {timeout:g}s", kind="timeout")
                error.unwound = _stop(proc, recv)
                raise error
            stop_at = cancel_at()
            if stop_at is not None and now >= stop_at:
                error = ActionAbandoned("abandoned: the daemon is stopping", kind="abandoned")
                error.unwound = _stop(proc, recv)
                raise error


def _stop(proc, recv) -> bool:
    """SIGTERM (the action unwinds), then SIGKILL after ABORT_GRACE seconds.

    Returns whether the action unwound (answered): then it recorded its own failed run.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    proc.join(ABORT_GRACE)
    if proc.is_alive():
        proc.kill()
        proc.join()
    answered = False
    with contextlib.suppress(EOFError, OSError):
        while recv.poll():
            recv.recv()  # the "cancelled" answer
            answered = True
    return answered


def _result(message) -> Outcome:
    status, payload = message
    if status == "ok":
        return payload
    error = ActionError(
        payload["message"],
        kind=payload["kind"],
        hint=payload.get("hint"),
        redacted=payload.get("redacted"),
    )
    error.traceback = payload.get("traceback")
    error.details = payload.get("details") or {}
    error.warnings = payload.get("warnings") or []
    raise error


class InlineRunner:
    """Runs adapters in the calling thread: no timeout, no isolation (for tests and tools)."""

    def run(self, config, job, target, timeout: float, cancel_at=None) -> Outcome:
        from drbackup.actions.context import AppContext

        app = AppContext(config)
        try:
            outcome = REGISTRY[job.kind].adapter(app, job, target)
        except DrbackupError as exc:
            error = ActionError(
                exc.message, kind=type(exc).__name__, hint=exc.hint, redacted=exc.redacted
            )
            error.warnings = app.warnings
            raise error from exc
        else:
            outcome.warnings = [*outcome.warnings, *app.warnings]
            return outcome
        finally:
            _close_catalog(app)


def _close_catalog(app: AppContext) -> None:
    catalog = app.__dict__.get("catalog")  # only if the action opened it
    if catalog is not None:
        with contextlib.suppress(Exception):  # closing at exit: nothing to report
            catalog.close()
