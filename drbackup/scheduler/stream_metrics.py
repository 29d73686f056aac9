"""The WAL streaming series of the daemon's :class:`~drbackup.scheduler.http.Metrics`:
each streamer's state (``actions.wal_stream.StreamStatus``) and its replication slot's.

A mixin of ``Metrics`` (the same registry, the same ``record_*`` verbs); docs/daemon.md
lists the series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class StreamSeries:
    """``drbackup_wal_stream_*`` and ``drbackup_wal_slot_*``."""

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

    def record_slot(self, target: str, slot: dict, max_retained: int | None = None) -> None:
        """A replication slot's state (sources.postgres.slots.SlotState.to_dict), and the
        target's ``wal.slot_max_retained`` when given (a wal-check run's details carry it)."""
        if not slot.get("exists"):
            return
        labels = {"target": target, "slot": slot["name"]}
        if max_retained is not None:
            self.slot_max_retained.labels(**labels).set(max_retained)
        self.slot_active.labels(**labels).set(1 if slot.get("active") else 0)
        if slot.get("retained_bytes") is not None:
            self.slot_retained.labels(**labels).set(slot["retained_bytes"])
