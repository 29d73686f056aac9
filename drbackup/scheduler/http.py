"""The daemon's HTTP endpoint: ``/healthz``, ``/readyz``, ``/metrics`` (Prometheus) and the
status pages.

* ``/healthz``: 200 while the process serves requests (liveness).
* ``/readyz``: 200 when schedules are loaded and the repository answered a probe within
  the probe TTL; 503 with the reason otherwise (readiness).
* ``/metrics``: the :class:`Metrics` registry in the Prometheus text format.
* ``/`` and ``/drills/<target>/<drill id>``: the status page and drill pages
  (``scheduler/pages.py``), HTML under a policy that lets them load nothing.

The server is the standard library's ``ThreadingHTTPServer`` in a daemon thread.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    generate_latest,
)

from drbackup.errors import UsageError
from drbackup.scheduler.stream_metrics import StreamSeries
from drbackup.times import parse_iso_time

# 9612: free in Prometheus' default port allocations (9187 is postgres_exporter's).  Loopback by
# default; the container image sets DRBACKUP_LISTEN=0.0.0.0:9612 so the port is reachable there.
DEFAULT_PORT = 9612
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
LISTEN_ENV = "DRBACKUP_LISTEN"
MAX_EVENT_BODY = 1 << 20  # one S3 event message; MinIO sends one record per request


class Metrics(StreamSeries):
    """Every series the daemon exports, in a registry of its own."""

    def __init__(self):
        disable_created_metrics()  # no drbackup_*_created beside each counter (process-wide)
        self.registry = CollectorRegistry()
        self._drill_at: dict[str, float] = {}  # start of the drill each target's series show
        self._pass_at: dict[str, float] = {}  # start of each target's newest passing drill
        self._run_series(self.registry)
        self._drill_and_job_series(self.registry)
        self._repository_series(self.registry)
        self._wal_series(self.registry)
        self._event_series(self.registry)
        self._stream_series(self.registry)

    def _event_series(self, r: CollectorRegistry) -> None:
        self.events = Counter(
            "drbackup_bucket_events",
            "Bucket event records received, by result (accepted, rejected, invalid)",
            ["target", "result"],
            registry=r,
        )
        self.capture_lag = Gauge(
            "drbackup_bucket_capture_lag_seconds",
            "From the first event of the last capture to its commit",
            ["target"],
            registry=r,
        )

    def _run_series(self, r: CollectorRegistry) -> None:
        kt = ["kind", "target"]
        self.last_success = Gauge(
            "drbackup_last_success_timestamp_seconds",
            "End of the last successful run (unix time)",
            kt,
            registry=r,
        )
        self.last_duration = Gauge(
            "drbackup_last_run_duration_seconds", "Duration of the last run", kt, registry=r
        )
        self.last_source_bytes = Gauge(
            "drbackup_last_source_bytes",
            "Bytes read from the source by the last run",
            kt,
            registry=r,
        )
        self.last_stored_bytes = Gauge(
            "drbackup_last_stored_bytes",
            "Bytes stored in the repository by the last run",
            kt,
            registry=r,
        )
        self.runs = Counter("drbackup_runs", "Action runs by result", [*kt, "status"], registry=r)
        self.failures = Counter(
            "drbackup_run_failures", "Failed action attempts (timeouts included)", kt, registry=r
        )

    def _drill_and_job_series(self, r: CollectorRegistry) -> None:
        self.drill_passed = Gauge(
            "drbackup_drill_passed",
            "1 if the target's last drill passed (warnings allowed), 0 if it failed",
            ["target"],
            registry=r,
        )
        self.drill_measured_rto = Gauge(
            "drbackup_drill_measured_rto_seconds",
            "Restore and verification time measured by the target's last drill "
            "(its objective: drbackup_rto_objective_seconds)",
            ["target"],
            registry=r,
        )
        self.drill_last = Gauge(
            "drbackup_drill_last_timestamp_seconds",
            "Start of the target's last drill (unix time)",
            ["target"],
            registry=r,
        )
        self.drill_last_pass = Gauge(
            "drbackup_drill_last_pass_timestamp_seconds",
            "Start of the target's last passing drill (unix time)",
            ["target"],
            registry=r,
        )
        self.rto_objective = Gauge(
            "drbackup_rto_objective_seconds",
            "Recovery time objective of the target (config rto)",
            ["target"],
            registry=r,
        )
        self.rpo_objective = Gauge(
            "drbackup_rpo_objective_seconds",
            "Recovery point objective of the target (config rpo)",
            ["target"],
            registry=r,
        )
        self.job_runs = Counter(
            "drbackup_job_runs", "Scheduled job runs by result", ["job", "status"], registry=r
        )
        self.job_next = Gauge(
            "drbackup_job_next_fire_timestamp_seconds",
            "Next scheduled fire time",
            ["job"],
            registry=r,
        )

    def _repository_series(self, r: CollectorRegistry) -> None:
        self.repo_size = Gauge(
            "drbackup_repository_size_bytes", "Bytes stored in the repository", registry=r
        )
        self.repo_up = Gauge(
            "drbackup_repository_up", "1 if the last repository probe succeeded", registry=r
        )
        self.schedules_loaded = Gauge(
            "drbackup_schedules_loaded_timestamp_seconds",
            "When schedules were last loaded",
            registry=r,
        )

    def _wal_series(self, r: CollectorRegistry) -> None:
        self.wal_window = Gauge(
            "drbackup_wal_window_timestamp_seconds",
            "Restorable window of base backups and WAL: its oldest and newest second",
            ["target", "edge"],
            registry=r,
        )
        self.wal_lag = Gauge(
            "drbackup_wal_archive_lag_seconds",
            "Age of the oldest WAL not yet in the repository (0: nothing waiting)",
            ["target"],
            registry=r,
        )
        self.wal_gaps = Gauge(
            "drbackup_wal_gaps",
            "Missing WAL segments and timeline breaks in the archive",
            ["target"],
            registry=r,
        )

    def record_success(self, kind: str, target: str, duration: float, outcome, at: float) -> None:
        labels = {"kind": kind, "target": target}
        self.last_success.labels(**labels).set(at)
        self.last_duration.labels(**labels).set(duration)
        self.runs.labels(**labels, status="ok").inc()
        if outcome.source_bytes is not None:
            self.last_source_bytes.labels(**labels).set(outcome.source_bytes)
        if outcome.stored_bytes is not None:
            self.last_stored_bytes.labels(**labels).set(outcome.stored_bytes)
        self.record_drill(kind, target, outcome.details)
        self.record_wal(kind, target, outcome.details)

    def record_wal(self, kind: str, target: str, details: dict) -> None:
        """The window, lag and gaps a wal-check run found (its details: WalStatus.to_dict)."""
        if kind != "wal-check" or "window" not in details:
            return
        for edge in ("oldest", "newest"):
            value = details["window"].get(edge)
            if value:
                self.wal_window.labels(target=target, edge=edge).set(
                    parse_iso_time(value).timestamp()
                )
        if details.get("lag_seconds") is not None:
            self.wal_lag.labels(target=target).set(details["lag_seconds"])
        self.wal_gaps.labels(target=target).set(
            len(details.get("gaps") or []) + len(details.get("breaks") or [])
        )
        if details.get("slot"):
            self.record_slot(target, details["slot"], details.get("slot_max_retained"))

    def record_drill(self, kind: str, target: str, details: dict) -> None:
        """The verdict of a drill job (its details: ``jobs.drill_outcome``)."""
        if kind != "drill" or "passed" not in details:
            return
        started = details.get("started_at")
        self.set_drill(
            target,
            datetime.fromisoformat(started).timestamp() if started else time.time(),
            passed=bool(details["passed"]),
            measured_s=details.get("rto_seconds"),
        )

    def set_drill(
        self, target: str, started: float, *, passed: bool, measured_s: float | None
    ) -> None:
        """Show a drill's result, unless the series already show a later drill of ``target``
        (drills reach the metrics from the daemon's jobs and from the catalog).  A drill
        without a measured time (its restore failed) removes the measured series."""
        if started < self._drill_at.get(target, float("-inf")):
            return
        self._drill_at[target] = started
        self.drill_passed.labels(target=target).set(1 if passed else 0)
        self.drill_last.labels(target=target).set(started)
        if passed:
            self._passed_at(target, started)
        if measured_s is not None:
            self.drill_measured_rto.labels(target=target).set(float(measured_s))
        else:
            with contextlib.suppress(KeyError):
                self.drill_measured_rto.remove(target)

    def _passed_at(self, target: str, started: float) -> None:
        newest = max(started, self._pass_at.get(target, started))
        self._pass_at[target] = newest
        self.drill_last_pass.labels(target=target).set(newest)

    def record_drills(self, summaries) -> None:
        """Drill results recorded in the catalog (``catalog.drills.DrillSummary``, oldest
        first), drills run from the command line included: each target's newest is shown,
        and the start of its newest passing one."""
        for summary in summaries:
            if summary.passed:
                self._passed_at(summary.target, summary.started_at.timestamp())
        newest = {s.target: s for s in summaries}
        for target, summary in newest.items():
            self.set_drill(
                target,
                summary.started_at.timestamp(),
                passed=summary.passed,
                measured_s=summary.total_s,
            )

    def set_objectives(self, config) -> None:
        """Every configured target's rto and rpo."""
        for name in config.targets:
            target = config.target(name)
            self.rto_objective.labels(target=name).set(target.rto.total_seconds())
            self.rpo_objective.labels(target=name).set(target.rpo.total_seconds())

    def declare_job(self, job_name: str, kind: str, targets: list[str]) -> None:
        """Create a scheduled job's counters at 0, so that their first increase shows in
        ``increase()`` (a series born at 1 hides it)."""
        for status in ("ok", "failed", "skipped"):
            self.job_runs.labels(job=job_name, status=status)
        for target in targets:
            self.failures.labels(kind=kind, target=target)
            for status in ("ok", "failed", "refused"):
                self.runs.labels(kind=kind, target=target, status=status)

    def record_refusal(self, kind: str, target: str) -> None:
        """A run declined because another held the target's lock: counted, not a failure."""
        self.runs.labels(kind=kind, target=target, status="refused").inc()

    def record_failure(self, kind: str, target: str, duration: float, *, final: bool) -> None:
        labels = {"kind": kind, "target": target}
        self.failures.labels(**labels).inc()
        self.last_duration.labels(**labels).set(duration)
        if final:
            self.runs.labels(**labels, status="failed").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RepositoryProbe:
    """Checks the repository every ``interval`` seconds in a thread; sizes it less often.

    ``check()`` raises if unreachable; ``size()`` returns the bytes stored.  ``fresh()`` is
    true when the last successful check is younger than ``ttl`` seconds.  ``on_tick()``
    runs after each probe (the daemon reads drill results from the catalog there).
    """

    def __init__(
        self,
        check: Callable[[], None],
        size: Callable[[], int],
        metrics: Metrics,
        *,
        interval: float = 30.0,
        size_interval: float = 600.0,
        on_tick: Callable[[], None] | None = None,
    ):
        self._check, self._size, self._metrics = check, size, metrics
        self._on_tick = on_tick
        self.interval, self.size_interval = interval, size_interval
        self.ttl = 2 * interval + 5
        self.last_ok: float | None = None
        self.error: str | None = "not probed yet"
        self._last_size: float | None = None
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="repo-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()

    def refresh_size(self) -> None:
        """Ask for a size measurement soon (after a job wrote or deleted data)."""
        self._last_size = None
        self._kick.set()

    def fresh(self) -> bool:
        return self.last_ok is not None and time.monotonic() - self.last_ok < self.ttl

    def probe(self) -> None:
        try:
            self._check()
            now = time.monotonic()
            if self._last_size is None or now - self._last_size >= self.size_interval:
                self._metrics.repo_size.set(self._size())
                self._last_size = now
            self.last_ok, self.error = time.monotonic(), None
            self._metrics.repo_up.set(1)
        except Exception as exc:  # noqa: BLE001 - reported by /readyz and the metric
            self.error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self._metrics.repo_up.set(0)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.probe()
            if self._on_tick is not None:
                with contextlib.suppress(Exception):  # the metrics keep their last values
                    self._on_tick()
            self._kick.wait(self.interval)
            self._kick.clear()


class HttpEndpoint:
    """``/healthz``, ``/readyz``, ``/metrics`` and the ``pages`` (a callable from a path to
    a response with ``status`` and ``body``, or None) on ``host:port`` in a daemon thread."""

    def __init__(
        self,
        listen: str,
        metrics: Metrics,
        readiness: Callable[[], str | None],
        pages: Callable[[str], object | None] | None = None,
        events: Callable[[str, str | None, bytes], tuple[int, str]] | None = None,
    ):
        """``events(path, authorization, body) -> (status, text)`` answers ``POST /events/…``
        (scheduler/events.py); without it every POST is 404."""
        host, port = parse_listen(listen)
        handler = _handler(metrics, readiness, pages, events)
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {listen}: {(exc.strerror or str(exc)).lower()}",
                hint="choose another --listen address (port 0 picks a free one)",
            ) from None
        self.server.daemon_threads = True
        self.address = "{}:{}".format(*self.server.server_address[:2])
        self._thread = threading.Thread(
            target=self.server.serve_forever,
            name="http",
            kwargs={"poll_interval": 0.2},
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with contextlib.suppress(Exception):  # stopping: a server already closed is fine
            self.server.shutdown()
            self.server.server_close()


def parse_listen(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) -> (host, port); raises UsageError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(
            f"invalid listen address '{text}'", hint=f"use host:port, e.g. {DEFAULT_LISTEN}"
        )
    return host.strip("[]") or "0.0.0.0", int(port)


HTML_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


def _answer_post(request: BaseHTTPRequestHandler, events) -> None:
    """``POST /events/<target>`` to ``events`` (scheduler/events.py); anything else 404."""
    path = request.path.split("?", 1)[0]
    length = int(request.headers.get("Content-Length") or 0)
    if events is None or not path.startswith("/events/"):
        code, text = 404, "not found"
    elif length > MAX_EVENT_BODY:
        code, text = 413, "event body over 1 MiB"
    else:
        body = request.rfile.read(length)
        code, text = events(path, request.headers.get("Authorization"), body)
    request.close_connection = True  # an unread body must not be taken for a request
    data = text.encode() + b"\n"
    request.send_response(code)
    request.send_header("Content-Type", "text/plain; charset=utf-8")
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    request.wfile.write(data)


def _handler(metrics: Metrics, readiness: Callable[[], str | None], pages=None, events=None):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            _answer_post(self, events)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                self._send(200, b"ok\n", "text/plain; charset=utf-8")
            elif path == "/readyz":
                problem = readiness()
                if problem is None:
                    self._send(200, b"ready\n", "text/plain; charset=utf-8")
                else:
                    body = json.dumps({"ready": False, "reason": problem}).encode() + b"\n"
                    self._send(503, body, "application/json")
            elif path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE_LATEST)
            elif pages is not None and (page := self._page(path)) is not None:
                self._send_html(page.status, page.body)
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8")

        def _page(self, path: str):
            try:
                return pages(path)
            except Exception as exc:  # noqa: BLE001 - a page's bug must not end the thread
                from drbackup.scheduler.pages import Response, error_page

                detail = f"{type(exc).__name__}: {exc}"
                return Response(500, error_page("the page failed", detail))

        def _send_html(self, code: int, body: bytes) -> None:
            from drbackup.report.html import http_policy

            headers = {**HTML_HEADERS, "Content-Security-Policy": http_policy()}
            self._send(code, body, headers.pop("Content-Type"), headers)

        def _send(self, code: int, body: bytes, content_type: str, headers=None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - probes are not news
            pass

    return Handler
