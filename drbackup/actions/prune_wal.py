"""Pruning the WAL archive: keep every WAL file from the start of the oldest base backup left.

Run by ``prune`` after it removed the base backups the policy expires.  Per cluster, the
cutoff is the segment holding the start of the oldest base backup that still exists (kept,
or expired but not removable: locked); every segment, partial segment and backup history
file before it goes, on every timeline (a position in the log is one position whatever the
timeline).  Timeline history files stay: they are tiny and every restore crossing a
timeline needs them.  A cluster that is no longer the target's and has no base backup left
loses its WAL; the current cluster without any base backup keeps all of it (nothing says
where a restore would start).  A manifest prune cannot read makes it keep all WAL.

Safe next to a running ``wal-push``: pushes add files after the cutoff, prune removes only
files before it.  Crash-safe: files go oldest first, so an interrupted prune leaves a
shorter prefix to remove, never a hole in what a kept base backup needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from drbackup.repository.wal import StoredWal, WalArchive
from drbackup.sources.postgres.wal import parse_lsn, parse_wal_file_name, segment_name, segno_of


@dataclass
class WalPrune:
    """What WAL pruning decided and did for one target."""

    cutoffs: dict[str, str] = field(default_factory=dict)  # cluster -> first file kept
    removed: int = 0
    removed_bytes: int = 0
    kept: int = 0
    locked: int = 0
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "cutoffs": self.cutoffs,
            "removed": self.removed,
            "removed_bytes": self.removed_bytes,
            "kept": self.kept,
            "locked": self.locked,
            "notes": self.notes,
        }


def prune_wal(
    repo,
    target: str,
    remaining: list[dict],
    *,
    dry_run: bool,
    locked_until: Callable[[str], object],
) -> WalPrune | None:
    """Prune ``target``'s WAL given the base backups that remain (their manifests' meta).

    ``locked_until(key)``: the Object Lock retention of a key (None if not locked).
    Returns None when the target archives no WAL.
    """
    archive = WalArchive(repo, target)
    clusters = archive.clusters()
    if not clusters:
        return None
    result = WalPrune(dry_run=dry_run)
    for cluster in clusters:
        metas = [m for m in remaining if m.get("cluster") == cluster]
        cutoff = _cutoff(cluster, metas, clusters[-1], result)
        if cutoff is not None:
            _remove_before(archive, cluster, cutoff, result, dry_run, locked_until)
    return result


def _cutoff(cluster: str, metas: list[dict], current: str, result: WalPrune):
    """``(segno, segment size)`` of the first segment to keep; None to keep everything."""
    if not metas:
        if cluster == current:
            result.notes.append(f"cluster {cluster}: no base backup, every WAL file kept")
            return None
        result.cutoffs[cluster] = "(none: no base backup left)"
        return (1 << 64, 16 << 20)
    size = metas[0]["wal_segment_size"]
    start = min(parse_lsn(m["start_lsn"]) for m in metas)
    oldest = min(metas, key=lambda m: parse_lsn(m["start_lsn"]))
    result.cutoffs[cluster] = segment_name(oldest["timeline"], segno_of(start, size), size)
    return (segno_of(start, size), size)


def _remove_before(archive, cluster: str, cutoff, result: WalPrune, dry_run: bool, locked_until):
    limit, size = cutoff
    doomed: list[StoredWal] = []
    for stored in archive.list_files(cluster):
        if stored.is_history:
            continue
        if parse_wal_file_name(stored.name).segno(size) < limit:
            doomed.append(stored)
        else:
            result.kept += 1
    doomed.sort(key=lambda s: (parse_wal_file_name(s.name).segno(size), s.name))
    for stored in doomed:  # oldest first: an interruption leaves a prefix, never a hole
        if locked_until(stored.key) is not None:
            result.locked += 1
            continue
        if not dry_run:
            archive.delete(stored)
        result.removed += 1
        result.removed_bytes += stored.size
