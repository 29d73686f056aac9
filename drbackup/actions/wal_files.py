"""Storing one WAL file, and fetching one back: the seam every capture mode goes through.

``upload_wal_file`` is what ``wal-push`` (one file, or the background pusher) calls for each
file PostgreSQL hands over; a streaming uploader (pg_receivewal's completed segments and
``.partial`` snapshots) calls it too, with ``upto`` for partials.  ``fetch_wal_file`` is what
``wal-fetch`` and the restore's read-ahead call.

Checks on the way in and out (sources/postgres/wal.py): a segment's first page must name the
cluster the target archives (system identifier, major version, segment size) and the
position its name says; a fetched file is checked the same way before PostgreSQL sees it.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from drbackup.errors import IntegrityError, SourceError
from drbackup.files import atomic_write
from drbackup.repository.wal import (
    PutResult,
    StoredWal,
    WalArchive,
    cluster_name,
    parse_cluster_name,
)
from drbackup.sources.postgres.wal import (
    PARTIAL,
    SEGMENT,
    WalFileName,
    check_segment_header,
    parse_wal_file_name,
    read_segment_header,
)

_HEAD = 1 << 16  # enough for a segment's first page at any block size
_BLOCK = 1 << 20


@dataclass
class ClusterState:
    """Which cluster a target archives, cached across files of one process.

    The registration is read from the repository at the first file and again whenever a
    file names another cluster (the target may have been re-registered meanwhile).
    """

    archive: WalArchive
    current: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def resolve(self, file_cluster: str | None, identity: dict | None) -> str:
        """The cluster to store a file under; registers the first cluster of a target.

        Raises SourceError for a file of another cluster than the registered one.
        """
        with self._lock:
            if self.current is None or (file_cluster and file_cluster != self.current):
                self.current = self.archive.current_cluster()
            if self.current is None and identity is not None:
                self.current = self.archive.register(identity, "wal-push").cluster
            if self.current is None:
                raise SourceError(
                    f"target {self.archive.target} has no registered cluster yet",
                    hint=f"'drbackup wal register {self.archive.target}' registers its server",
                )
            if file_cluster and file_cluster != self.current:
                _refuse_foreign(file_cluster, self.current, self.archive.target)
            return self.current


def _refuse_foreign(found: str, registered: str, target: str) -> None:
    (major, sysid), (reg_major, reg_sysid) = (
        parse_cluster_name(found),
        parse_cluster_name(registered),
    )
    if sysid != reg_sysid:
        raise SourceError(
            f"WAL of another cluster: system identifier {sysid}, target {target} archives "
            f"{reg_sysid}; refusing it",
            hint="two servers archive into one target, or the server was re-created (initdb, "
            f"pg_upgrade): 'drbackup wal register {target}' registers the new one",
        )
    raise SourceError(
        f"PostgreSQL {major} WAL, target {target} archives PostgreSQL {reg_major} WAL; refusing it",
        hint=f"after pg_upgrade, 'drbackup wal register {target}' registers the upgraded server",
    )


@dataclass(frozen=True)
class _Scanned:
    sha256: str
    size: int
    head: bytes


def _scan(path: Path) -> _Scanned:
    """Hash a WAL file and keep its first bytes; SourceError if it cannot be read."""
    sha, size, head = hashlib.sha256(), 0, b""
    try:
        with path.open("rb") as f:
            while block := f.read(_BLOCK):
                if size < _HEAD:
                    head += block[: _HEAD - size]
                sha.update(block)
                size += len(block)
    except OSError as exc:
        raise SourceError(f"cannot read WAL file {path}: {exc.strerror or exc}") from None
    return _Scanned(sha.hexdigest(), size, head)


def upload_wal_file(
    state: ClusterState, path: Path, *, name: str | None = None, upto: int | None = None
) -> PutResult:
    """Check and store the WAL file at ``path`` (named ``name``, default its file name).

    Segments and partials are checked against the target's cluster (registering it if the
    target has none); history and backup history files go to the registered cluster.
    ``upto``: for a ``.partial``, how many bytes hold WAL (default: the whole file).
    Idempotent (see :meth:`WalArchive.put`).  Raises SourceError for a foreign or malformed
    file, IntegrityError for other content under an archived name, StorageError.
    """
    wal_name = parse_wal_file_name(name or path.name)
    scanned = _scan(path)
    identity = None
    if wal_name.kind in (SEGMENT, PARTIAL):
        identity = _segment_identity(wal_name, scanned)
    cluster = state.resolve(
        cluster_name(identity["major"], identity["system_identifier"]) if identity else None,
        identity,
    )
    if wal_name.kind == PARTIAL and upto is None:
        upto = scanned.size
    return state.archive.put(
        cluster, wal_name.name, lambda: path.open("rb"), scanned.sha256, scanned.size, upto
    )


def _segment_identity(name: WalFileName, scanned: _Scanned) -> dict:
    what = f"WAL file {name.name}"
    header = read_segment_header(scanned.head, what)
    if header.major is None:
        raise SourceError(f"{what}: unknown WAL page magic 0x{header.magic:04X}")
    if scanned.size != header.segment_size:
        raise SourceError(
            f"{what}: {scanned.size} bytes, its header says segments are {header.segment_size}"
        )
    check_segment_header(
        header,
        name,
        system_identifier=header.system_identifier,
        major=header.major,
        segment_size=header.segment_size,
        what=what,
    )
    return {
        "system_identifier": header.system_identifier,
        "major": header.major,
        "wal_segment_size": header.segment_size,
    }


# --- fetching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """A WAL file written to disk by :func:`fetch_wal_file`."""

    name: str
    stored: StoredWal
    size: int
    segment_size: int | None = None  # from a segment's header (None: a history file)


def fetch_wal_file(
    archive: WalArchive,
    cluster: str,
    name: str,
    dest: Path,
    *,
    owner: tuple[int, int] | None = None,
) -> Fetched | None:
    """Write WAL file ``name`` of ``cluster`` to ``dest`` (atomically: temp file, rename;
    given to ``owner`` before it appears).

    A segment that is not archived is served from its ``.partial`` if there is one.  Returns
    None if neither exists.  Raises IntegrityError for a file that fails authentication, its
    tag or the segment checks (nothing is left at ``dest``), StorageError.
    """
    wal_name = parse_wal_file_name(name)
    stored = archive.choose(cluster, name)
    if stored is None and wal_name.kind == SEGMENT:
        stored = archive.choose(cluster, name + ".partial")
    if stored is None:
        return None
    with atomic_write(dest, mode=0o600, owner=owner) as out:
        size = archive.read(stored, out.write)
        out.flush()
        segment_size = None
        if wal_name.kind in (SEGMENT, PARTIAL):
            segment_size = _check_fetched(Path(out.name), wal_name, cluster, stored)
    return Fetched(name, stored, size, segment_size)


def _check_fetched(path: Path, name: WalFileName, cluster: str, stored: StoredWal) -> int:
    """Check the header of a fetched segment (IntegrityError); its segment size."""
    major, sysid = parse_cluster_name(cluster)
    with path.open("rb") as f:
        head = f.read(_HEAD)
    try:
        header = read_segment_header(head, stored.key)
        check_segment_header(
            header,
            name,
            system_identifier=sysid,
            major=major,
            segment_size=header.segment_size,
            what=stored.key,
        )
    except SourceError as exc:
        raise IntegrityError(exc.message) from None
    return header.segment_size
