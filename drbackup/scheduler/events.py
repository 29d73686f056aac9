"""The daemon's bucket event receiver: ``POST /events/<target>`` and the capture worker.

A minio target with ``events_token`` (or ``events_token_file``) accepts S3 event
notifications at ``/events/<target>`` carrying ``Authorization: Bearer <token>``; anything
else is 401 (no token, wrong token), 404 (no such target with events), 400 (not an S3
event message), 413 (over 1 MiB).  Accepted keys wait in memory and a worker thread
captures them at once (actions/capture_events.py), batching what arrives meanwhile; a
failed capture puts its keys back and is retried a second later.  Keys held in memory are
lost if the daemon dies: the next snapshot's reconciliation finds those changes and says so.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from drbackup.actions.capture_events import EventQueue, capture_keys
from drbackup.config.section import reveal
from drbackup.errors import DrbackupError, UsageError
from drbackup.scheduler.logs import emit
from drbackup.sources.buckets.events import parse_events

EVENTS_PATH = "/events/"
RETRY_S = 1.0


class EventService:
    """Authenticates and queues notifications; captures them in a thread of its own."""

    def __init__(self, app, metrics, *, capture: Callable = capture_keys):
        self.app, self.metrics, self.capture = app, metrics, capture
        self.tokens = {
            name: reveal(cfg.events_token)
            for name, cfg in app.config.minio.items()
            if cfg.events_token is not None
        }
        self.queue = EventQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="events", daemon=True)
        self._starting = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    @property
    def receiver(self) -> Callable | None:
        """What the HTTP endpoint calls for ``POST /events/…``; None without event capture."""
        return self.receive if self.enabled else None

    def start(self) -> None:
        """Start the capture worker (done by the first accepted notification)."""
        with self._starting:
            if not self._thread.is_alive() and not self._stopping.is_set():
                self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self.queue.add("", [], datetime.now(UTC))  # wake the worker
            self._thread.join(timeout=30)

    def receive(self, path: str, authorization: str | None, body: bytes) -> tuple[int, str]:
        """(HTTP status, one-line answer) for one POST to ``path``."""
        target = path[len(EVENTS_PATH) :]
        token = self.tokens.get(target)
        if token is None:
            return 404, f"no event capture for target '{target}'"
        expected = f"Bearer {token}".encode()
        if not hmac.compare_digest((authorization or "").encode(), expected):
            self.metrics.events.labels(target, "rejected").inc()
            return 401, "missing or wrong bearer token"
        try:
            events = parse_events(body)
        except UsageError as exc:
            self.metrics.events.labels(target, "invalid").inc()
            return 400, exc.message
        wanted = set(self.app.config.minio[target].buckets)
        kept = [e for e in events if e.bucket in wanted]
        self.queue.add(target, kept, datetime.now(UTC))
        self.start()
        self.metrics.events.labels(target, "accepted").inc(len(kept))
        return 202, f"accepted {len(kept)} of {len(events)} event record(s)"

    def _loop(self) -> None:
        while not self._stopping.is_set():
            for target, pending in self.queue.take(timeout=1.0).items():
                if target and pending.keys:
                    self._capture(target, pending)

    def _capture(self, target: str, pending) -> None:
        try:
            manifest = self.capture(self.app, target, pending)
        except DrbackupError as exc:
            self._failed(target, pending, exc.message)
            return
        except Exception as exc:  # noqa: BLE001 - the worker must outlive any one capture
            self._failed(target, pending, f"internal error: {type(exc).__name__}: {exc}")
            return
        lag = float(manifest.meta.get("lag_s", 0.0))
        self.metrics.capture_lag.labels(target).set(lag)
        emit("events_captured", target=target, backup_id=manifest.backup_id, keys=len(pending.keys))

    def _failed(self, target: str, pending, error: str) -> None:
        emit("events_capture_failed", target=target, keys=len(pending.keys), error=error)
        self.queue.put_back(target, pending)
        self._stopping.wait(RETRY_S)
