"""The WAL archive of a target: every storage key under ``wal/``, and the verbs over them.

Layout (docs/repository-format.md, "Write-ahead log archive")::

    wal/<target>/clusters/<YYYYmmddTHHMMSSZ>-<cluster>             identity document
    wal/<target>/<cluster>/<TTTTTTTTXXXXXXXX>/<segment>-<tag>      a complete segment
    wal/<target>/<cluster>/<TTTTTTTTXXXXXXXX>/<segment>.partial.<upto>-<tag>
    wal/<target>/<cluster>/<TTTTTTTTXXXXXXXX>/<segment>.<offset>.backup-<tag>
    wal/<target>/<cluster>/history/<TTTTTTTT>.history-<tag>

One object per WAL file, stored with one atomic put (visible only when complete), its content
bound to its key like every object, and its name tagged with a keyed digest of the content,
so that "the same file again" and "another file under this name" are told apart from a
listing.  This module knows the names' shapes (they are the layout); what is inside a WAL
file is for ``sources/postgres/wal.py`` and the actions to check.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from drbackup.codec.pipeline import encode_to_storage, open_decoded
from drbackup.errors import IntegrityError, ObjectNotFoundError, UsageError

WAL_PREFIX = "wal/"
IDENTITY_FORMAT = "drbackup-wal-cluster"
IDENTITY_VERSION = 1
_TAG_INFO = b"drbackup/v1/wal-tag"
_TAG_HEX = 16
_CLUSTER_RE = re.compile(r"^pg(\d{1,3})-(\d{1,20})$")
_REGISTRATION_RE = re.compile(r"^(\d{8}T\d{6}Z)-(pg\d{1,3}-\d{1,20})$")
_NAME_RE = re.compile(
    r"^(?P<seg>[0-9A-F]{24})(?:\.partial\.(?P<upto>[0-9a-f]{8})|\.(?P<off>[0-9A-F]{8})\.backup)?"
    r"-(?P<tag>[0-9a-f]{16})$"
)
_HISTORY_RE = re.compile(r"^(?P<tli>[0-9A-F]{8})\.history-(?P<tag>[0-9a-f]{16})$")
_PLAIN_RE = re.compile(r"^[0-9A-F]{8}\.history$|^[0-9A-F]{24}(?:\.partial|\.[0-9A-F]{8}\.backup)?$")


def cluster_name(major: int, system_identifier: int) -> str:
    """``pg<major>-<system identifier>``: the directory of one cluster's WAL."""
    return f"pg{major}-{system_identifier}"


def parse_cluster_name(text: str) -> tuple[int, int]:
    """``(major, system_identifier)``; raises UsageError for a malformed name."""
    match = _CLUSTER_RE.match(text)
    if not match:
        raise UsageError(f"invalid cluster name {text!r} (expected pg<major>-<system id>)")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class Registration:
    """A cluster registered for a target (``clusters/<when>-<cluster>``)."""

    key: str
    registered: str  # YYYYmmddTHHMMSSZ
    cluster: str


@dataclass(frozen=True, order=True)
class StoredWal:
    """A WAL file in the archive, known from its key alone.

    ``name`` is the file name PostgreSQL uses (``...partial`` without the ``upto`` field);
    ``upto`` is set for partial segments: how many of its bytes hold WAL.
    """

    name: str
    upto: int | None
    tag: str
    key: str
    size: int = 0
    mtime: float = 0.0

    @property
    def is_history(self) -> bool:
        return self.name.endswith(".history")

    @property
    def is_partial(self) -> bool:
        return self.name.endswith(".partial")

    @property
    def is_segment(self) -> bool:
        return len(self.name) == 24


def wal_file_key(target: str, cluster: str, name: str, tag: str, upto: int | None = None) -> str:
    """The key of WAL file ``name`` (a PostgreSQL file name) with content tag ``tag``.

    Raises UsageError for a name that is not a WAL file name, or ``upto`` given for anything
    but a ``.partial``.
    """
    if not _PLAIN_RE.match(name):
        raise UsageError(f"not a WAL file name: {name!r}")
    if name.endswith(".history"):
        return f"{cluster_prefix(target, cluster)}history/{name}-{tag}"
    if name.endswith(".partial"):
        if upto is None:
            raise UsageError(f"{name}: a partial segment needs its length")
        name = f"{name}.{upto:08x}"
    elif upto is not None:
        raise UsageError(f"{name}: only partial segments have a length")
    return f"{cluster_prefix(target, cluster)}{name[:16]}/{name}-{tag}"


def parse_wal_key(key: str, size: int = 0, mtime: float = 0.0) -> StoredWal | None:
    """The :class:`StoredWal` a key names, or None if it is not a WAL file key."""
    leaf = key.rsplit("/", 1)[-1]
    match = _HISTORY_RE.match(leaf)
    if match:
        return StoredWal(leaf.rsplit("-", 1)[0], None, match.group("tag"), key, size, mtime)
    match = _NAME_RE.match(leaf)
    if not match:
        return None
    seg, upto, off = match.group("seg"), match.group("upto"), match.group("off")
    name = seg + (".partial" if upto else f".{off}.backup" if off else "")
    return StoredWal(name, int(upto, 16) if upto else None, match.group("tag"), key, size, mtime)


def target_prefix(target: str) -> str:
    return f"{WAL_PREFIX}{target}/"


def cluster_prefix(target: str, cluster: str) -> str:
    return f"{WAL_PREFIX}{target}/{cluster}/"


def _segment_dir(name: str) -> str:
    return name[:16]


@dataclass(frozen=True)
class PutResult:
    stored: StoredWal
    created: bool  # False: the same content was already there


class WalArchive:
    """The WAL of one target in a repository (see the module docstring).

    Reading needs a key that reads; writing (public-key mode included) a key that writes.
    """

    def __init__(self, repo, target: str):
        self.repo, self.target = repo, target
        self._tag_key: bytes | None = None

    @property
    def storage(self):
        return self.repo._storage

    # --- clusters ---------------------------------------------------------------------------

    def registrations(self) -> list[Registration]:
        """The clusters registered for this target, oldest first (no decryption)."""
        prefix = f"{target_prefix(self.target)}clusters/"
        found = []
        for info in self.storage.list(prefix):
            match = _REGISTRATION_RE.match(info.key[len(prefix) :])
            if match:
                found.append(Registration(info.key, match.group(1), match.group(2)))
        return sorted(found, key=lambda r: (r.registered, r.cluster))

    def current_cluster(self) -> str | None:
        """The cluster registered last: the one whose WAL is archived now."""
        regs = self.registrations()
        return regs[-1].cluster if regs else None

    def register(self, identity: dict, by: str) -> Registration:
        """Record that this target now archives the cluster ``identity`` describes.

        ``identity``: ``system_identifier`` (int), ``major``, ``wal_segment_size``.  Written as
        an encrypted document; its key alone says which cluster and when.
        """
        cluster = cluster_name(identity["major"], identity["system_identifier"])
        now = datetime.now(UTC)
        stamp = now.strftime("%Y%m%dT%H%M%SZ")
        key = f"{target_prefix(self.target)}clusters/{stamp}-{cluster}"
        doc = {
            "format": IDENTITY_FORMAT,
            "version": IDENTITY_VERSION,
            "target": self.target,
            "cluster": cluster,
            "system_identifier": str(identity["system_identifier"]),
            "major": identity["major"],
            "wal_segment_size": identity["wal_segment_size"],
            "registered_at": now.isoformat().replace("+00:00", "Z"),
            "registered_by": by,
        }
        self.repo.put_document(key, doc)
        return Registration(key, stamp, cluster)

    def identity(self, registration: Registration) -> dict:
        """The decrypted identity document; IntegrityError if it is not the one its key names."""
        doc = self.repo.get_document(registration.key)
        if doc.get("format") != IDENTITY_FORMAT or doc.get("cluster") != registration.cluster:
            raise IntegrityError(f"{registration.key}: not the identity of {registration.cluster}")
        return doc

    def clusters(self) -> list[str]:
        """Every cluster with a registration, oldest registration first."""
        return list(dict.fromkeys(r.cluster for r in self.registrations()))

    # --- named restore points (drbackup mark) ------------------------------------------------

    def put_mark(self, cluster: str, doc: dict) -> str:
        """Record a named restore point (encrypted: its name is the user's); returns its key.

        ``wal/<target>/<cluster>/marks/<YYYYmmddTHHMMSSZ>-<6 hex>``."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        key = f"{cluster_prefix(self.target, cluster)}marks/{stamp}-{os.urandom(3).hex()}"
        self.repo.put_document(key, {"format": "drbackup-wal-mark", "version": 1, **doc})
        return key

    def marks(self, cluster: str) -> list[dict]:
        """Every recorded restore point of ``cluster``, oldest first (decrypts them)."""
        prefix = f"{cluster_prefix(self.target, cluster)}marks/"
        found = []
        for info in self.storage.list(prefix):
            try:
                found.append(self.repo.get_document(info.key))
            except ObjectNotFoundError:
                continue
        return found

    # --- tags ---------------------------------------------------------------------------------

    def tag(self, sha256_hex: str) -> str:
        """The content tag of a file whose SHA-256 is ``sha256_hex``."""
        if self._tag_key is None:
            self.repo.keyring.require(write=True)
            keyring = self.repo.keyring
            ikm = keyring.master_key if keyring.mode == "symmetric" else keyring.public_key
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_TAG_INFO)
            self._tag_key = hkdf.derive(ikm)
        mac = hmac.new(self._tag_key, bytes.fromhex(sha256_hex), hashlib.sha256)
        return mac.hexdigest()[:_TAG_HEX]

    # --- listing --------------------------------------------------------------------------------

    def find(self, cluster: str, name: str) -> list[StoredWal]:
        """Every stored version of WAL file ``name`` (normally one; partials may have several)."""
        upto = 0 if name.endswith(".partial") else None
        key = wal_file_key(self.target, cluster, name, "0" * _TAG_HEX, upto)
        # the key up to the tag (or, for a partial, up to its length field)
        prefix = key[: key.rindex(".") + 1] if upto is not None else key[:-_TAG_HEX]
        return [
            stored
            for info in self.storage.list(prefix)
            if (stored := parse_wal_key(info.key, info.size, info.mtime)) and stored.name == name
        ]

    def list_files(self, cluster: str, start: str = "") -> Iterator[StoredWal]:
        """Every WAL file of ``cluster`` (history files first), in key order; segments from
        the directory of ``start`` (a file name) on, if given."""
        prefix = cluster_prefix(self.target, cluster)
        yield from self._listed(f"{prefix}history/")
        base = f"{prefix}{_segment_dir(start)}" if start else prefix
        for stored in self._listed(base):
            if not stored.is_history:
                yield stored

    def _listed(self, prefix: str) -> Iterator[StoredWal]:
        for info in self.storage.list(prefix):
            stored = parse_wal_key(info.key, info.size, info.mtime)
            if stored is not None:
                yield stored

    # --- writing and reading ------------------------------------------------------------------

    def put(
        self,
        cluster: str,
        name: str,
        open_plain: Callable[[], BinaryIO],
        sha256_hex: str,
        size: int,
        upto: int | None = None,
    ) -> PutResult:
        """Store WAL file ``name`` whose plaintext (``size`` bytes, SHA-256 ``sha256_hex``)
        ``open_plain()`` reads, unless the same content is already stored.

        Idempotent: the same name with the same content is a success (``created`` False).
        Raises IntegrityError for the same name (and, for partials, the same length) with
        other content, and what storage raises.  A longer partial supersedes shorter ones,
        which are removed once it is stored.
        """
        tag = self.tag(sha256_hex)
        existing = self.find(cluster, name)
        same = [s for s in existing if s.upto == upto]
        if any(s.tag == tag for s in same):
            return PutResult(next(s for s in same if s.tag == tag), False)
        if same:
            raise IntegrityError(
                f"WAL file {name} is already archived for target {self.target} with different "
                "content; refusing to replace it",
                hint="two servers archive into one target (check archive_command's target), "
                "or the stored copy is damaged ('drbackup wal check')",
            )
        key = wal_file_key(self.target, cluster, name, tag, upto)
        dk = self.repo.keyring.new_data_key()
        with open_plain() as plain:
            record = encode_to_storage(
                self.storage,
                key,
                iter(lambda: plain.read(1 << 20), b""),
                slot_type=dk.slot_type,
                slot=dk.slot,
                data_key=dk.key,
                settings=self.repo.codec,
            )
        if record.size != size or record.sha256 != sha256_hex:
            self.storage.delete(key)
            raise IntegrityError(f"WAL file {name} changed while it was being archived")
        for older in existing:  # only shorter partials can be left here
            if older.upto is not None and upto is not None and older.upto < upto:
                self.storage.delete(older.key)
        return PutResult(StoredWal(name, upto, tag, key, record.stored_size), True)

    def choose(self, cluster: str, name: str) -> StoredWal | None:
        """The stored version of ``name`` to restore: the only one, or for partials the
        longest.  None if there is none.  Raises IntegrityError if versions conflict."""
        found = self.find(cluster, name)
        if not found:
            return None
        best = max(found, key=lambda s: s.upto or 0)
        rivals = [s for s in found if s.upto == best.upto and s.tag != best.tag]
        if rivals:
            raise IntegrityError(
                f"WAL file {name} is archived twice with different content "
                f"({best.key}, {rivals[0].key})",
                hint="two servers archived into one target: remove the foreign copy",
            )
        return best

    def read(self, stored: StoredWal, sink: Callable[[bytes], None]) -> int:
        """Decrypt ``stored`` into ``sink`` block by block; check its tag at the end.

        Returns the plaintext size.  Raises ObjectNotFoundError if it vanished,
        IntegrityError if it does not authenticate or its content is not what its tag says
        (in that case ``sink`` has received bytes that must be thrown away).
        """
        self.repo.keyring.require(read=True)
        sha = hashlib.sha256()
        size = 0
        with open_decoded(  # the reader hashes the plaintext into ``sha`` (once, in a thread)
            self.storage,
            stored.key,
            lambda h: self.repo.keyring.data_key_for(h, stored.key),
            plain_sha=sha,
        ) as reader:
            for block in reader:
                size += len(block)
                sink(block)
        if not hmac.compare_digest(self.tag(sha.hexdigest()), stored.tag):
            raise IntegrityError(f"{stored.key}: content does not match its tag (damaged)")
        return size

    def delete(self, stored: StoredWal) -> None:
        self.storage.delete(stored.key)

    def remove_partials(self, cluster: str, segment: str) -> int:
        """Delete the stored ``.partial`` versions of ``segment`` once the complete segment
        is stored (it holds all they hold); returns how many went.  Nothing goes while the
        segment itself is not listed."""
        if not any(s.is_segment for s in self.find(cluster, segment)):
            return 0
        partials = self.find(cluster, f"{segment}.partial")
        for stored in partials:
            self.storage.delete(stored.key)
        return len(partials)

    def exists(self, stored: StoredWal) -> bool:
        try:
            self.storage.stat(stored.key)
        except ObjectNotFoundError:
            return False
        return True
