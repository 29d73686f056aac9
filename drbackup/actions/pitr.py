"""Choosing what a point-in-time restore replays: the base backup, and the timelines.

From the repository alone (manifests, the WAL archive's history files and marks), never
from the catalog.  The base backup chosen is the newest that ends before the target on the
target's timeline: its WAL, from its start on, leads to the target.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from drbackup.errors import IntegrityError, UsageError
from drbackup.repository.manifest import Manifest
from drbackup.repository.wal import WalArchive
from drbackup.sources.postgres.recovery import LATEST, LSN, NAME, TIME, XID, RecoveryTarget
from drbackup.sources.postgres.wal import HistoryEntry, parse_history, parse_lsn
from drbackup.times import parse_iso_time

PHYSICAL_KIND = "postgres-physical"


@dataclass
class Timelines:
    """The timeline history of one cluster, from its archived history files."""

    histories: dict[int, list[HistoryEntry]]

    @property
    def latest(self) -> int:
        return max(self.histories, default=1)

    def path(self, timeline: int) -> list[tuple[int, int | None]]:
        """``[(timeline, ends_at)]`` from timeline 1 to ``timeline``."""
        entries = self.histories.get(timeline, [])
        return [*((e.parent, e.switch_lsn) for e in entries), (timeline, None)]

    def resolve(self, wanted: str) -> int:
        """``latest``, or a timeline number (decimal, as PostgreSQL takes it)."""
        if wanted == "latest":
            return self.latest
        try:
            return int(wanted)
        except ValueError:
            raise UsageError(f"invalid timeline {wanted!r} (a number or 'latest')") from None


def read_timelines(archive: WalArchive, cluster: str) -> Timelines:
    """Every history file of ``cluster`` in the archive, parsed.  IntegrityError if damaged."""
    histories: dict[int, list[HistoryEntry]] = {}
    for stored in archive.list_files(cluster):
        if not stored.is_history:
            break  # history files are listed first
        data = bytearray()
        archive.read(stored, data.extend)
        timeline = int(stored.name[:8], 16)
        histories[timeline] = parse_history(data.decode("utf-8", "replace"), stored.key)
    return Timelines(histories)


def on_path(path: list[tuple[int, int | None]], timeline: int, lsn: int) -> bool:
    """True if position ``lsn`` of ``timeline`` lies on ``path`` (before that timeline ends)."""
    return any(t == timeline and (end is None or lsn <= end) for t, end in path)


@dataclass
class BaseBackupChoice:
    manifest: Manifest
    cluster: str
    timeline: int  # the timeline recovery targets
    path: list[tuple[int, int | None]]
    note: str  # how it was chosen, said to the user


def physical_backups(repo, target: str) -> list[Manifest]:
    """The target's base backups, oldest first; a damaged manifest is skipped."""
    found = []
    for ref in repo.list_refs(target):
        try:
            manifest = repo.load_manifest(ref)
        except IntegrityError:
            continue
        if manifest.kind == PHYSICAL_KIND:
            found.append(manifest)
    return found


def choose_base_backup(
    repo, target: str, point: RecoveryTarget, *, backup_id: str | None = None
) -> BaseBackupChoice:
    """The base backup to restore for ``point`` (or the one named by ``backup_id``).

    Raises UsageError when no base backup can reach the point, naming the oldest one and,
    if a logical backup covers the time, that one.
    """
    backups = physical_backups(repo, target)
    if backup_id:
        chosen = repo.load_manifest(repo.resolve(backup_id, target))
        if chosen.kind != PHYSICAL_KIND:
            raise UsageError(
                f"backup {chosen.backup_id} is a {chosen.kind} backup, not a base backup"
            )
        backups = [chosen]
    if not backups:
        raise UsageError(
            f"no base backup of target {target} in {repo.url}",
            hint=f"take one with 'drbackup backup postgres {target} --physical'; "
            "logical backups restore with --into DSN",
        )
    archive = WalArchive(repo, target)
    timelines: dict[str, Timelines] = {}
    candidates = []
    for manifest in backups:
        cluster = manifest.meta["cluster"]
        if cluster not in timelines:
            timelines[cluster] = read_timelines(archive, cluster)
        lines = timelines[cluster]
        timeline = lines.resolve(point.timeline)
        path = lines.path(timeline)
        if _reaches(manifest, point, path, archive):
            candidates.append(BaseBackupChoice(manifest, cluster, timeline, path, ""))
    if not candidates:
        raise _none_reaches(repo, target, point, backups)
    choice = (
        candidates[0]
        if point.kind == NAME and not _mark_lsn(archive, candidates[0].cluster, point.name)
        else candidates[-1]
    )
    stop = choice.manifest.meta["stop_time"]
    choice.note = (
        f"base backup {choice.manifest.backup_id} (cluster {choice.cluster}, consistent from "
        f"{stop} at {choice.manifest.meta['stop_lsn']}, timeline {choice.manifest.meta['timeline']})"
        f", the newest that ends before {point.describe()} on timeline {choice.timeline}"
    )
    return choice


def _reaches(manifest: Manifest, point: RecoveryTarget, path, archive: WalArchive) -> bool:
    meta = manifest.meta
    stop_lsn = parse_lsn(meta["stop_lsn"])
    if not on_path(path, meta["timeline"], stop_lsn):
        return False
    if point.kind == TIME:
        return parse_iso_time(meta["stop_time"]) <= point.time
    if point.kind == LSN:
        return stop_lsn <= point.lsn
    if point.kind == XID:
        return meta.get("next_xid") is None or int(meta["next_xid"]) <= point.xid
    if point.kind == NAME:
        lsn = _mark_lsn(archive, meta["cluster"], point.name)
        return lsn is None or stop_lsn <= lsn
    return point.kind == LATEST


def _mark_lsn(archive: WalArchive, cluster: str, name: str) -> int | None:
    for mark in reversed(archive.marks(cluster)):
        if mark.get("name") == name:
            return parse_lsn(mark["lsn"])
    return None


def _none_reaches(repo, target: str, point: RecoveryTarget, backups: list[Manifest]) -> UsageError:
    oldest = backups[0].meta
    hint = (
        f"the oldest base backup is consistent from {oldest['stop_time']} "
        f"({oldest['stop_lsn']}, timeline {oldest['timeline']})"
    )
    if point.kind == TIME:
        from drbackup.actions.selection import select_backup

        try:
            logical = select_backup(repo, target, point_in_time=point.time)
        except UsageError:
            logical = None
        if logical is not None and logical.manifest.kind == "postgres":
            hint += (
                f"; the logical backup {logical.manifest.backup_id} (recovery point "
                f"{logical.manifest.recovery_point}) covers it: restore it with --into DSN"
            )
    return UsageError(
        f"no base backup of target {target} ends before {point.describe()}", hint=hint
    )


def exact_restore_note(repo, target: str, when: datetime) -> str | None:
    """When base backups and WAL reach ``when`` exactly: a sentence saying so (for a
    logical restore, which can only go back to a dump's recovery point), else None."""
    try:
        choice = choose_base_backup(repo, target, RecoveryTarget.at_time(when))
    except (UsageError, IntegrityError):
        return None
    return (
        f"base backup {choice.manifest.backup_id} and the WAL archive reach "
        f"{when.isoformat()} exactly: restore postgres {target} --into-dir DIR "
        "--point-in-time ... restores the whole server to that second"
    )
