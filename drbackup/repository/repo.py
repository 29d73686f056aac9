"""The repository: a header, immutable encrypted data objects, and manifests written last.

The repository is the source of truth: everything here works with only a storage backend
and the key.  A backup exists once its manifest exists; data objects without a manifest are
leftovers of an interrupted run and are never listed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from drbackup.codec import keys
from drbackup.codec.aead import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from drbackup.codec.pipeline import CodecSettings, ObjectRecord, encode_to_storage, open_decoded
from drbackup.errors import (
    IntegrityError,
    ObjectNotFoundError,
    RepositoryError,
    StorageError,
    StorageUnreachableError,
    UsageError,
)
from drbackup.repository import blobs
from drbackup.repository import header as hdr
from drbackup.repository.commit import BytesReader
from drbackup.repository.keyring import KeyRing, Secrets
from drbackup.repository.lease import LEASE_EXPIRY_S, LEASE_RENEW_S
from drbackup.repository.leftovers import (
    Leftover,
    find_leftovers,
    remove_leftover,
    remove_stray_temporaries,
)
from drbackup.repository.locks import LOCK_STALE_S, LockInfo, RepositoryLock, list_locks
from drbackup.repository.manifest import (
    MANIFEST_PREFIX,
    BackupRef,
    Item,
    Manifest,
    blob_key,
    data_prefix,
)
from drbackup.repository.reader import ItemReader
from drbackup.repository.reports import list_report_keys
from drbackup.repository.writer import BackupWriter
from drbackup.storage.base import ObjectInfo, link_warnings

DEFAULT_SEGMENT_SIZE = 4 << 30  # plaintext bytes per data object
_BLOB_ID_INFO = b"drbackup/v1/blob-id"


class Repository:
    """An opened repository.  Create with :meth:`init` or :meth:`open`."""

    def __init__(self, storage, header: dict, keyring: KeyRing, codec: CodecSettings | None = None):
        self._storage = storage
        self.header = header
        self.keyring = keyring
        self.id = header["repository_id"]
        chunk_size = header.get("chunk_size", DEFAULT_CHUNK_SIZE)
        # chunk_size is clear and unauthenticated, and only used for writing (every object
        # names its own): a damaged one leaves restores working and refuses new writes
        self._bad_chunk_size: str | None = None
        if not (type(chunk_size) is int and 0 < chunk_size <= MAX_CHUNK_SIZE):
            self._bad_chunk_size, chunk_size = repr(chunk_size)[:40], DEFAULT_CHUNK_SIZE
        self.codec = codec or CodecSettings(chunk_size=chunk_size)
        self.segment_size = DEFAULT_SEGMENT_SIZE
        self.lease_timing = (LEASE_RENEW_S, LEASE_EXPIRY_S)  # writers' (renew every, expiry)
        self._blob_id_key: bytes | None = None

    @property
    def url(self) -> str:
        return self._storage.url

    def storage_warnings(self) -> list[str]:
        """What the storage says about itself that the user should know (links in a local
        repository, which are never followed)."""
        return link_warnings(self._storage)

    def stored_bytes(self) -> int:
        """The size of every object in the repository (one listing)."""
        return sum(info.size for info in self._storage.list(""))

    def locked_until(self, key: str) -> datetime | None:
        """Until when Object Lock protects ``key``; None if unlocked, missing, or the
        storage has no such feature."""
        probe = getattr(self._storage, "locked_until", None)
        if probe is None:
            return None
        try:
            return probe(key)
        except ObjectNotFoundError:
            return None

    # --- creating and opening ---------------------------------------------------------

    @classmethod
    def init(
        cls,
        storage,
        secrets: Secrets,
        *,
        public_key_mode: bool = False,
        scrypt_params: dict | None = None,
    ) -> Repository:
        """Create a repository in ``storage``; refuse if one (or anything) is already there.

        Raises :class:`RepositoryError` if the location is not empty.
        """
        storage.prepare()
        storage.check()
        if storage.exists(hdr.HEADER_KEY):
            raise RepositoryError(f"{storage.url}: a repository already exists here")
        if next(iter(storage.list("")), None) is not None:
            raise RepositoryError(
                f"{storage.url}: location is not empty",
                hint="initialise an empty directory or prefix",
            )
        if secrets.passphrase is None and secrets.key_file is None:
            raise UsageError(
                "init needs a passphrase or key file to protect the repository key",
                hint="set DRBACKUP_PASSPHRASE or repository.encryption.passphrase_file/key_file",
            )
        if public_key_mode:
            master, public = keys.generate_x25519()
        else:
            master, public = keys.generate_x25519()[0], None  # 32 random bytes
        repo_hdr = hdr.new_header(
            "public-key" if public_key_mode else "symmetric", [], None, DEFAULT_CHUNK_SIZE
        )
        repo_id = bytes.fromhex(repo_hdr["repository_id"])
        repo_hdr["encryption"]["access_slots"].append(
            keys.new_access_slot(
                master,
                repo_id,
                passphrase=secrets.passphrase,
                key_file=secrets.key_file if secrets.passphrase is None else None,
                scrypt_params=scrypt_params,
            )
        )
        if public:
            repo_hdr["encryption"]["public_key"] = keys.b64(public)
        storage.put(hdr.HEADER_KEY, BytesReader(hdr.encode_header(repo_hdr)))
        return cls(storage, repo_hdr, KeyRing(repo_hdr, secrets))

    @classmethod
    def open(cls, storage, secrets: Secrets, *, background_key: bool = False) -> Repository:
        """Open an existing repository.

        Raises :class:`StorageUnreachableError` if storage is unreachable,
        :class:`RepositoryError` if there is no repository or its format is too new,
        :class:`EncryptionKeyError` for a wrong passphrase or key (with ``background_key``,
        where the key is first used: see :class:`KeyRing`).
        """
        storage.check()
        try:
            raw = storage.get(hdr.HEADER_KEY)
        except ObjectNotFoundError:
            raise RepositoryError(
                f"no repository at {storage.url}",
                hint="check repository.url (-c FILE or DRBACKUP_CONFIG); "
                "'drbackup init' makes a new repository",
            ) from None
        header = hdr.parse_header(raw, storage.url)
        return cls(storage, header, KeyRing(header, secrets, background=background_key))

    def add_access_slot(
        self,
        *,
        passphrase: str | None = None,
        key_file: bytes | None = None,
        label: str | None = None,
    ) -> dict:
        """Add a passphrase or key file that opens the master key (key rotation)."""
        self.keyring.require(read=True)
        master = self.keyring.master_key
        slot = keys.new_access_slot(
            master, bytes.fromhex(self.id), passphrase=passphrase, key_file=key_file, label=label
        )
        self.header["encryption"]["access_slots"].append(slot)
        self._write_header()
        return slot

    def remove_access_slot(self, slot_id: str, *, remove_current: bool = False) -> None:
        """Remove a slot.  UsageError for an unknown id, for the last slot, and (unless
        ``remove_current``) for the slot the configured secret opened the repository with."""
        slots = self.header["encryption"]["access_slots"]
        remaining = [s for s in slots if s.get("id") != slot_id]
        if len(remaining) == len(slots):
            raise UsageError(f"no access slot with id {slot_id}")
        if not remaining:
            raise UsageError(
                "refusing to remove the last access slot: the repository would be unreadable"
            )
        if slot_id == self.keyring.opened_slot and not remove_current:
            raise UsageError(
                f"refusing to remove access slot {slot_id}: the configured passphrase or key "
                "file opens the repository with it",
                hint="switch the config to another slot's secret first (drbackup key add, "
                "then update repository.encryption), or add --remove-current",
            )
        self.header["encryption"]["access_slots"] = remaining
        self._write_header()

    def _write_header(self) -> None:
        self._storage.put(hdr.HEADER_KEY, BytesReader(hdr.encode_header(self.header)))

    # --- writing ------------------------------------------------------------------------

    def new_backup(self, target: str, kind: str) -> BackupWriter:
        """Start a backup; data goes under keys nothing references until :meth:`commit`."""
        self._check_writable()
        return BackupWriter(self, target, kind)

    def _check_writable(self) -> None:
        if self._bad_chunk_size:
            raise RepositoryError(
                f"{self.url}: repository header has an invalid chunk_size "
                f"{self._bad_chunk_size} (damaged header); not writing to it",
                hint=f"restore {hdr.HEADER_KEY} from a copy, or set chunk_size to "
                f"{DEFAULT_CHUNK_SIZE} in it; restores still work",
            )

    # --- reading ------------------------------------------------------------------------

    def list_refs(self, target: str | None = None) -> list[BackupRef]:
        """Every committed backup (those with a manifest), oldest first, without decrypting."""
        prefix = f"{MANIFEST_PREFIX}{target}/" if target else MANIFEST_PREFIX
        refs = (BackupRef.from_key(info.key) for info in self._storage.list(prefix))
        return sorted((r for r in refs if r is not None), key=lambda r: (r.backup_id, r.target))

    def resolve(self, text: str, target: str | None = None) -> BackupRef:
        """A backup by id or unique id prefix (optionally ``target/id``).

        Raises :class:`UsageError` naming the problem when none or several match.
        """
        if "/" in text:
            target, text = text.split("/", 1)
        refs = [r for r in self.list_refs(target) if r.backup_id.startswith(text)]
        if not refs and target is not None:
            elsewhere = sorted({r.target for r in self.list_refs() if r.backup_id.startswith(text)})
            if elsewhere:
                raise UsageError(
                    f"backup {text} is not a backup of target {target}",
                    hint=f"it belongs to {', '.join(elsewhere)}: check the target name",
                )
        if not refs:
            raise UsageError(f"unknown backup id: {text}", hint="'drbackup list' shows the backups")
        if len({r.backup_id for r in refs}) > 1 or len(refs) > 1:
            names = ", ".join(f"{r.target}/{r.backup_id}" for r in refs[:5])
            raise UsageError(f"backup id {text} is ambiguous: {names}", hint="give more characters")
        return refs[0]

    def has_manifest(self, ref: BackupRef) -> bool:
        """True if the backup's manifest is stored (it still exists)."""
        return self._storage.exists(ref.manifest_key)

    def load_manifest(self, ref: BackupRef) -> Manifest:
        """Decrypt, authenticate and parse a manifest; check it is the one its key names."""
        self.keyring.require(read=True)
        try:
            with self._open(ref.manifest_key) as reader:
                data = b"".join(reader)
        except ObjectNotFoundError:
            raise UsageError(f"unknown backup id: {ref.backup_id}") from None
        try:
            doc = json.loads(data)
        except ValueError:
            raise IntegrityError(f"{ref.manifest_key}: manifest is not valid json") from None
        return Manifest.from_dict(doc, expected=ref, repository_id=self.id)

    def _open(self, key: str, expected: ObjectRecord | None = None, plain_sha=None):
        return open_decoded(
            self._storage, key, lambda h: self.keyring.data_key_for(h, key), expected, plain_sha
        )

    def open_item(self, item: Item) -> ItemReader:
        """A plaintext reader over an item's segments; checks every digest on the way."""
        self.keyring.require(read=True)
        return ItemReader(self, item)

    def verify(
        self, manifest: Manifest, progress: Callable[[int], None] | None = None
    ) -> list[str]:
        """Re-read every object: stored checksum, authentication, plaintext checksum.

        Returns the list of problems (empty when the backup is intact); never stops at the
        first, so one run names every damaged or missing object.
        """
        problems = []
        for item in manifest.items:
            try:
                with self.open_item(item) as reader:
                    for block in reader:
                        if progress:
                            progress(len(block))
            except StorageUnreachableError:
                raise  # nothing can be concluded about the backup: not damage
            except (IntegrityError, ObjectNotFoundError, StorageError) as exc:
                problems.append(f"{item.name}: {exc.message}")
        return problems

    # --- small encrypted documents (drill reports, snapshot indexes) --------------------

    def put_document(self, key: str, doc: dict) -> ObjectRecord:
        """Store a JSON document encrypted under a fresh data key; atomic like every put.

        The key names what it is (e.g. ``reports/<target>/<id>``); the content is bound to
        it, so a document moved to another key fails to authenticate.
        """
        self._check_writable()
        dk = self.keyring.new_data_key()
        body = json.dumps(doc, sort_keys=True).encode()
        return encode_to_storage(
            self._storage,
            key,
            iter([body]),
            slot_type=dk.slot_type,
            slot=dk.slot,
            data_key=dk.key,
            settings=self.codec,
        )

    def get_document(self, key: str) -> dict:
        """Decrypt and parse a document; ObjectNotFoundError / IntegrityError as for any object."""
        self.keyring.require(read=True)
        with self._open(key) as reader:
            data = b"".join(reader)
        try:
            return json.loads(data)
        except ValueError:
            raise IntegrityError(f"{key}: document is not valid json") from None

    # --- bucket-snapshot blobs (docs/buckets.md) ---------------------------------------

    def blob_id(self, content_sha256: str) -> str:
        """The id of the blob holding content whose SHA-256 is ``content_sha256`` (hex).

        ``HMAC-SHA256(blob id key, sha256 digest)`` as hex; the key is
        ``HKDF-SHA256(master key)`` in symmetric mode and ``HKDF-SHA256(public key)`` in
        public-key mode (writers hold no secret there; see docs/buckets.md for what that
        reveals).  Raises ConfigError when no key able to write is configured.
        """
        if self._blob_id_key is None:
            self.keyring.require(write=True)
            ikm = (
                self.keyring.master_key
                if self.keyring.mode == "symmetric"
                else self.keyring.public_key
            )
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_BLOB_ID_INFO)
            self._blob_id_key = hkdf.derive(ikm)
        digest = bytes.fromhex(content_sha256)
        return hmac.new(self._blob_id_key, digest, hashlib.sha256).hexdigest()

    def put_blob(self, blob_id: str, blocks, data_key, settings: CodecSettings | None = None):
        """Store a blob (encrypted under ``data_key``, a writer's); its ObjectRecord."""
        return blobs.put_blob(self._storage, blob_id, blocks, data_key, settings or self.codec)

    def blob_oracle(self, limit: int = blobs.ORACLE_LIMIT) -> blobs.BlobOracle:
        """Answers "must this blob be uploaded?" for one snapshot (see blobs.py)."""
        return blobs.BlobOracle(self._storage, limit)

    def list_blobs(self) -> Iterator[tuple[ObjectInfo, str]]:
        """``(object, blob id)`` of every blob."""
        return blobs.list_blobs(self._storage)

    def delete_blob(self, key: str) -> None:
        """Delete a blob listed by :meth:`list_blobs` (gc only); gone already is fine."""
        blobs.delete_blob(self._storage, key)

    def open_blob(self, blob_id: str):
        """A plaintext reader of a blob; authenticates every chunk (the caller checks sha256).

        Raises ObjectNotFoundError if the blob is missing, IntegrityError if it is damaged.
        """
        self.keyring.require(read=True)
        return self._open(blob_key(blob_id))

    # --- locks (repository/locks.py) and drill reports (repository/reports.py) ----------

    def lock(self, kind: str, lock_id: str, **options) -> RepositoryLock:
        """The repository lock ``locks/<kind>-<lock_id>`` (not taken yet: ``acquire``)."""
        return RepositoryLock(self, kind, lock_id, **options)

    def list_locks(self, now: float, stale_after: float = LOCK_STALE_S) -> list[LockInfo]:
        """Every repository lock, aged against ``now`` (the storage's clock)."""
        return list_locks(self._storage, now, stale_after)

    def report_keys(self, target: str | None = None, *, newest_first=False) -> list[str]:
        """Keys of the drill reports (of ``target``), by drill id."""
        return list_report_keys(self._storage, target, newest_first=newest_first)

    # --- leftovers of interrupted writes (repository/leftovers.py) ----------------------

    def find_leftovers(self, target: str, committed: set[str] | None = None) -> list[Leftover]:
        """Data, temporaries and leases of ``target`` that no committed backup owns (and
        leases of committed ones); ``committed``: the target's backup ids, listed if None."""
        if committed is None:
            committed = {ref.backup_id for ref in self.list_refs(target)}
        return find_leftovers(self._storage, target, committed)

    def remove_leftover(self, left: Leftover, now: datetime, grace: timedelta) -> str:
        """Remove a leftover unless its writer turns out alive or committed; the action."""
        return remove_leftover(self._storage, left, now, grace)

    def remove_stray_temporaries(
        self, now: datetime, grace: timedelta, *, dry_run: bool, keep_blobs: Callable[[], bool]
    ) -> list[dict]:
        """Temporaries of killed writes outside ``data/`` (local storage only): removed once
        older than ``grace`` (see repository/leftovers.py); ``{key, age_s, action}`` each."""
        return remove_stray_temporaries(
            self._storage, now, grace, dry_run=dry_run, keep_blobs=keep_blobs
        )

    # --- deleting -----------------------------------------------------------------------

    def delete_backup(self, ref: BackupRef) -> None:
        """Manifest first (the backup stops existing), data after: crash-safe in that order."""
        self._storage.delete(ref.manifest_key)
        for info in list(self._storage.list(data_prefix(ref.target, ref.backup_id))):
            self._storage.delete(info.key)
