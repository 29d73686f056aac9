"""The files of a base backup: its ``backup_manifest``, checked as ``pg_verifybackup`` checks
it, and its tar archives, read as streams (verified, or extracted into a data directory).

A base backup is ``base.tar`` (the data directory), one ``<oid>.tar`` per tablespace (its
directory's content) and ``backup_manifest``: a JSON document listing every file with its
size and checksum (CRC-32C since drbackup asks for it, SHA-256 in older backups; any of
PostgreSQL's algorithms is checked), the WAL range the backup needs, and the SHA-256 of the
manifest itself.  Paths in the manifest are relative to the data directory; a tablespace's
files are under ``pg_tblspc/<oid>/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import google_crc32c

from drbackup.errors import IntegrityError, RestoreError
from drbackup.sources.postgres.wal import parse_lsn

_CHECKSUM_KEY = b'"Manifest-Checksum"'
# written or removed by PostgreSQL and pg_basebackup after the manifest (as pg_verifybackup)
NOT_IN_MANIFEST = {"backup_manifest", "postgresql.auto.conf", "standby.signal", "recovery.signal"}


class _Crc32c:
    """CRC-32C with hashlib's interface, in a backup_manifest's spelling: the 4 bytes of the
    value in little-endian order (as the server's memcpy of it), as hex."""

    def __init__(self):
        self.value = 0

    def update(self, data) -> None:
        self.value = google_crc32c.extend(self.value, data)

    def hexdigest(self) -> str:
        return self.value.to_bytes(4, "little").hex()


_HASHES = {
    "CRC32C": _Crc32c,
    "SHA256": hashlib.sha256,
    "SHA224": hashlib.sha224,
    "SHA384": hashlib.sha384,
    "SHA512": hashlib.sha512,
}
_COPY = 1 << 20  # bytes per read: tarfile's stream mode reads 10 KiB at a time otherwise


@dataclass(frozen=True)
class ManifestFile:
    path: str
    size: int
    algorithm: str | None
    checksum: str | None


@dataclass
class BackupManifest:
    """A parsed ``backup_manifest``."""

    files: dict[str, ManifestFile]
    wal_ranges: list[tuple[int, int, int]]  # (timeline, start LSN, end LSN)
    version: int


def parse_backup_manifest(data: bytes, what: str) -> BackupManifest:
    """Parse and check the manifest's own checksum.  Raises IntegrityError."""
    # the checksum covers every byte before the line that holds it
    at = data.rfind(_CHECKSUM_KEY)
    if at < 0:
        raise IntegrityError(f"{what}: backup_manifest has no Manifest-Checksum")
    try:
        doc = json.loads(data)
    except ValueError:
        raise IntegrityError(f"{what}: backup_manifest is not valid JSON") from None
    if hashlib.sha256(data[:at]).hexdigest() != doc.get("Manifest-Checksum"):
        raise IntegrityError(f"{what}: backup_manifest does not match its Manifest-Checksum")
    files = {}
    for entry in doc.get("Files", []):
        path = entry.get("Path") or bytes.fromhex(entry["Encoded-Path"]).decode("utf-8", "replace")
        files[path] = ManifestFile(
            path, int(entry["Size"]), entry.get("Checksum-Algorithm"), entry.get("Checksum")
        )
    ranges = [
        (int(r["Timeline"]), parse_lsn(r["Start-LSN"]), parse_lsn(r["End-LSN"]))
        for r in doc.get("WAL-Ranges", [])
    ]
    return BackupManifest(files, ranges, int(doc.get("PostgreSQL-Backup-Manifest-Version", 0)))


def member_path(archive: str, member: str) -> str:
    """The data-directory-relative path of tar ``member`` of ``archive`` (``base.tar`` or
    ``<oid>.tar``)."""
    member = member.removeprefix("./").rstrip("/")
    if archive == "base.tar":
        return member
    return f"pg_tblspc/{archive.removesuffix('.tar')}/{member}"


# --- verifying ----------------------------------------------------------------------------------


@dataclass
class VerifyState:
    """What the tar archives of a backup held, compared with its manifest as they stream."""

    manifest: BackupManifest
    seen: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    bytes: int = 0

    def check_archive(self, archive: str, stream: BinaryIO) -> None:
        """Read one tar archive from ``stream`` and check every file in it."""
        try:
            with tarfile.open(fileobj=stream, mode="r|", bufsize=_COPY) as tar:
                for member in tar:
                    if member.isfile():
                        self._check_file(archive, member, tar.extractfile(member))
        except tarfile.TarError as exc:
            self.problems.append(f"{archive}: not a valid tar archive ({exc})")

    def _check_file(self, archive: str, member: tarfile.TarInfo, data: BinaryIO) -> None:
        path = member_path(archive, member.name)
        self.seen.add(path)
        expected = self.manifest.files.get(path)
        if expected is None:
            if path not in NOT_IN_MANIFEST and not path.startswith("pg_wal/"):
                self.problems.append(f"{path}: in the backup but not in its manifest")
            return
        digest = _HASHES.get(expected.algorithm or "", hashlib.sha256)()
        size = 0
        while block := data.read(_COPY):
            digest.update(block)
            size += len(block)
        self.bytes += size
        if size != expected.size:
            self.problems.append(f"{path}: {size} bytes, the manifest says {expected.size}")
        elif expected.algorithm in _HASHES and digest.hexdigest() != expected.checksum:
            self.problems.append(f"{path}: checksum mismatch ({expected.algorithm})")

    def finish(self) -> list[str]:
        """Every problem found, files of the manifest that no archive held included."""
        missing = sorted(set(self.manifest.files) - self.seen - NOT_IN_MANIFEST)
        return self.problems + [
            f"{path}: in the manifest but not in the backup" for path in missing
        ]


# --- extracting ---------------------------------------------------------------------------------


@dataclass
class Extracted:
    files: int = 0
    bytes: int = 0


def extract_archive(
    archive: str,
    stream: BinaryIO,
    root: Path,
    *,
    chown: tuple[int, int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Extracted:
    """Write the files of tar ``archive`` under ``root`` (the data directory for ``base.tar``,
    the tablespace's directory for ``<oid>.tar``).

    Refuses members that would land outside ``root`` (absolute paths, ``..``, links out).
    Directories get mode 0700 and files 0600 (as PostgreSQL wants them); ``chown``: owner
    for everything written.  Raises RestoreError.
    """
    done = Extracted()
    try:
        with tarfile.open(fileobj=stream, mode="r|", bufsize=_COPY) as tar:
            for member in tar:
                _extract_member(tar, member, root, archive, chown, done, progress)
    except tarfile.TarError as exc:
        raise RestoreError(f"{archive}: not a valid tar archive ({exc})") from None
    return done


def _extract_member(
    tar, member, root: Path, archive: str, chown, done: Extracted, progress
) -> None:
    target = _safe_path(root, member.name, archive)
    if member.isdir():
        target.mkdir(mode=0o700, parents=True, exist_ok=True)
    elif member.isfile():
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        source = tar.extractfile(member)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            while block := source.read(_COPY):
                out.write(block)
                if progress:
                    progress(len(block))
        done.files += 1
        done.bytes += member.size
    elif member.issym():
        raise RestoreError(f"{archive}: symbolic link {member.name} in a base backup (unexpected)")
    else:
        return  # devices, fifos: never in a data directory
    if chown is not None:
        os.lchown(target, *chown)


def _safe_path(root: Path, name: str, archive: str) -> Path:
    relative = PurePosixPath(name.removeprefix("./"))
    if relative.is_absolute() or ".." in relative.parts:
        raise RestoreError(f"{archive}: member {name!r} points outside the data directory")
    return root.joinpath(*relative.parts) if relative.parts else root


def read_tablespace_map(data_dir: Path) -> dict[int, str]:
    """``{oid: original location}`` from the data directory's ``tablespace_map``."""
    path = data_dir / "tablespace_map"
    if not path.exists():
        return {}
    found = {}
    for line in path.read_text().splitlines():
        oid, _, location = line.partition(" ")
        if oid.isdigit():
            found[int(oid)] = location
    return found


def is_empty_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(path.lstat().st_mode) and not any(path.iterdir())
    except FileNotFoundError:
        return False
