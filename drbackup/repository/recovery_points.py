"""Recovery points on storage: ``recovery-points/<id>``, one encrypted JSON document each.

A recovery point groups backups taken together by ``backup all`` (a database backup and the
bucket snapshot taken after it).  The id sorts by time like a backup id.  The document::

    {"format": "drbackup-recovery-point", "version": 1, "id": ..., "started_at": ...,
     "finished_at": ..., "members": [{"target", "backup_id", "kind", "recovery_point"}]}

It is written after every member's manifest is committed, so a document only names
committed backups (a member pruned later is simply missing).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from drbackup.errors import ObjectNotFoundError
from drbackup.repository.manifest import Manifest, is_backup_id

RECOVERY_POINT_PREFIX = "recovery-points/"
RECOVERY_POINT_FORMAT = "drbackup-recovery-point"
RECOVERY_POINT_VERSION = 1


def recovery_point_key(point_id: str) -> str:
    return f"{RECOVERY_POINT_PREFIX}{point_id}"


def recovery_point_document(
    point_id: str, started: datetime, finished: datetime, manifests: list[Manifest]
) -> dict:
    """The document of a recovery point made of ``manifests`` (pure)."""
    members = [
        {
            "target": m.target,
            "backup_id": m.backup_id,
            "kind": m.kind,
            "recovery_point": m.recovery_point,
        }
        for m in manifests
    ]
    return {
        "format": RECOVERY_POINT_FORMAT,
        "version": RECOVERY_POINT_VERSION,
        "id": point_id,
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "members": members,
    }


def list_recovery_point_ids(repo, since: str | None = None) -> list[str]:
    """Ids of the stored recovery points, oldest first (only those ≥ ``since`` if given)."""
    keys = (info.key for info in repo._storage.list(RECOVERY_POINT_PREFIX))
    ids = (k.removeprefix(RECOVERY_POINT_PREFIX) for k in keys)
    return sorted(i for i in ids if is_backup_id(i) and (since is None or i >= since))


def iter_recovery_points(repo, since: str | None = None) -> Iterator[dict]:
    """Decrypt and yield the documents, oldest first; one deleted meanwhile is skipped.

    Raises IntegrityError for a document that does not authenticate.
    """
    for point_id in list_recovery_point_ids(repo, since):
        try:
            yield repo.get_document(recovery_point_key(point_id))
        except ObjectNotFoundError:  # pruned while listing
            continue


def recovery_point_of(repo, target: str, backup_id: str) -> dict | None:
    """The oldest recovery point having ``target/backup_id`` as a member, or None.

    Only documents written after the backup started can name it, and ids sort by time,
    so the search starts at the backup id's timestamp.
    """
    since = backup_id.split("-", 1)[0]
    for doc in iter_recovery_points(repo, since):
        for member in doc.get("members", []):
            if (member.get("target"), member.get("backup_id")) == (target, backup_id):
                return doc
    return None


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
