"""Resolving a physical drill's ``point`` (drill/points.py) against the repository.

``fingerprint`` looks for the newest logical backup of the target whose snapshot came from
a temporary logical slot (its database item records ``snapshot_lsn`` and the source's
``system_identifier``) at an LSN inside the restorable window of the same cluster: after
the end of the oldest base backup and before the end of the archived WAL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from drbackup.actions.pitr import physical_backups
from drbackup.drill.physical_checks import physical_expectation
from drbackup.drill.points import PointChoice, random_second
from drbackup.errors import IntegrityError, UsageError
from drbackup.repository.manifest import Manifest
from drbackup.sources.postgres.recovery import LATEST, LSN, RecoveryTarget
from drbackup.sources.postgres.wal import format_lsn, parse_lsn

if TYPE_CHECKING:
    from drbackup.actions.wal_check import WalStatus
    from drbackup.repository.repo import Repository

LOGICAL_KIND = "postgres"


@dataclass
class FingerprintPoint:
    """A logical backup's database taken at an exact LSN, and its fingerprint."""

    manifest: Manifest
    database: str
    lsn: int
    fingerprint: dict  # what the restore must hold (unlogged tables empty)
    unlogged: list[str]  # unlogged tables: compared empty (their rows are not in the WAL)

    def evidence(self) -> dict:
        return {
            "backup_id": self.manifest.backup_id,
            "database": self.database,
            "lsn": format_lsn(self.lsn),
            "recovery_target_inclusive": False,
            "unlogged_tables_compared_empty": self.unlogged,
        }


def resolve_point(
    repo: Repository, target: str, choice: PointChoice | None, status: WalStatus
) -> tuple[RecoveryTarget, str, FingerprintPoint | None]:
    """``(recovery target, how it was chosen, fingerprint point or None)``.

    Raises UsageError when the point cannot be had (no window for ``random``, no logical
    backup with an LSN for ``fingerprint``).
    """
    mode = choice.mode if choice is not None else None
    if mode in (None, "fingerprint"):
        found = fingerprint_point(repo, target, status)
        if found is not None:
            point = RecoveryTarget(LSN, lsn=found.lsn, inclusive=False)
            how = (
                f"LSN {format_lsn(found.lsn)}, the consistent point of logical backup "
                f"{found.manifest.backup_id} (database {found.database})"
            )
            return point, how, found
        if mode == "fingerprint":
            raise UsageError(
                f"no logical backup of {target} with a slot LSN inside the restorable window",
                hint="logical backups record their LSN when the source runs with "
                "wal_level = logical and the role may replicate (docs/drills.md)",
            )
        return RecoveryTarget(LATEST), "the end of the archived WAL (latest)", None
    if mode == "latest":
        return RecoveryTarget(LATEST), "the end of the archived WAL (latest)", None
    if mode == "random":
        if status.oldest is None or status.newest is None:
            raise UsageError(
                f"target {target} has no restorable window to draw a second from",
                hint="'drbackup wal check' shows the window; a base backup and archived WAL are needed",
            )
        second = random_second(status.oldest, status.newest)
        window = f"{status.oldest.isoformat()} .. {status.newest.isoformat()}"
        return (
            RecoveryTarget.at_time(second),
            f"random second {second.isoformat()} of {window}",
            None,
        )
    if mode == "time":
        return RecoveryTarget.at_time(choice.time), f"time {choice.time.isoformat()}", None
    return RecoveryTarget(LSN, lsn=choice.lsn), f"LSN {format_lsn(choice.lsn)}", None


def fingerprint_point(repo: Repository, target: str, status: WalStatus) -> FingerprintPoint | None:
    """The newest logical backup database with a slot LSN inside the window, or None."""
    if status.cluster is None or not status.archived_end:
        return None
    backups = [m for m in physical_backups(repo, target) if m.meta.get("cluster") == status.cluster]
    if not backups:
        return None
    system_id = str(backups[0].meta.get("system_identifier"))
    start = min(parse_lsn(m.meta["stop_lsn"]) for m in backups)
    for ref in reversed(repo.list_refs(target)):
        try:
            manifest = repo.load_manifest(ref)
        except IntegrityError:
            continue
        if manifest.kind != LOGICAL_KIND:
            continue
        for item in manifest.items:
            found = _item_point(manifest, item, system_id, start, status.archived_end)
            if found is not None:
                return found
    return None


def _item_point(manifest, item, system_id: str, start: int, end: int) -> FingerprintPoint | None:
    meta = item.meta
    if item.type != "pg_dump" or not meta.get("snapshot_lsn") or not meta.get("fingerprint"):
        return None
    if str(meta.get("system_identifier")) != system_id:
        return None
    lsn = parse_lsn(meta["snapshot_lsn"])
    if not start <= lsn < end:
        return None
    expected, unlogged = physical_expectation(meta["fingerprint"])
    return FingerprintPoint(manifest, item.name, lsn, expected, unlogged)
