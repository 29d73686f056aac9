"""What this process holds of the repository's keys, and what it can do with them."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from drbackup.codec import keys
from drbackup.codec.aead import ObjectHeader
from drbackup.errors import ConfigError, EncryptionKeyError


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
    """

    def __init__(self, header: dict, secrets: Secrets):
        self.repo_id = bytes.fromhex(header["repository_id"])
        enc = header["encryption"]
        self.mode = enc["mode"]
        self._header_public = (
            keys.unb64(enc["public_key"], "public key") if enc.get("public_key") else None
        )
        self.master_key = self._open_master(enc["access_slots"], secrets)
        self.private_key = self._private_key(secrets)
        self.public_key = self._public_key(secrets)
        self._cache: dict[bytes, bytes] = {}

    def _open_master(self, slots: list[dict], secrets: Secrets) -> bytes | None:
        if secrets.passphrase is None and secrets.key_file is None:
            return None
        return keys.open_master_key(
            slots,
            self.repo_id,
            passphrase=secrets.passphrase,
            key_file=secrets.key_file if secrets.passphrase is None else None,
        )

    def _private_key(self, secrets: Secrets) -> bytes | None:
        if self.mode != "public-key":
            return None
        priv = secrets.private_key or self.master_key
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
        if self.private_key is not None:
            return self._header_public
        return None

    @property
    def can_write(self) -> bool:
        return (
            self.master_key is not None if self.mode == "symmetric" else self.public_key is not None
        )

    @property
    def can_read(self) -> bool:
        return (
            self.master_key is not None
            if self.mode == "symmetric"
            else self.private_key is not None
        )

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
