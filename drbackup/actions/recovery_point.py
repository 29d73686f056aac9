"""``backup all``: every PostgreSQL backup, then every bucket snapshot, as one recovery point.

Databases are backed up first and buckets snapshotted after them: applications upload an
object before they insert the row naming it, so every row committed before the database's
recovery point names an object that existed before the snapshot read the bucket, and the
pair is consistent for every object not deleted in between.

The recovery point document (repository/recovery_points.py) is written last, only when
every member succeeded (write, verify, then commit): a failed member raises and leaves the
other backups as ordinary backups, but no recovery point.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from drbackup.actions.backup_postgres import backup_targets
from drbackup.actions.snapshot_minio import snapshot_targets
from drbackup.errors import UsageError
from drbackup.repository.manifest import Manifest, new_backup_id
from drbackup.repository.recovery_points import (
    iter_recovery_points,
    recovery_point_document,
    recovery_point_key,
)

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext


@dataclass(frozen=True)
class Members:
    """Which targets ``backup all`` takes, in order: databases first, then buckets."""

    postgres: list[str]
    minio: list[str]


def select_members(config, names: list[str] | None = None) -> Members:
    """Every configured target, or only ``names`` (split by kind, config order kept).

    Raises UsageError for an unknown name or when nothing is selected.
    """
    postgres, minio = list(config.postgres), list(config.minio)
    if names:
        for name in names:
            config.target(name)  # unknown names fail with the config's hint
        postgres = [n for n in postgres if n in names]
        minio = [n for n in minio if n in names]
    if not postgres and not minio:
        raise UsageError(
            "no targets to back up", hint="configure targets under 'postgres:' or 'minio:'"
        )
    return Members(postgres, minio)


def backup_all(
    app: AppContext, members: Members, *, max_parallel: int = 2, snapshot_options=None
) -> dict:
    """Back up ``members.postgres``, then snapshot ``members.minio``; record the recovery point.

    Returns the recovery point document.  Raises what the backups raise: every database
    target runs, but no snapshot is taken once a database backup failed.
    """
    started = datetime.now(UTC)
    manifests: list[Manifest] = []
    if members.postgres:
        manifests += backup_targets(app, members.postgres, max_parallel=max_parallel)
    if members.minio:
        manifests += snapshot_targets(app, members.minio, options=snapshot_options)
    doc = recovery_point_document(new_backup_id(), started, datetime.now(UTC), manifests)
    app.repository().put_document(recovery_point_key(doc["id"]), doc)
    return doc


def list_recovery_points(app: AppContext) -> list[dict]:
    """Every recovery point document in the repository, oldest first."""
    return list(iter_recovery_points(app.repository()))
