"""``prune``: apply each target's retention policy and remove leftovers of unfinished backups.

Per target, in this order:

1. List the manifests (the backups that exist) and decrypt them for their recovery points.
   A manifest that fails to decrypt or parse is kept and reported, never deleted.
2. Decide with :func:`drbackup.retention.policy.apply_policy`, protecting the backup behind
   the last passing drill and the newest backup not known to be damaged.
3. Delete each expired backup manifest first, data after (``Repository.delete_backup``): a
   crash in between leaves data without a manifest, which readers ignore and the next
   prune removes.  A backup whose manifest is under S3 Object Lock is skipped and reported.
4. Remove leftovers of interrupted backups (data without a manifest, local temporaries,
   leases) once nothing was written for the target's ``leftover_grace`` and the writer's
   lease, renewed while it runs, has expired: ``repository/leftovers.py``.

Then temporaries of killed local writes outside ``data/`` older than the grace go, and if
bucket snapshots were removed, blob collection (``actions.gc``) frees the blobs
no snapshot references any more.  A failing target does not stop the others: its error
is in the report (:meth:`PruneReport.raise_for_errors`).  ``dry_run`` decides and reports
without deleting anything.  See ``docs/retention.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from drbackup.actions.gc import collect_garbage
from drbackup.actions.prune_wal import WalPrune, prune_wal
from drbackup.actions.runs import CatalogIndex, recorded_run
from drbackup.config.retention import RetentionSettings, retention_settings
from drbackup.drill.checks import PASS, WARN
from drbackup.drill.record import DrillReport
from drbackup.errors import (
    DrbackupError,
    IntegrityError,
    LockedError,
    ObjectNotFoundError,
    StorageError,
    UsageError,
    shareable,
)
from drbackup.repository.leftovers import data_leftovers as find_leftovers  # noqa: F401
from drbackup.repository.leftovers import lease_expiry
from drbackup.repository.manifest import BackupRef
from drbackup.retention.policy import BackupInfo, RetentionPolicy, apply_policy_by_kind

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext
    from drbackup.catalog import Catalog

DRILL_REASON = "last passing drill {drill_id}"
GOOD_REASON = "newest backup not known to be damaged"
NO_POLICY_NOTE = "no retention policy: every backup is kept"
_POLICY_HINT = "set keep_last, keep_daily, ... under the target's 'retention:' (docs/retention.md)"


@dataclass
class Leftover:
    """Data of a backup that has no manifest (an interrupted backup or prune)."""

    backup_id: str
    objects: int
    size: int
    last_written: datetime
    action: str  # removed, would remove, kept (younger than grace | writer alive ...), locked
    locked_until: datetime | None = None
    temporaries: int = 0  # local .tmp-* files of killed writes in its data directory
    lease: str = "none"  # live, expired, none

    def to_dict(self) -> dict:
        return {
            "backup_id": self.backup_id,
            "objects": self.objects,
            "temporaries": self.temporaries,
            "size": self.size,
            "last_written": _iso(self.last_written),
            "lease": self.lease,
            "action": self.action,
            "locked_until": _iso(self.locked_until) if self.locked_until else None,
        }


@dataclass
class TargetPrune:
    """What prune decided and did for one target."""

    target: str
    policy: RetentionPolicy
    keep: list[tuple[BackupInfo, list[str]]] = field(default_factory=list)
    remove: list[BackupInfo] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    locked: dict[str, datetime] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    leftovers: list[Leftover] = field(default_factory=list)
    note: str | None = None
    error: DrbackupError | None = None
    wal: WalPrune | None = None  # the WAL archive's pruning (actions/prune_wal.py)
    physical: dict[str, dict] = field(default_factory=dict)  # base backup id -> its meta

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "policy": self.policy.to_dict(),
            "policy_text": self.policy.describe(),
            "keep": [_backup_dict(b, reasons=r) for b, r in self.keep],
            "remove": [self._removal_dict(b) for b in self.remove],
            "unreadable": [{"backup_id": k, "error": v} for k, v in self.unreadable.items()],
            "leftovers": [leftover.to_dict() for leftover in self.leftovers],
            "note": self.note,
            "error": self.error.message if self.error else None,
            "wal": self.wal.to_dict() if self.wal else None,
        }

    def action(self, backup_id: str) -> str:
        """What happened to a backup the policy expires: removed, would remove, locked."""
        if backup_id in self.locked:
            return "locked"
        return "removed" if backup_id in self.removed else "would remove"

    def _removal_dict(self, backup: BackupInfo) -> dict:
        until = self.locked.get(backup.backup_id)
        return _backup_dict(
            backup,
            action=self.action(backup.backup_id),
            locked_until=_iso(until) if until else None,
        )

    def counts(self) -> dict[str, int]:
        return {
            "kept": len(self.keep) + len(self.unreadable),
            "removed": len(self.removed),
            "locked": len(self.locked)
            + sum(1 for left in self.leftovers if left.action == "locked"),
            "leftovers_removed": sum(1 for left in self.leftovers if left.action == "removed"),
        }


@dataclass
class PruneReport:
    """Every target's outcome; ``failed`` lists the targets whose prune raised."""

    dry_run: bool
    targets: list[TargetPrune]
    now: datetime
    blobs: dict | None = None  # what blob collection reported, if it ran
    blob_error: DrbackupError | None = None
    warnings: list[str] = field(default_factory=list)  # links in the repository, not followed
    temporaries: list[dict] = field(default_factory=list)  # {key, age_s, action}
    temporaries_error: DrbackupError | None = None

    @property
    def failed(self) -> list[TargetPrune]:
        return [t for t in self.targets if t.error is not None]

    def raise_for_errors(self) -> None:
        """Raise the first error's class, naming every target that failed (and gc)."""
        errors = [(t.target, t.error) for t in self.failed]
        if self.blob_error is not None:
            errors.append(("blob collection", self.blob_error))
        if self.temporaries_error is not None:
            errors.append(("temporaries", self.temporaries_error))
        if not errors:
            return
        first = errors[0][1]
        lines = "; ".join(f"{name}: {error.message}" for name, error in errors)
        raise type(first)(f"prune failed for {len(errors)} part(s): {lines}", hint=first.hint)

    def to_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "now": _iso(self.now),
            "targets": [t.to_dict() for t in self.targets],
            "blobs": self.blobs,
            "warnings": self.warnings,
            "temporaries": self.temporaries,
        }


# --- entry points ---------------------------------------------------------------------------


def prune_targets(
    app: AppContext,
    names: list[str] | None = None,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PruneReport:
    """Prune the named targets (every configured target when ``names`` is empty).

    Raises ``UsageError`` for an unknown target, for a named target without a policy, or
    when no target has one.  Per-target failures are in the report (``raise_for_errors``).
    """
    settings = _settings_for(app.config, names)
    return _prune(app.repository(), settings, dry_run, now, lambda: app.catalog)


def prune_target(app: AppContext, name: str, *, dry_run: bool = False, now: datetime | None = None):
    """Prune one target (the daemon's job); returns its :class:`TargetPrune`.

    Raises what the prune raised (after recording the run), ``UsageError`` for an unknown
    target or one without a retention policy.
    """
    report = prune_targets(app, [name], dry_run=dry_run, now=now)
    report.raise_for_errors()
    return report.targets[0]


def prune_repository(
    repo,
    settings: dict[str, RetentionSettings],
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    catalog: Catalog | None = None,
) -> PruneReport:
    """Prune ``repo`` target by target with the given settings; see the module docstring.

    ``catalog`` (optional) protects the newest backup not marked damaged, forgets deleted
    backups and records one ``prune`` run per target (not for a dry run); its failures are
    warnings in the report.  Raises ``ConfigError`` / ``EncryptionKeyError`` (no key).
    """
    return _prune(repo, settings, dry_run, now, lambda: catalog)


def _prune(repo, settings, dry_run: bool, now: datetime | None, open_catalog) -> PruneReport:
    repo.keyring.require(read=True)
    now = now or datetime.now(UTC)
    report = PruneReport(dry_run=dry_run, targets=[], now=now)
    index = CatalogIndex(open_catalog, (catalog_warnings := []).append)
    for target, target_settings in settings.items():
        result = TargetPrune(target=target, policy=target_settings.policy())
        with recorded_run(index, "prune", target, record=not dry_run) as run:
            try:
                _prune_target(repo, result, target_settings, dry_run, now, index)
            except DrbackupError as exc:
                result.error = exc
            run.problem = shareable(result.error) if result.error else None
            run.details = {**result.counts(), "policy": result.policy.describe()}
        report.targets.append(result)
    grace = lease_expiry(max(s.leftover_grace for s in settings.values()))
    try:  # temporaries of killed local writes outside data/ (repository/leftovers.py)
        report.temporaries = repo.remove_stray_temporaries(
            now, grace, dry_run=dry_run, keep_blobs=lambda: _snapshot_running(repo, now)
        )
    except DrbackupError as exc:
        report.temporaries_error = exc
    report.blobs = _collect_blobs(repo, report)
    report.warnings = [*repo.storage_warnings(), *catalog_warnings]
    return report


def _settings_for(config, names: list[str] | None) -> dict[str, RetentionSettings]:
    if names:
        chosen = {name: retention_settings(config.target(name)) for name in names}
        for name, settings in chosen.items():
            if settings.policy().is_empty():
                raise UsageError(f"target '{name}' has no retention policy", hint=_POLICY_HINT)
        return chosen
    chosen = {name: retention_settings(cfg) for name, cfg in config.targets.items()}
    if not any(not s.policy().is_empty() for s in chosen.values()):
        raise UsageError("no target has a retention policy: nothing to prune", hint=_POLICY_HINT)
    return chosen


# --- one target -----------------------------------------------------------------------------


def _prune_target(
    repo, result: TargetPrune, settings, dry_run: bool, now: datetime, index: CatalogIndex
):
    refs = repo.list_refs(result.target)
    backups = _load_backups(repo, refs, result)
    protected = _protections(repo, result.target, backups, index)
    result.keep, result.remove = apply_policy_by_kind(backups, result.policy, protected, now)
    if result.policy.is_empty():
        result.note = NO_POLICY_NOTE
    for backup in result.remove:
        ref = BackupRef(backup.backup_id, result.target)
        _delete_backup(repo, result, ref, index, dry_run)
    committed = {ref.backup_id for ref in refs}
    _prune_leftovers(repo, result, committed, settings.leftover_grace, now, dry_run)
    _prune_wal(repo, result, dry_run)


def _prune_wal(repo, result: TargetPrune, dry_run: bool) -> None:
    if result.unreadable:  # it may be a base backup whose WAL must stay
        result.note = "a manifest could not be read: every WAL file kept"
        return
    removed = result.removed if not dry_run else [b.backup_id for b in result.remove]
    gone = set(removed) - set(result.locked)
    remaining = [meta for backup_id, meta in result.physical.items() if backup_id not in gone]
    result.wal = prune_wal(
        repo,
        result.target,
        remaining,
        dry_run=dry_run,
        locked_until=repo.locked_until,
    )


def _load_backups(repo, refs: list[BackupRef], result: TargetPrune) -> list[BackupInfo]:
    """BackupInfo of every readable manifest; unreadable ones go to ``result.unreadable``."""
    backups = []
    for ref in refs:
        try:
            manifest = repo.load_manifest(ref)
        except IntegrityError as exc:
            result.unreadable[ref.backup_id] = exc.message
            continue
        except UsageError:
            continue  # deleted since the listing (another prune): nothing to decide
        point = manifest.recovery_time or manifest.started_time
        if manifest.kind == "postgres-physical":
            result.physical[ref.backup_id] = manifest.meta
        backups.append(BackupInfo(ref.backup_id, ref.target, point, kind=manifest.kind))
    return backups


def _protections(
    repo, target: str, backups: list[BackupInfo], index: CatalogIndex
) -> dict[str, str]:
    """Backup ids no policy may remove, with the reason: last passing drill, newest good."""
    protected = {}
    drill = last_passing_drill(repo, target)
    if drill is not None:
        drill_id, backup_id = drill
        protected[backup_id] = DRILL_REASON.format(drill_id=drill_id)
    good = _newest_good(backups, index, repo.id)
    if good is not None:
        protected.setdefault(good, GOOD_REASON)
    return protected


def _newest_good(backups: list[BackupInfo], index: CatalogIndex, repository_id: str) -> str | None:
    """The newest backup the catalog does not mark damaged, when the newest one is damaged."""
    if not backups:
        return None
    records = index.read(lambda cat: cat.list_backups(backups[0].target, repository_id)) or []
    damaged = {r.backup_id for r in records if r.status == "damaged"}
    ordered = sorted(backups, key=lambda b: (b.recovery_point, b.backup_id), reverse=True)
    if ordered[0].backup_id not in damaged:
        return None  # the newest is protected anyway
    return next((b.backup_id for b in ordered if b.backup_id not in damaged), None)


def _delete_backup(
    repo, result: TargetPrune, ref: BackupRef, index: CatalogIndex, dry_run: bool
) -> None:
    """Delete one backup unless Object Lock holds its manifest; record what happened."""
    until = repo.locked_until(ref.manifest_key)
    if until is not None:
        result.locked[ref.backup_id] = until
        return
    if dry_run:
        return
    try:
        repo.delete_backup(ref)
    except StorageError:
        until = repo.locked_until(ref.manifest_key)
        if until is None:
            raise
        result.locked[ref.backup_id] = until
        return
    result.removed.append(ref.backup_id)
    index(lambda cat: cat.forget_backup(ref.backup_id, repo.id))


def _prune_leftovers(repo, result, committed: set[str], grace: timedelta, now, dry_run) -> None:
    """Report every leftover; remove those whose writer is gone (repository/leftovers.py)."""
    for found in repo.find_leftovers(result.target, committed):
        leftover = Leftover(
            found.backup_id,
            len(found.objects),
            found.size,
            found.last_written(),
            "",
            temporaries=len(found.temporaries),
            lease=found.lease_state(now, grace),
        )
        result.leftovers.append(leftover)
        leftover.action = found.kept_because(now, grace) or _removal(
            repo, found, leftover, grace, now, dry_run
        )


def _removal(repo, found, leftover: Leftover, grace, now, dry_run: bool) -> str:
    locks = [u for o in found.objects if (u := repo.locked_until(o.key)) is not None]
    if locks:
        leftover.locked_until = max(locks)
        return "locked"
    if dry_run:
        return "would remove"
    return repo.remove_leftover(found, now, grace)


def _snapshot_running(repo, now: datetime) -> bool:
    locks = repo.list_locks(now.timestamp())
    return any(lock.kind == "snapshot" and not lock.stale for lock in locks)


# --- drills, blobs, catalog -----------------------------------------------------------------


def last_passing_drill(repo, target: str) -> tuple[str, str] | None:
    """``(drill_id, backup_id)`` of the target's newest drill that did not fail, or None.

    Reads the drill reports in the repository (``reports/<target>/<drill id>``), newest
    first; a report that fails authentication is passed over.  "Passing" means status pass or
    warn: the restore worked and the data checks held, which is what the rule protects.
    """
    for key in repo.report_keys(target, newest_first=True):
        try:
            report = DrillReport.from_dict(repo.get_document(key))
        except (IntegrityError, ObjectNotFoundError):
            continue  # damaged or just removed; storage errors propagate (never guess)
        drilled = report.target(target)
        if drilled and (drilled.status or report.status) in (PASS, WARN) and drilled.backup_id:
            return report.drill_id, drilled.backup_id
    return None


def _collect_blobs(repo, report: PruneReport) -> dict | None:
    """Collect blobs no snapshot references once bucket snapshots were removed.

    Not on a dry run (nothing was removed, so gc would not see what prune frees).  A
    running snapshot makes gc refuse: that is noted, not a failure ('drbackup gc' later).
    """
    removed_snapshots = [
        b
        for t in report.targets
        for b in t.remove
        if b.kind == "bucket" and b.backup_id in t.removed
    ]
    if report.dry_run or not removed_snapshots:
        return None
    try:
        result = collect_garbage(repo)
    except LockedError as exc:
        return {"ran": False, "note": f"blob collection skipped: {exc.message}"}
    except DrbackupError as exc:
        report.blob_error = exc
        return {"ran": False, "note": f"blob collection failed: {exc.message}"}
    return {
        "ran": True,
        "deleted": result.deleted,
        "deleted_bytes": result.deleted_bytes,
        "young": result.young,
        "missing": result.missing,
        "note": result.note,
    }


# --- small helpers --------------------------------------------------------------------------


def _backup_dict(backup: BackupInfo, **extra) -> dict:
    return {
        "backup_id": backup.backup_id,
        "kind": backup.kind,
        "recovery_point": _iso(backup.recovery_point),
        **extra,
    }


def _mtime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
