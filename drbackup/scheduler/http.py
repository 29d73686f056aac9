"""The daemon's HTTP endpoint: ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus).

* ``/healthz``: 200 while the process serves requests (liveness).
* ``/readyz``: 200 when schedules are loaded and the repository answered a probe within
  the probe TTL; 503 with the reason otherwise (readiness).
* ``/metrics``: the :class:`Metrics` registry in the Prometheus text format.

The server is the standard library's ``ThreadingHTTPServer`` in a daemon thread.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

from drbackup.errors import UsageError
from drbackup.times import parse_iso_time

# 9612: free in Prometheus' default port allocations (9187 is postgres_exporter's).  Loopback by
# default; the container image sets DRBACKUP_LISTEN=0.0.0.0:9612 so the port is reachable there.
DEFAULT_PORT = 9612
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
LISTEN_ENV = "DRBACKUP_LISTEN"


class Metrics:
    """Every series the daemon exports, in a registry of its own."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self._run_series(self.registry)
        self._drill_and_job_series(self.registry)
        self._repository_series(self.registry)
        self._wal_series(self.registry)
        self._stream_series(self.registry)

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
            "1 if the last drill passed, 0 if it failed",
            ["target"],
            registry=r,
        )
        self.drill_rto = Gauge(
            "drbackup_drill_rto_seconds",
            "Restore time measured by the last drill",
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

    def _stream_series(self, r: CollectorRegistry) -> None:
        self.stream_up = Gauge(
            "drbackup_wal_stream_up",
            "1 while this replica's pg_receivewal streams the target's WAL",
            ["target"],
            registry=r,
        )
        self.stream_restarts = Counter(
            "drbackup_wal_stream_restarts", "pg_receivewal restarts", ["target"], registry=r
        )
        self.stream_upload = Gauge(
            "drbackup_wal_stream_last_upload_timestamp_seconds",
            "When the streamer last stored a WAL file (a segment or a partial)",
            ["target"],
            registry=r,
        )
        self.stream_spool = Gauge(
            "drbackup_wal_stream_spool_bytes",
            "Complete segments waiting in the spool for upload",
            ["target"],
            registry=r,
        )
        st = ["target", "slot"]
        self.slot_retained = Gauge(
            "drbackup_wal_slot_retained_bytes",
            "WAL the replication slot keeps on the server",
            st,
            registry=r,
        )
        self.slot_max_retained = Gauge(
            "drbackup_wal_slot_max_retained_bytes",
            "The target's wal.slot_max_retained: more retained WAL is a warning",
            st,
            registry=r,
        )
        self.slot_active = Gauge(
            "drbackup_wal_slot_active",
            "1 if a client streams from the replication slot, 0 if nobody does",
            st,
            registry=r,
        )
        self._restarts_seen: dict[str, int] = {}

    def record_stream(self, status) -> None:
        """A streamer's state (actions.wal_stream.StreamStatus)."""
        target = status.target
        self.stream_up.labels(target=target).set(1 if status.running else 0)
        delta = status.restarts - self._restarts_seen.get(target, 0)
        if delta > 0:
            self.stream_restarts.labels(target=target).inc(delta)
        self._restarts_seen[target] = status.restarts
        if status.last_upload is not None:
            self.stream_upload.labels(target=target).set(status.last_upload)
        self.stream_spool.labels(target=target).set(status.spool_bytes)
        self.slot_max_retained.labels(target=target, slot=status.slot).set(status.slot_max_retained)
        if status.slot_state is not None:
            self.record_slot(target, status.slot_state.to_dict())

    def record_stream_idle(self, target: str) -> None:
        """This replica does not stream ``target`` (now)."""
        self.stream_up.labels(target=target).set(0)
        self._restarts_seen.pop(target, None)

    def record_slot(self, target: str, slot: dict) -> None:
        """A replication slot's state (sources.postgres.slots.SlotState.to_dict)."""
        if not slot.get("exists"):
            return
        labels = {"target": target, "slot": slot["name"]}
        self.slot_active.labels(**labels).set(1 if slot.get("active") else 0)
        if slot.get("retained_bytes") is not None:
            self.slot_retained.labels(**labels).set(slot["retained_bytes"])

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
            self.record_slot(target, details["slot"])

    def record_drill(self, kind: str, target: str, details: dict) -> None:
        if kind != "drill" or "passed" not in details:
            return
        self.drill_passed.labels(target=target).set(1 if details["passed"] else 0)
        if details.get("rto_seconds") is not None:
            self.drill_rto.labels(target=target).set(float(details["rto_seconds"]))

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
    true when the last successful check is younger than ``ttl`` seconds.
    """

    def __init__(
        self,
        check: Callable[[], None],
        size: Callable[[], int],
        metrics: Metrics,
        *,
        interval: float = 30.0,
        size_interval: float = 600.0,
    ):
        self._check, self._size, self._metrics = check, size, metrics
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
            self._kick.wait(self.interval)
            self._kick.clear()


class HttpEndpoint:
    """``/healthz``, ``/readyz``, ``/metrics`` on ``host:port`` in a daemon thread."""

    def __init__(self, listen: str, metrics: Metrics, readiness: Callable[[], str | None]):
        host, port = parse_listen(listen)
        handler = _handler(metrics, readiness)
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


def _handler(metrics: Metrics, readiness: Callable[[], str | None]):
    class Handler(BaseHTTPRequestHandler):
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
            else:
                self._send(404, b"not found\n", "text/plain; charset=utf-8")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - probes are not news
            pass

    return Handler
