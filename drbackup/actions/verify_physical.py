"""``verify`` of a base backup: every file against the server's ``backup_manifest``, as
``pg_verifybackup`` checks a backup directory, but streamed from the repository.

After the repository's own checks (every object authenticates, every digest matches), the
``backup_manifest`` item is read and its own checksum checked; then each tar archive is read
as a stream and every file in it hashed and compared (size and SHA-256); files the manifest
lists that no archive holds, and files no manifest lists, are named.  Finally the WAL the
backup needs (its start to its stop) must be in the WAL archive.  Memory holds the
manifest's file list (like pg_verifybackup), never file contents.
"""

from __future__ import annotations

from drbackup.actions.backup_physical import MANIFEST_TYPE, TAR_TYPE
from drbackup.errors import (
    IntegrityError,
    ObjectNotFoundError,
    StorageError,
    StorageUnreachableError,
)
from drbackup.repository.manifest import Manifest
from drbackup.repository.wal import WalArchive
from drbackup.sources.postgres.basebackup_files import VerifyState, parse_backup_manifest
from drbackup.sources.postgres.wal import parse_lsn, segment_name, segno_of, segno_of_end


def verify_base_backup(repo, manifest: Manifest, progress=None) -> list[str]:
    """Problems found in the files of base backup ``manifest`` (empty when intact)."""
    try:
        backup_manifest = _read_manifest(repo, manifest)
    except IntegrityError as exc:
        return [exc.message]
    state = VerifyState(backup_manifest)
    for item in manifest.items:
        if item.type != TAR_TYPE:
            continue
        try:
            with repo.open_item(item) as reader:
                state.check_archive(item.name, _Counting(reader, progress))
        except StorageUnreachableError:
            raise
        except (IntegrityError, ObjectNotFoundError, StorageError) as exc:
            state.problems.append(f"{item.name}: {exc.message}")
    return state.finish() + missing_wal(repo, manifest)


def _read_manifest(repo, manifest: Manifest):
    items = [i for i in manifest.items if i.type == MANIFEST_TYPE]
    if not items:
        raise IntegrityError(f"backup {manifest.backup_id} holds no backup_manifest")
    with repo.open_item(items[0]) as reader:
        data = b"".join(reader)
    return parse_backup_manifest(data, f"backup {manifest.backup_id}")


def missing_wal(repo, manifest: Manifest) -> list[str]:
    """The segments from the backup's start to its stop that the WAL archive lacks."""
    meta = manifest.meta
    size, timeline = meta["wal_segment_size"], meta["timeline"]
    first = segno_of(parse_lsn(meta["start_lsn"]), size)
    last = segno_of_end(parse_lsn(meta["stop_lsn"]), size)
    needed = [segment_name(timeline, n, size) for n in range(first, last + 1)]
    archive = WalArchive(repo, manifest.target)
    present = {s.name for s in archive.list_files(meta["cluster"], start=needed[0])}
    return [
        f"WAL segment {n} (needed from the backup's start to its end) is not archived"
        for n in needed
        if n not in present
    ]


class _Counting:
    """A reader that reports how many bytes went through."""

    def __init__(self, reader, progress):
        self._reader, self._progress = reader, progress

    def read(self, n: int = -1) -> bytes:
        data = self._reader.read(n if n and n > 0 else 1 << 20)
        if data and self._progress:
            self._progress(len(data))
        return data
