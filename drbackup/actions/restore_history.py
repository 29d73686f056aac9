"""Restore to a second: which snapshots hold a versioned bucket's state at a time.

The state at ``T`` is the index of the newest snapshot whose recovery point is at or
before ``T`` (the base), with the history lines of the snapshots after it merged in, up
to the first one whose history listing started at or after ``T`` (docs/buckets.md,
"Restore to a second").  Works from manifests alone.  A time given to the whole second
covers that second, as everywhere else in drbackup.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from drbackup.actions.snapshot_versions import EVENTS_KIND
from drbackup.repository.manifest import Manifest
from drbackup.sources.buckets.index import IndexEntry, open_index, snapshot_buckets
from drbackup.sources.buckets.versions import (
    history_item_name,
    history_meta,
    iso_text,
    open_history,
    state_at,
)


@dataclass
class HistoryPlan:
    """The snapshots that rebuild ``bucket`` at ``at``, and what they guarantee."""

    bucket: str
    at: datetime
    base: Manifest | None  # None: before the first snapshot, from its history alone
    chain: list[Manifest] = field(default_factory=list)  # oldest first
    covered_until: str = ""  # the newest history listing merged in
    gaps: list[str] = field(default_factory=list)  # why the guarantee does not hold
    events: list[Manifest] = field(default_factory=list)  # event captures merged in too

    @property
    def manifest(self) -> Manifest:
        """The newest snapshot used (the one a restore names)."""
        return self.chain[-1] if self.chain else self.base

    @property
    def at_text(self) -> str:
        """``at`` as history lines write times; a whole second covers that second."""
        whole = self.at.microsecond == 0
        return iso_text(self.at + timedelta(milliseconds=999) if whole else self.at)

    def note(self) -> str:
        """How the state was chosen, for the user (one line)."""
        used = [m.backup_id for m in ([self.base] if self.base else []) + self.chain]
        text = f"bucket {self.bucket} at {iso_text(self.at)} from the version history of "
        text += f"snapshot{'s' if len(used) > 1 else ''} {', '.join(used)}"
        if self.covered_until < self.at_text:
            text += (
                f"; history captured up to {self.covered_until} only: changes after that "
                "are not in the repository"
            )
        if self.events:
            text += f", and {len(self.events)} event capture(s)"
        return text + "".join(f"; {gap}" for gap in self.gaps)

    def to_dict(self) -> dict:
        return {
            "bucket": self.bucket,
            "at": iso_text(self.at),
            "base": self.base.backup_id if self.base else None,
            "chain": [m.backup_id for m in self.chain],
            "covered_until": self.covered_until,
            "gaps": self.gaps,
            "event_captures": [m.backup_id for m in self.events],
        }


def plan_history(repo, target: str, bucket: str | None, at: datetime) -> HistoryPlan | None:
    """The plan to rebuild ``bucket`` (the only one if None) of ``target`` at ``at``, or
    None when no snapshot captured its version history around ``at`` (then a restore
    falls back to the newest snapshot at or before ``at``, state at snapshot times only).
    """
    later: list[Manifest] = []  # snapshots after the base, newest first
    events: list[Manifest] = []  # event captures after the base, newest first
    base = None
    for ref in reversed(repo.list_refs(target)):
        m = repo.load_manifest(ref)
        if m.kind == EVENTS_KIND:
            events.append(m)
        if m.kind != "bucket":
            continue
        if m.recovery_time is not None and m.recovery_time <= at:
            base = m
            break
        later.append(m)
    newest = later[0] if later else base
    if newest is None:
        return None
    name = bucket or _only_bucket(newest)
    if name is None or name not in snapshot_buckets(newest):
        return None
    plan = HistoryPlan(name, at, base)
    plan.events = [m for m in reversed(events) if history_item_name(name) in _items(m)]
    return plan if _extend(plan, list(reversed(later))) else None


def _items(manifest: Manifest) -> set[str]:
    return {i.name for i in manifest.items}


def _only_bucket(manifest: Manifest) -> str | None:
    buckets = snapshot_buckets(manifest)
    return buckets[0] if len(buckets) == 1 else None


def _extend(plan: HistoryPlan, after: list[Manifest]) -> bool:
    """Add the snapshots after the base until one covers ``at``; False if none has history."""
    previous = plan.base
    base_history = history_meta(plan.base, plan.bucket)
    plan.covered_until = base_history["until"] if base_history else ""
    for m in after:
        history = history_meta(m, plan.bucket)
        if history is None:
            break  # versioning was off (or drbackup older) then: the chain stops here
        if previous is not None and history.get("chained_from") != previous.backup_id:
            plan.gaps.append(f"snapshot {m.backup_id} does not continue the history before it")
        plan.chain.append(m)
        plan.covered_until = history["until"]
        previous = m
        if history["until"] >= plan.at_text:
            break
    return bool(plan.chain) or base_history is not None


@contextmanager
def open_state(repo, plan: HistoryPlan) -> Iterator[Iterator[IndexEntry]]:
    """The bucket's objects at ``plan.at``, in key order (every stream authenticated)."""
    with ExitStack() as stack:
        base = stack.enter_context(open_index(repo.open_item, plan.base, plan.bucket))
        histories = [
            stack.enter_context(open_history(repo.open_item, m, plan.bucket))
            for m in plan.chain + plan.events
        ]
        yield state_at(base, histories, plan.at_text)
