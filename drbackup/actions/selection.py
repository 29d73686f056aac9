"""Choosing a backup of a target: by id, by point in time, or the latest.

Works from the repository alone (manifests), never from the catalog.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from drbackup.errors import UsageError
from drbackup.repository.manifest import Manifest
from drbackup.times import parse_iso_time


@dataclass
class Selection:
    manifest: Manifest
    note: str  # how it was chosen, said to the user


def parse_time(text: str) -> datetime:
    """ISO 8601 (``2026-11-23T02:00:00Z``, ``2026-11-23 02:00``); naive means UTC."""
    try:
        return parse_iso_time(text)
    except ValueError:
        raise UsageError(
            f"invalid time: {text!r}", hint="use ISO 8601, e.g. 2026-11-23T02:00:00Z"
        ) from None


def select_backup(
    repo,
    target: str,
    *,
    backup_id: str | None = None,
    point_in_time: datetime | None = None,
    kind: str | None = None,
) -> Selection:
    """The backup to restore: by id, newest with recovery point ≤ time, or the latest;
    only backups of ``kind`` (e.g. ``postgres``: dumps, not base backups) if given."""
    if backup_id and point_in_time:
        raise UsageError("give either --backup or --point-in-time, not both")
    if backup_id:
        m = repo.load_manifest(repo.resolve(backup_id, target))
        if m.target != target:
            raise UsageError(f"backup {backup_id} belongs to target {m.target}, not {target}")
        return Selection(m, f"backup {m.backup_id} (by id)")
    refs = repo.list_refs(target)
    if not refs:
        raise UsageError(
            f"no backups of target {target} in {repo.url}", hint=_other_targets(repo, target)
        )
    if point_in_time is None:
        for group in reversed(_seconds(refs)):
            loaded = _load_second(repo, group, kind)
            if loaded:
                m = max(loaded, key=_point)
                return Selection(
                    m, f"latest backup {m.backup_id}, recovery point {m.recovery_point}"
                )
        raise UsageError(f"no {kind} backups of target {target} in {repo.url}")
    return _select_at(repo, target, refs, point_in_time, kind)


def _other_targets(repo, target: str) -> str:
    targets = sorted({r.target for r in repo.list_refs()})
    if not targets:
        return "the repository holds no backups yet"
    close = difflib.get_close_matches(target, targets, n=1)
    if close:
        return f"did you mean {close[0]}? ('drbackup list' shows what exists)"
    return f"targets with backups: {', '.join(targets[:10])}"


def _seconds(refs) -> list[list]:
    """Refs grouped by the second their id names, oldest second first.

    Ids sort by start second, but within one second only by their random suffix: backups
    of a target never overlap (one at a time), so within a second the recovery point
    decides.
    """
    groups: list[list] = []
    for ref in refs:
        if groups and groups[-1][0].backup_id[:16] == ref.backup_id[:16]:
            groups[-1].append(ref)
        else:
            groups.append([ref])
    return groups


def _load_second(repo, refs, kind: str | None = None) -> list[Manifest]:
    loaded = [repo.load_manifest(r) for r in refs]
    return [m for m in loaded if kind is None or m.kind == kind]


def _point(m: Manifest) -> datetime:
    return m.recovery_time or m.finished_time


def _select_at(repo, target, refs, when: datetime, kind: str | None = None) -> Selection:
    # A backup id starts with its start time, and its recovery point is after the start:
    # only backups started before `when` can qualify; look at the newest ones first.
    stamp = when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    groups = _seconds([r for r in refs if r.backup_id[:16] <= stamp])
    for group in reversed(groups):
        candidates = [m for m in _load_second(repo, group, kind) if _at_or_before(_point(m), when)]
        if candidates:
            m = max(candidates, key=_point)
            gap = when - _point(m)
            where = "within" if gap < timedelta(0) else f"{_human_delta(gap)} before"
            return Selection(
                m,
                f"backup {m.backup_id}: recovery point {m.recovery_point}, "
                f"{where} the requested {when.isoformat()}",
            )
    oldest = next((g for g in (_load_second(repo, s, kind) for s in _seconds(refs)) if g), None)
    hint = None
    if oldest:
        first = min(oldest, key=_point)
        hint = f"the oldest restore point is {first.recovery_point} (backup {first.backup_id})"
    raise UsageError(
        f"no backup of {target} has a recovery point at or before {when.isoformat()}", hint=hint
    )


def _at_or_before(point: datetime, when: datetime) -> bool:
    """``point <= when``, where a time given to the whole second covers that second: ``list``
    shows recovery points to the second, and a time copied from it must select that backup."""
    return (point.replace(microsecond=0) if when.microsecond == 0 else point) <= when


def _human_delta(delta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600}h"
