"""Backup ids, object names and the manifest (what one backup contains, with checksums).

Names (clear, sortable by time; never table names, bucket keys or data)::

    manifests/<target>/<backup_id>              the encrypted manifest, written last
    data/<target>/<backup_id>/<item>-<segment>  encrypted data objects
    blobs/<2 hex>/<blob id>                     bucket object contents, named by a keyed hash
    locks/<kind>-<id>                           snapshot and gc locks
    leases/<target>/<backup_id>                 a running writer's lease (repository/lease.py)

``backup_id`` is ``YYYYmmddTHHMMSSZ-<3 hex: millisecond><3 hex: random>``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from drbackup.codec.pipeline import ObjectRecord
from drbackup.errors import IntegrityError
from drbackup.times import parse_iso_time

MANIFEST_PREFIX = "manifests/"
DATA_PREFIX = "data/"
BLOB_PREFIX = "blobs/"  # content-addressed blobs of bucket snapshots (docs/buckets.md)
LOCK_PREFIX = "locks/"  # snapshot and gc locks (docs/buckets.md)
LEASE_PREFIX = "leases/"  # running writers' leases (docs/repository-format.md)
MANIFEST_FORMAT = "drbackup-manifest"
MANIFEST_VERSION = 1
_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


def new_backup_id(now: datetime | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-mmmrrr``: the UTC start second, its millisecond (3 hex digits),
    and 12 random bits, so that ids sort by start time to the millisecond."""
    now = now or datetime.now(UTC)
    return (
        f"{now.strftime('%Y%m%dT%H%M%SZ')}-{now.microsecond // 1000:03x}{os.urandom(2).hex()[:3]}"
    )


def is_backup_id(text: str) -> bool:
    return bool(_ID_RE.match(text))


def manifest_key(target: str, backup_id: str) -> str:
    return f"{MANIFEST_PREFIX}{target}/{backup_id}"


def data_key(target: str, backup_id: str, item: int, segment: int) -> str:
    return f"{DATA_PREFIX}{target}/{backup_id}/{item:04d}-{segment:05d}"


def data_prefix(target: str, backup_id: str) -> str:
    return f"{DATA_PREFIX}{target}/{backup_id}/"


def lease_key(target: str, backup_id: str) -> str:
    return f"{LEASE_PREFIX}{target}/{backup_id}"


def lease_prefix(target: str) -> str:
    return f"{LEASE_PREFIX}{target}/"


def backup_id_under(key: str, prefix: str) -> str | None:
    """The backup id that ``key`` names right under ``prefix`` (``data/<t>/``, ``leases/<t>/``).

    ``data/<t>/<id>/<object>`` and ``leases/<t>/<id>`` give ``<id>``; anything else None.
    """
    if not key.startswith(prefix):
        return None
    head = key[len(prefix) :].split("/", 1)[0]
    return head if is_backup_id(head) else None


_BLOB_ID_RE = re.compile(r"^[0-9a-f]{64}$")


def blob_key(blob_id: str) -> str:
    """``blobs/<first 2 hex>/<blob id>``: where a bucket-snapshot blob is stored."""
    return f"{BLOB_PREFIX}{blob_id[:2]}/{blob_id}"


def blob_id_of(key: str) -> str | None:
    """The blob id a storage key names, or None if ``key`` is not a well-formed blob key."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] + "/" != BLOB_PREFIX or not _BLOB_ID_RE.match(parts[2]):
        return None
    return parts[2] if parts[1] == parts[2][:2] else None


@dataclass(frozen=True, order=True)
class BackupRef:
    """A backup known by its manifest key alone (no decryption needed)."""

    backup_id: str
    target: str

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.target, self.backup_id)

    @classmethod
    def from_key(cls, key: str) -> BackupRef | None:
        parts = key.split("/")
        if len(parts) != 3 or parts[0] + "/" != MANIFEST_PREFIX or not is_backup_id(parts[2]):
            return None
        return cls(backup_id=parts[2], target=parts[1])


@dataclass
class Item:
    """One stream in a backup (a database dump, the globals SQL, ...), maybe in segments."""

    name: str
    type: str
    size: int
    sha256: str
    objects: list[ObjectRecord]
    meta: dict = field(default_factory=dict)

    @property
    def stored_size(self) -> int:
        return sum(o.stored_size for o in self.objects)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "size": self.size,
            "sha256": self.sha256,
            "objects": [o.to_dict() for o in self.objects],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Item:
        return cls(
            name=d["name"],
            type=d["type"],
            size=d["size"],
            sha256=d["sha256"],
            objects=[ObjectRecord.from_dict(o) for o in d["objects"]],
            meta=d.get("meta", {}),
        )


@dataclass
class Manifest:
    backup_id: str
    target: str
    kind: str
    repository_id: str
    started_at: str
    finished_at: str
    recovery_point: str | None
    tool_version: str
    items: list[Item]
    meta: dict = field(default_factory=dict)

    @property
    def ref(self) -> BackupRef:
        return BackupRef(self.backup_id, self.target)

    @property
    def size(self) -> int:
        return sum(i.size for i in self.items)

    @property
    def stored_size(self) -> int:
        return sum(i.stored_size for i in self.items)

    # The timestamps as datetimes (the strings above are what the manifest stores); each
    # raises IntegrityError naming the manifest for one that does not parse.

    @property
    def started_time(self) -> datetime:
        return self._time(self.started_at)

    @property
    def finished_time(self) -> datetime:
        return self._time(self.finished_at)

    @property
    def recovery_time(self) -> datetime | None:
        """The recovery point; None for a backup that records none."""
        return self._time(self.recovery_point) if self.recovery_point else None

    def _time(self, text: str) -> datetime:
        try:
            return parse_iso_time(text)
        except ValueError:
            raise IntegrityError(
                f"{self.ref.manifest_key}: bad timestamp {text!r} in manifest"
            ) from None

    def item(self, name: str) -> Item:
        for it in self.items:
            if it.name == name:
                return it
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "backup_id": self.backup_id,
            "target": self.target,
            "kind": self.kind,
            "repository_id": self.repository_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "recovery_point": self.recovery_point,
            "tool_version": self.tool_version,
            "items": [i.to_dict() for i in self.items],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: dict, *, expected: BackupRef, repository_id: str) -> Manifest:
        """Parse and check that the manifest is the one its key and repository say."""
        key = expected.manifest_key
        if d.get("format") != MANIFEST_FORMAT:
            raise IntegrityError(f"{key}: not a drbackup manifest")
        if d.get("version", 0) > MANIFEST_VERSION:
            raise IntegrityError(
                f"{key}: manifest version {d.get('version')} is newer than supported"
            )
        if (d.get("backup_id"), d.get("target")) != (expected.backup_id, expected.target):
            raise IntegrityError(
                f"{key}: manifest claims to be backup {d.get('target')}/{d.get('backup_id')} "
                "(manifests swapped or moved)"
            )
        if d.get("repository_id") != repository_id:
            raise IntegrityError(f"{key}: manifest belongs to another repository")
        return cls(
            backup_id=d["backup_id"],
            target=d["target"],
            kind=d["kind"],
            repository_id=d["repository_id"],
            started_at=d["started_at"],
            finished_at=d["finished_at"],
            recovery_point=d.get("recovery_point"),
            tool_version=d.get("tool_version", "?"),
            items=[Item.from_dict(i) for i in d["items"]],
            meta=d.get("meta", {}),
        )
