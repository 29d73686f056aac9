"""``restore group``: an application's database and buckets back to the same second.

A group (config ``groups.<name>``) names a PostgreSQL target and its minio targets.  The
database goes to ``T`` by point-in-time recovery when ``into_dir`` is given and a base
backup reaches ``T`` (every commit up to ``T``), else from the newest dump at or before
``T`` into ``into`` (its recovery point, stated).  Each bucket of each minio target goes to
``T`` from its version history when it has one (actions/restore_history.py), else to the
newest snapshot at or before ``T``, into ``<bucket><suffix>``.  The result says which second
each side reached; then the group's reference queries run in the restored database against
the buckets as restored (drill/references.py): rows naming an object that is not there are
reported, naming buckets and counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from drbackup.actions.restore_history import open_state, plan_history
from drbackup.actions.restore_minio import restore_minio
from drbackup.actions.selection import select_backup
from drbackup.drill.references import check_references_at
from drbackup.errors import UsageError
from drbackup.sources.buckets.index import open_index
from drbackup.sources.buckets.versions import iso_text


@dataclass
class GroupRestoreResult:
    group: str
    at: datetime
    dry_run: bool
    database: dict = field(default_factory=dict)  # target, method, backup_id, reached, note
    buckets: list[dict] = field(default_factory=list)  # target, bucket, into_bucket, reached…
    references: list = field(default_factory=list)  # CheckResult per reference query
    physical: object | None = None  # a point-in-time restore (``.stop()`` stops its server)

    @property
    def failed(self) -> bool:
        return any(r.status == "fail" for r in self.references)


def restore_group(
    app,
    name: str,
    at: datetime,
    *,
    into: str | None = None,
    into_dir: str | None = None,
    suffix: str = "-restored",
    dry_run: bool = False,
    force: bool = False,
    create: bool = False,
    start: bool = False,
    workers: int = 8,
) -> GroupRestoreResult:
    """Restore group ``name`` to ``at`` (see the module docstring).

    Raises UsageError (unknown group, no destination for the database, nothing reaches
    ``at``), RestoreError from either side; reference findings are in the result.
    """
    group = app.config.groups.get(name)
    if group is None:
        known = ", ".join(sorted(app.config.groups)) or "none"
        raise UsageError(f"no group '{name}' in the config", hint=f"groups: {known}")
    if into is None and into_dir is None:
        raise UsageError("give --into DSN (a dump) and/or --into-dir DIR (point in time)")
    result = GroupRestoreResult(name, at, dry_run)
    dest = _Destination(into, into_dir, dry_run, force, create, start)
    result.database = _database(app, group.postgres, at, dest)
    result.physical = dest.restored
    opened = {}
    for target in group.minio:
        for bucket in app.config.minio[target].buckets:
            done = restore_minio(
                app, target, into_bucket=bucket + suffix, point_in_time=at, bucket=bucket,
                dry_run=dry_run, force=force, workers=workers,
            )  # fmt: skip
            result.buckets.append(_bucket_line(target, bucket, done, at))
            opened[bucket] = (target, done)
    if group.references and not dry_run and result.database.get("dsn"):
        where = f"the buckets restored to {iso_text(at)}"
        entries_of = _state_opener(app.repository(), opened, at)
        for query in group.references:
            found = check_references_at(result.database["dsn"], query, entries_of, where)
            result.references.append(found)
    return result


@dataclass
class _Destination:
    into: str | None
    into_dir: str | None
    dry_run: bool
    force: bool
    create: bool
    start: bool
    restored: object | None = None  # the PhysicalRestore (its started server)


def _database(app, target: str, at: datetime, dest: _Destination) -> dict:
    """Restore the database to ``at``: point in time when possible, else the nearest dump."""
    if dest.into_dir is not None:
        line = _physical(app, target, at, dest)
        if line is not None or dest.into is None:
            return line or _no_physical(target, at)
    return _dump(app, target, at, dest.into, dest.dry_run, dest.force, dest.create)


def _physical(app, target: str, at: datetime, dest: _Destination) -> dict | None:
    from drbackup.actions.pitr import choose_base_backup
    from drbackup.actions.restore_physical import restore_physical
    from drbackup.sources.postgres.recovery import RecoveryTarget

    point = RecoveryTarget.at_time(at)
    try:
        choice = choose_base_backup(app.repository(), target, point)
    except UsageError:
        return None
    line = {"target": target, "method": "pitr", "backup_id": choice.manifest.backup_id}
    line.update(reached=iso_text(at), into_dir=str(dest.into_dir))
    line["note"] = f"base backup {choice.manifest.backup_id} and WAL: every commit up to T"
    if dest.dry_run:
        return line
    done = restore_physical(app, target, dest.into_dir, point, start=dest.start, detach=True)
    dest.restored = done
    if done.server is not None:  # started: recovery said where it stopped
        commit = done.outcome.last_commit if done.outcome else None
        line["note"] += f"; last replayed commit {commit.isoformat() if commit else 'none'}"
        databases = app.config.postgres[target].databases
        name = databases[0] if isinstance(databases, list) else "postgres"
        line["dsn"] = done.server.dsn(name)
    return line


def _no_physical(target: str, at: datetime) -> dict:
    raise UsageError(
        f"no base backup of {target} reaches {iso_text(at)} by point-in-time recovery",
        hint="add --into DSN to restore the newest dump at or before that time instead",
    )


def _dump(app, target, at, into, dry_run, force, create) -> dict:
    from drbackup.actions.restore_postgres import restore_postgres

    if dry_run:
        selection = select_backup(app.repository(), target, point_in_time=at, kind="postgres")
    else:
        restored = restore_postgres(app, target, into, point_in_time=at, force=force, create=create)
        selection = restored.selection
    m = selection.manifest
    line = {"target": target, "method": "dump", "backup_id": m.backup_id}
    line.update(reached=m.recovery_point, dsn=into, note=f"nearest dump: {selection.note}")
    return line


def _bucket_line(target: str, bucket: str, done, at: datetime) -> dict:
    line = {"target": target, "bucket": bucket, "into_bucket": done.into_bucket}
    line.update(objects=done.objects, note=done.selection.note)
    history = done.history
    if history is None:
        line.update(method="snapshot", reached=done.selection.manifest.recovery_point)
    else:
        reached = min(history["at"], history["covered_until"] or history["at"])
        line.update(method="history", reached=reached)
    return line


def _state_opener(repo, opened: dict, at: datetime):
    """``bucket`` → its objects as restored (the state at ``at``, or the snapshot's)."""

    def open_entries(bucket: str):
        if bucket not in opened:
            return open_index(repo.open_item, None, bucket)  # not in the group: nothing
        target, done = opened[bucket]
        if done.history is not None:
            return open_state(repo, plan_history(repo, target, bucket, at))
        return open_index(repo.open_item, done.selection.manifest, bucket)

    return open_entries
