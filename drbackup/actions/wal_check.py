"""``wal check TARGET``: the WAL archive's continuity, the restorable window, the archive lag.

From the repository alone: every segment of the target's current cluster, per timeline;
gaps (a segment missing between two archived ones, after the oldest base backup's start)
and timeline breaks (a timeline without its history file, or branching off its parent
where the parent's WAL is not archived); the restorable window, from the end of the oldest
base backup whose WAL is complete to the newest second a restore can reach (the newest
archived commit, read from the newest segment, minus the second it falls in: recovery to a
time stops only at a later record).  With the server reachable: the archive lag, from the
server's current WAL position and the newest archived byte.

The archive lag is the age of the oldest WAL byte the server wrote and the archive lacks:
0 when the server's current position is the end of the archive, else the time since the
newest archived file was archived (the segment being filled then is what is at risk).
``report``, ``/metrics`` (the ``wal-check`` job) and the catalog (a ``wal-check`` run with
these facts as details) show the same facts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from drbackup.actions.pitr import physical_backups, read_timelines
from drbackup.actions.runs import recorded_run
from drbackup.errors import DrbackupError
from drbackup.repository.wal import StoredWal, WalArchive
from drbackup.sources.postgres.slots import SlotState
from drbackup.sources.postgres.wal import (
    format_lsn,
    parse_lsn,
    parse_wal_file_name,
    read_segment_header,
    segment_name,
    segno_of,
    segno_of_end,
)
from drbackup.sources.postgres.walrecords import scan_segment_end
from drbackup.times import parse_iso_time

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext

DEFAULT_SEGMENT = 16 << 20
SCAN_BACK = 8  # segments read back from the newest to find its last commit


@dataclass
class WalStatus:
    """What ``wal check`` found for one target."""

    target: str
    cluster: str | None
    segment_size: int = DEFAULT_SEGMENT
    timelines: dict[int, tuple[str, str, int]] = field(default_factory=dict)  # first, last, count
    gaps: list[str] = field(default_factory=list)  # one sentence per missing segment
    missing: list[str] = field(default_factory=list)  # their names
    breaks: list[str] = field(default_factory=list)
    base_backups: int = 0
    restorable: bool = False  # a base backup whose WAL is complete: restores to the end work
    oldest: datetime | None = None  # first restorable second
    newest: datetime | None = None  # last restorable second
    newest_commit: datetime | None = None
    newest_segment: str | None = None
    archived_end: int | None = None  # LSN just past the newest archived byte
    newest_archived_at: datetime | None = None
    lag_seconds: float | None = None  # None: the server was not asked
    lag_bytes: int | None = None
    lag_error: str | None = None
    slot: SlotState | None = None  # the streaming slot (None: not asked, or not streaming)
    slot_max_retained: int | None = None

    @property
    def problems(self) -> list[str]:
        return [*self.gaps, *self.breaks]

    def to_dict(self) -> dict:
        def iso(value):
            return value.isoformat() if value else None

        return {
            "target": self.target,
            "cluster": self.cluster,
            "timelines": {
                str(k): {"first": v[0], "last": v[1], "segments": v[2]}
                for k, v in self.timelines.items()
            },
            "gaps": self.gaps,
            "missing": self.missing,
            "breaks": self.breaks,
            "base_backups": self.base_backups,
            "restorable": self.restorable,
            "window": {"oldest": iso(self.oldest), "newest": iso(self.newest)},
            "newest_commit": iso(self.newest_commit),
            "newest_segment": self.newest_segment,
            "archived_end_lsn": format_lsn(self.archived_end) if self.archived_end else None,
            "lag_seconds": self.lag_seconds,
            "lag_bytes": self.lag_bytes,
            "lag_error": self.lag_error,
            "slot": self.slot.to_dict() if self.slot else None,
            "slot_max_retained": self.slot_max_retained,
        }


def analyze_archive(repo, target: str) -> WalStatus:
    """The archive's continuity and window, from the repository alone."""
    archive = WalArchive(repo, target)
    regs = archive.registrations()
    status = WalStatus(target, regs[-1].cluster if regs else None)
    if status.cluster is None:
        return status
    with contextlib.suppress(DrbackupError, KeyError):
        status.segment_size = archive.identity(regs[-1])["wal_segment_size"]
    files = list(archive.list_files(status.cluster))
    segments = _segments_by_timeline(files, status.segment_size)
    backups = [m for m in physical_backups(repo, target) if m.meta.get("cluster") == status.cluster]
    status.base_backups = len(backups)
    start = min((parse_lsn(m.meta["start_lsn"]) for m in backups), default=None)
    _continuity(status, segments, start, read_timelines(archive, status.cluster))
    _window(status, archive, segments, backups)
    return status


def _segments_by_timeline(files: list[StoredWal], size: int) -> dict[int, dict[int, StoredWal]]:
    found: dict[int, dict[int, StoredWal]] = {}
    for stored in files:
        if stored.is_segment or stored.is_partial:
            name = parse_wal_file_name(stored.name)
            by_segno = found.setdefault(name.timeline, {})
            held = by_segno.get(name.segno(size))
            if held is None or stored.is_segment or (held.is_partial and stored.upto > held.upto):
                by_segno[name.segno(size)] = stored
    return found


def _continuity(status: WalStatus, segments, start: int | None, timelines) -> None:
    size = status.segment_size
    first_needed = segno_of(start, size) if start is not None else None
    for timeline, by_segno in sorted(segments.items()):
        numbers = sorted(by_segno)
        status.timelines[timeline] = (
            segment_name(timeline, numbers[0], size),
            segment_name(timeline, numbers[-1], size),
            len(numbers),
        )
        present = set(numbers)
        low = numbers[0] if first_needed is None else max(numbers[0], first_needed)
        for segno in range(low, numbers[-1]):
            if segno not in present:
                status.missing.append(segment_name(timeline, segno, size))
                status.gaps.append(
                    f"WAL segment {segment_name(timeline, segno, size)} is missing (restores past "
                    f"{format_lsn(segno * size)} on timeline {timeline} fail)"
                )
        if timeline > 1:
            _check_branch(status, timeline, numbers, segments, timelines)


def _check_branch(status: WalStatus, timeline: int, numbers, segments, timelines) -> None:
    size = status.segment_size
    history = timelines.histories.get(timeline)
    if not history:
        status.breaks.append(
            f"timeline {timeline} has WAL but its history file {timeline:08X}.history is not archived"
        )
        return
    parent, switch = history[-1].parent, history[-1].switch_lsn
    if numbers[0] > segno_of(switch, size):
        status.breaks.append(
            f"timeline {timeline} branches off timeline {parent} at {format_lsn(switch)}, but its "
            f"first archived segment is {segment_name(timeline, numbers[0], size)}"
        )
    parent_segments = segments.get(parent, {})
    needed = segno_of_end(switch, size) - 1  # the switch segment itself is in the new timeline
    if parent_segments and max(parent_segments) < needed:
        status.breaks.append(
            f"timeline {timeline} branches off timeline {parent} at {format_lsn(switch)}, but "
            f"timeline {parent}'s WAL ends at {segment_name(parent, max(parent_segments), size)}"
        )


def _window(status: WalStatus, archive: WalArchive, segments, backups) -> None:
    if not segments:
        return
    timeline = max(segments)
    by_segno = segments[timeline]
    newest = max(by_segno)
    stored = by_segno[newest]
    status.newest_segment = stored.name
    status.newest_archived_at = datetime.fromtimestamp(stored.mtime, UTC) if stored.mtime else None
    end = newest + 1 if stored.is_segment else newest
    status.archived_end = end * status.segment_size + (0 if stored.is_segment else stored.upto or 0)
    status.newest_commit = _newest_commit(archive, by_segno, newest, status.segment_size)
    # the window is the stretch that reaches the newest archived commit: it starts at the
    # end of the oldest base backup with no gap after its start
    complete = [m for m in backups if not _backup_gap(status, m)]
    status.restorable = bool(complete)
    if complete and status.newest_commit is not None:
        status.oldest = parse_iso_time(complete[0].meta["stop_time"]).replace(microsecond=0)
        status.newest = status.newest_commit.replace(microsecond=0) - timedelta(seconds=1)
        if status.newest < status.oldest:  # no commit since: only "latest" is a target
            status.oldest = status.newest = None


def _backup_gap(status: WalStatus, manifest) -> bool:
    """True if a gap lies between the backup's start and the newest archived segment."""
    start = segno_of(parse_lsn(manifest.meta["start_lsn"]), status.segment_size)
    for name in status.missing:
        if parse_wal_file_name(name).segno(status.segment_size) >= start:
            return True
    return False


def _newest_commit(archive: WalArchive, by_segno: dict[int, StoredWal], newest: int, size: int):
    """The time of the newest commit, abort or restore point in the newest segments."""
    for segno in range(newest, max(newest - SCAN_BACK, min(by_segno) - 1), -1):
        stored = by_segno.get(segno)
        if stored is None:
            return None
        data = bytearray()
        archive.read(stored, data.extend)
        header = read_segment_header(bytes(data[:65536]), stored.key)
        end = scan_segment_end(bytes(data), header.block_size, segno * size)
        if end.last_time is not None:
            return end.last_time
    return None


# --- the server's side: archive lag ---------------------------------------------------------


def measure_lag(
    app: AppContext, target: str, status: WalStatus, now: datetime | None = None
) -> None:
    """Fill in the archive lag from the target's server (its errors go to ``lag_error``)."""
    from drbackup.actions.backup_postgres import PgTarget
    from drbackup.sources.postgres.connection import connect
    from drbackup.sources.postgres.physical import archiver_state

    cfg = PgTarget.from_config(target, app.config.target(target))
    try:
        with connect(cfg.dsn, cfg.password) as conn:
            state = archiver_state(conn)
            _read_slot(app, target, conn, status)
    except DrbackupError as exc:  # e.g. a standby: its WAL position is not its own
        status.lag_error = exc.message
        return
    now = now or state.clock
    end = status.archived_end or 0
    status.lag_bytes = max(0, state.current_lsn - end)
    if status.lag_bytes == 0:
        status.lag_seconds = 0.0
        return
    # The oldest byte not archived was written when the newest archived segment ended:
    # about when it was archived (the server's clock), else when it reached storage.
    since = state.last_archived_time or status.newest_archived_at
    status.lag_seconds = max(0.0, (now - since).total_seconds()) if since else None


def _read_slot(app: AppContext, target: str, conn, status: WalStatus) -> None:
    """The streaming slot's state, for a target whose WAL is streamed or that has one."""
    from drbackup.sources.postgres.slots import default_slot_name, read_slot

    cfg = app.config.target(target)
    slot = read_slot(conn, cfg.wal.slot or default_slot_name(target))
    if slot.exists or cfg.streams_wal:
        status.slot, status.slot_max_retained = slot, cfg.wal.slot_max_retained


def check_wal(app: AppContext, target: str, *, server: bool = True) -> WalStatus:
    """``wal check``: analyse the archive, ask the server for the lag, record in the catalog."""
    with recorded_run(app.index, "wal-check", target) as run:
        status = analyze_archive(app.repository(), target)
        if server and status.cluster is not None:
            measure_lag(app, target, status)
        run.problem = "; ".join(status.problems)[:500] or None
        run.details = status.to_dict()
    return status
