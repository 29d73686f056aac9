"""WAL streaming in the daemon: one :class:`WalStreamer` per streaming target, on one replica.

Which targets: every postgres target whose WAL is streamed (``wal.capture``, by default
those whose ``backup_kinds`` include physical).

Never two for one target.  On a PostgreSQL catalog a replica streams a target only while it
holds the session advisory lock ``lock_key("wal-stream", <target>)`` on a catalog connection
of its own (``catalog.jobs.StreamClaim``); the other replicas try again every ``CLAIM_RETRY``
seconds and take over once the holder's session ends (its daemon stopped,
died, or lost the catalog).  The holder checks that connection every ``CLAIM_CHECK``
seconds and stops streaming when it is gone, before another replica can start.  On SQLite
(one daemon per catalog, ``CatalogLock``) the claim is this process's.  Beneath that, each
streamer holds its spool's lock, and the server admits one client per replication slot.

Shutdown: :meth:`WalStreams.stop` stops every pg_receivewal (SIGINT), uploads what it wrote
and releases the claims.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from drbackup.catalog.jobs import StreamClaim
from drbackup.errors import DrbackupError

CLAIM_RETRY = 5.0
CLAIM_CHECK = 5.0
FAILED_RETRY = 30.0


def streaming_targets(config) -> list[str]:
    """The postgres targets whose WAL the daemon streams."""
    return [name for name, cfg in config.postgres.items() if cfg.streams_wal]


class WalStreams:
    """The daemon's streamers: a thread per streaming target that claims it and streams."""

    def __init__(self, app, metrics, emit: Callable[..., None], *, streamer_factory=None):
        self.app, self.metrics, self.emit = app, metrics, emit
        self.targets = streaming_targets(app.config)
        self.streamers: dict[str, object] = {}
        self._factory = streamer_factory or _default_factory
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> WalStreams:
        """Start a thread per streaming target (claim, then stream); returns self."""
        for target in self.targets:
            self.metrics.record_stream_idle(target)
            thread = threading.Thread(
                target=self._serve, args=(target,), name=f"wal-stream:{target}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop every streamer (pg_receivewal stopped, its output uploaded)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _serve(self, target: str) -> None:
        waiting = False
        while not self._stop.is_set():
            claim = StreamClaim(self.app.catalog, target)
            try:
                held = claim.acquire()
            except Exception as exc:  # noqa: BLE001 - the catalog is down: try again later
                self.emit("wal_stream_claim_failed", logging.ERROR, target=target, error=str(exc))
                self._stop.wait(CLAIM_RETRY)
                continue
            if not held:
                if not waiting:  # said once per stretch of waiting
                    self.emit(
                        "wal_stream_claim_waiting",
                        target=target,
                        reason="another replica streams this target; taking over when it stops",
                    )
                waiting = True
                self._stop.wait(CLAIM_RETRY)
                continue
            waiting = False
            try:
                self._stream(target, claim)
            finally:
                claim.release()
                self.metrics.record_stream_idle(target)

    def _stream(self, target: str, claim: StreamClaim) -> None:
        done = threading.Event()
        watcher = threading.Thread(
            target=self._watch, args=(claim, done), name=f"wal-claim:{target}", daemon=True
        )
        watcher.start()
        try:
            streamer = self._factory(self.app, target, self.emit, self.metrics.record_stream)
            self.streamers[target] = streamer
            streamer.run(done)
        except DrbackupError as exc:
            self.emit("wal_stream_failed", logging.ERROR, target=target, error=exc.message)
            self._stop.wait(FAILED_RETRY)
        except Exception as exc:  # noqa: BLE001 - a bug must not end streaming for good
            self.emit("wal_stream_failed", logging.ERROR, target=target, error=repr(exc))
            self._stop.wait(FAILED_RETRY)
        finally:
            self.streamers.pop(target, None)
            done.set()
            watcher.join()

    def _watch(self, claim: StreamClaim, done: threading.Event) -> None:
        """Set ``done`` when the daemon stops or the claim's session is gone."""
        next_check = time.monotonic() + CLAIM_CHECK
        while not done.wait(0.5):
            if self._stop.is_set():
                done.set()
            elif time.monotonic() >= next_check:
                next_check = time.monotonic() + CLAIM_CHECK
                if not claim.alive():
                    self.emit("wal_stream_claim_lost", logging.ERROR, target=claim.target)
                    done.set()


def _default_factory(app, target: str, emit, on_status):
    from drbackup.actions.wal_stream import WalStreamer

    return WalStreamer(app, target, on_event=emit, on_status=on_status)
