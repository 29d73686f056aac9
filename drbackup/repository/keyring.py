"""What this process holds of the repository's keys, and what it can do with them."""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass

from drbackup.codec import keys
from drbackup.codec.aead import ObjectHeader
from drbackup.errors import ConfigError, DrbackupError, EncryptionKeyError
from drbackup.threads import Background


@dataclass(frozen=True)
class Secrets:
    """Key material from the configuration; any subset may be present."""

    passphrase: str | None = None
    key_file: bytes | None = None  # 32 raw bytes
    public_key: bytes | None = None  # 32 raw bytes (pinned by the writer's config)
    private_key: bytes | None = None  # 32 raw bytes

    def __repr__(self) -> str:  # never print secrets
        held = [
            n for n in ("passphrase", "key_file", "public_key", "private_key") if getattr(self, n)
        ]
        return f"Secrets(holding={held})"


class KeyRing:
    """Opens a repository's keys from :class:`Secrets`; wraps and unwraps data keys.

    In symmetric mode both directions need the master key.  In public-key mode writing needs
    only the public key, reading needs the private key (the master key, or a private key
    file).

    With ``background=True`` a passphrase is stretched (scrypt, ~0.2 s) in a helper thread
    while the caller goes on (starting pg_dump, checking a restore target): the first use of
    a key waits for it, and a wrong passphrase raises there instead of here.
    """

    def __init__(self, header: dict, secrets: Secrets, *, background: bool = False):
        self.repo_id = bytes.fromhex(header["repository_id"])
        enc = header["encryption"]
        self.mode = enc["mode"]
        self._header_public = (
            keys.unb64(enc["public_key"], "public key") if enc.get("public_key") else None
        )
        self._secrets = secrets
        self._holds_master = secrets.passphrase is not None or secrets.key_file is not None
        self._opened_slot: str | None = None
        slots = enc["access_slots"]
        self._master: bytes | None | Background[bytes | None]
        if background and secrets.passphrase is not None:
            self._master = Background(
                lambda: self._open_master(slots, secrets), "drbackup-key-derivation"
            )
        else:
            self._master = self._open_master(slots, secrets)
            self._check_keys(self._master)
        self._cache: dict[bytes, bytes] = {}
        self._resolving = threading.Lock()

    @property
    def master_key(self) -> bytes | None:
        """The master key (waits for a background derivation; raises if it failed)."""
        if isinstance(self._master, Background):
            with self._resolving:  # several threads may ask first: resolve once
                if isinstance(self._master, Background):
                    try:
                        master = self._master.result()
                    except DrbackupError as exc:  # a fresh one per use: threads may share it
                        raise type(exc)(exc.message, hint=exc.hint) from None
                    self._check_keys(master)  # raises, and again on the next use
                    self._master = master
        return self._master

    @property
    def opened_slot(self) -> str | None:
        """The id of the access slot the configured passphrase or key file opened (None
        when the configuration holds neither); waits for a background derivation."""
        self.master_key  # noqa: B018 - waits for a background derivation
        return self._opened_slot

    def wait(self) -> None:
        """Wait until a background derivation has finished, whatever its outcome (its error
        is raised where a key is used)."""
        if isinstance(self._master, Background):
            self._master.join()

    @property
    def private_key(self) -> bytes | None:
        self.master_key  # noqa: B018 - waits for a background derivation
        return self._private

    @property
    def public_key(self) -> bytes | None:
        self.master_key  # noqa: B018 - waits for a background derivation
        return self._public

    def _check_keys(self, master: bytes | None) -> None:
        self._private = self._private_key(self._secrets, master)
        self._public = self._public_key(self._secrets)

    def _open_master(self, slots: list[dict], secrets: Secrets) -> bytes | None:
        if secrets.passphrase is None and secrets.key_file is None:
            return None
        master, self._opened_slot = keys.find_master_key(
            slots,
            self.repo_id,
            passphrase=secrets.passphrase,
            key_file=secrets.key_file if secrets.passphrase is None else None,
        )
        return master

    def _private_key(self, secrets: Secrets, master: bytes | None) -> bytes | None:
        if self.mode != "public-key":
            return None
        priv = secrets.private_key or master
        if priv is not None and keys.public_from_private(priv) != self._header_public:
            raise EncryptionKeyError("the private key does not belong to this repository")
        return priv

    def _public_key(self, secrets: Secrets) -> bytes | None:
        if self.mode != "public-key":
            return None
        if secrets.public_key is not None:
            # The writer's pinned key must match the header: a swapped header would
            # otherwise make us encrypt to an attacker's key.
            if not hmac.compare_digest(secrets.public_key, self._header_public):
                raise EncryptionKeyError(
                    "the configured public key does not match the repository's",
                    hint="check repository.encryption.public_key",
                )
            return secrets.public_key
        if self._private is not None:
            return self._header_public
        return None

    @property
    def can_write(self) -> bool:
        if self.mode == "symmetric":
            return self._holds_master  # without waiting for a background derivation
        return self.public_key is not None

    @property
    def can_read(self) -> bool:
        if self.mode == "symmetric":
            return self._holds_master
        return self.private_key is not None

    def require(self, write: bool = False, read: bool = False) -> None:
        """Raise :class:`ConfigError` / :class:`EncryptionKeyError` if a needed key is absent."""
        if (write and not self.can_write) or (
            read and not self.can_read and self.mode == "symmetric"
        ):
            raise ConfigError(
                "no repository key configured",
                hint="set repository.encryption.passphrase_file or key_file, or DRBACKUP_PASSPHRASE",
            )
        if read and not self.can_read:
            raise EncryptionKeyError(
                "cannot read: this configuration holds only the repository public key",
                hint="reading needs the private key: set the passphrase, key_file or "
                "repository.encryption.private_key_file",
            )

    def new_data_key(self) -> keys.DataKey:
        self.require(write=True)
        if self.mode == "symmetric":
            return keys.wrap_data_key_symmetric(self.master_key, self.repo_id)
        return keys.wrap_data_key_public(self.public_key, self.repo_id)

    def data_key_for(self, header: ObjectHeader, object_key: str) -> bytes:
        """The data key of an object, from its header's slot (cached per slot)."""
        cached = self._cache.get(header.slot)
        if cached is None:
            cached = keys.unwrap_data_key(
                header.slot_type,
                header.slot,
                self.repo_id,
                master_key=self.master_key,
                private_key=self.private_key,
                object_key=object_key,
            )
            self._cache[header.slot] = cached
        return cached
