"""The key hierarchy: passphrase / key file → master key → per-backup data key.

* The **master key** (32 random bytes, made by ``drbackup init``) never leaves memory in
  clear.  The repository header stores it wrapped once per *access slot*: a passphrase
  (scrypt, memory-hard) or a key file (HKDF over 32 random bytes).  Adding or removing an
  access slot rotates the passphrase without re-encrypting data.
* In **symmetric** mode the master key wraps each backup's random **data key** (slot
  type 1).  In **public-key** mode the master key *is* an X25519 private key; writers hold
  only its public key and wrap data keys to it by ECIES (slot type 2), so they can back up
  but never read.

Every wrap is AES-256-GCM with the repository id in the associated data, so keys from one
repository cannot be spliced into another.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from drbackup.errors import ConfigError, EncryptionKeyError, IntegrityError, RepositoryError

SLOT_SYMMETRIC = 1
SLOT_X25519 = 2
KEY_SIZE = 32
NONCE_SIZE = 12
# scrypt cost: N=2^16, r=8 → 64 MiB of memory per derivation (~0.2-0.4 s).
DEFAULT_SCRYPT = {"n": 1 << 16, "r": 8, "p": 1}
# The most a slot may ask for (docs/crypto.md): N=2^20, r=8, p=1, the scrypt paper's
# file-encryption setting and libsodium's "sensitive" one: 1 GiB and a few seconds.  The
# header is clear JSON; without a bound, a planted slot could make every command take
# minutes and gigabytes before any key is tried.
MAX_SCRYPT_MEMORY = 128 * 8 * (1 << 20)  # bytes: 128 * r * N
MAX_SCRYPT_WORK = 8 * (1 << 20)  # N * r * p
MAX_SCRYPT_LOG_N = 20  # what `drbackup init --scrypt-log-n` accepts at most (with r=8, p=1)
LABEL_MAX = 64
_HASHLIB_MAXMEM = (1 << 31) - 1  # hashlib.scrypt takes at most INT_MAX
_DK_AAD = b"drbackup/v1/data-key\x00"
_MK_AAD = b"drbackup/v1/master-key\x00"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (ValueError, TypeError):
        raise ConfigError(f"{what} is not valid base64") from None


# --- access slots: wrapping the master key ---------------------------------------------


def scrypt_over_limit(kdf) -> str | None:
    """Why the scrypt parameters in ``kdf`` exceed the bound, or None if they do not.

    Malformed parameters are not judged here (the derivation reports them as damage).
    """
    try:
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
    except (KeyError, TypeError, ValueError):
        return None
    memory = 128 * r * n
    if memory > MAX_SCRYPT_MEMORY or n * r * p > MAX_SCRYPT_WORK:
        return (
            f"scrypt n={n}, r={r}, p={p} ({memory >> 20} MiB) is above the limit of "
            f"n*r*p {MAX_SCRYPT_WORK} and {MAX_SCRYPT_MEMORY >> 20} MiB"
        )
    return None


def _scrypt_cost(slot: dict) -> int:
    """The work a slot's derivation costs (0 for a key file): cheaper slots are tried first."""
    try:
        kdf = slot["kdf"]
        return int(kdf["n"]) * int(kdf["r"]) * int(kdf["p"]) if kdf["name"] == "scrypt" else 0
    except (KeyError, TypeError, ValueError):
        return 0


def derive_passphrase_kek(passphrase: str, kdf: dict) -> bytes:
    """Key-encryption key from a passphrase with the scrypt parameters stored in ``kdf``.

    Raises ValueError for parameters scrypt refuses or above the bound.
    """
    if reason := scrypt_over_limit(kdf):
        raise ValueError(reason)
    salt = unb64(kdf["salt"], "kdf salt")
    n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
    secret = passphrase.encode("utf-8")
    # OpenSSL's scrypt through hashlib: the same function as cryptography's Scrypt, but it
    # releases the GIL, so a backup or restore derives the key while it starts pg_dump or
    # checks its target.  Its working memory is 128*r*(n+p+2) bytes.
    maxmem = 128 * r * (n + p + 2) + (1 << 20)
    if maxmem <= _HASHLIB_MAXMEM:
        return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=KEY_SIZE)
    return Scrypt(salt=salt, length=KEY_SIZE, n=n, r=r, p=p).derive(secret)


def derive_keyfile_kek(key_material: bytes, kdf: dict) -> bytes:
    """Key-encryption key from a key file's 32 random bytes (HKDF; no stretching needed)."""
    salt = unb64(kdf["salt"], "kdf salt")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=b"drbackup/v1/keyfile")
    return hkdf.derive(key_material)


def new_access_slot(
    master_key: bytes,
    repo_id: bytes,
    *,
    passphrase: str | None = None,
    key_file: bytes | None = None,
    scrypt_params: dict | None = None,
    label: str | None = None,
) -> dict:
    """An access slot (JSON-able) that opens ``master_key`` with a passphrase or key file.

    It records when it was made and, if given, a ``label`` (clear text in the header).
    Raises ConfigError for scrypt parameters above the bound or a label that is not one
    short printable line.
    """
    label = check_label(label)
    if passphrase is not None and (reason := scrypt_over_limit(scrypt_params or DEFAULT_SCRYPT)):
        raise ConfigError(reason)
    salt = b64(os.urandom(16))
    if passphrase is not None:
        kdf = {"name": "scrypt", "salt": salt, **(scrypt_params or DEFAULT_SCRYPT)}
        kek, kind = derive_passphrase_kek(passphrase, kdf), "passphrase"
    elif key_file is not None:
        kdf = {"name": "hkdf-sha256", "salt": salt}
        kek, kind = derive_keyfile_kek(key_file, kdf), "key_file"
    else:
        raise ValueError("an access slot needs a passphrase or a key file")
    nonce = os.urandom(NONCE_SIZE)
    wrapped = nonce + AESGCM(kek).encrypt(nonce, master_key, _MK_AAD + repo_id)
    slot = {"id": b64(os.urandom(6)), "kind": kind, "kdf": kdf, "wrapped_key": b64(wrapped)}
    slot["created_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    if label:
        slot["label"] = label
    return slot


def check_label(label: str | None) -> str | None:
    """``label`` stripped (None if empty); ConfigError unless one printable line of at most
    :data:`LABEL_MAX` characters."""
    label = (label or "").strip() or None
    if label is not None and (len(label) > LABEL_MAX or not label.isprintable()):
        raise ConfigError(
            f"an access slot label must be one printable line of at most {LABEL_MAX} characters",
            hint="labels are stored in clear in the repository header: name the holder, "
            "never the secret",
        )
    return label


def open_master_key(
    slots: list[dict], repo_id: bytes, *, passphrase: str | None, key_file: bytes | None
) -> bytes:
    """The master key from the first slot that opens (see :func:`find_master_key`)."""
    return find_master_key(slots, repo_id, passphrase=passphrase, key_file=key_file)[0]


def find_master_key(
    slots: list[dict], repo_id: bytes, *, passphrase: str | None, key_file: bytes | None
) -> tuple[bytes, str]:
    """Try the slots of the matching kind, cheapest first; return (master key, slot id).

    Slots whose scrypt parameters exceed the bound are never derived.  Raises
    :class:`EncryptionKeyError` when no slot opens with what was given, and
    :class:`RepositoryError` when none opens and some slot is damaged (its kdf parameters
    or wrapped key cannot be read) or over the bound: the header is clear JSON, so damage
    and planted slots show up here.
    """
    kind = "passphrase" if passphrase is not None else "key_file"
    candidates = [s for s in slots if isinstance(s, dict) and s.get("kind") == kind]
    what = kind.replace("_", " ")
    if not candidates:
        raise EncryptionKeyError(
            f"the repository has no {what} access slot",
            hint="use the passphrase or key file the repository was initialised with",
        )
    over = [(s, r) for s in candidates if (r := scrypt_over_limit(s.get("kdf") or {}))]
    usable = sorted((s for s in candidates if all(s is not o for o, _ in over)), key=_scrypt_cost)
    damaged = []
    for slot in usable:
        try:
            kek, wrapped = _slot_kek(slot, kind, passphrase, key_file)
        except (ConfigError, KeyError, TypeError, ValueError, MemoryError):
            damaged.append(str(slot.get("id", "?")))
            continue
        try:
            master = AESGCM(kek).decrypt(
                wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], _MK_AAD + repo_id
            )
        except InvalidTag:
            continue
        return master, str(slot.get("id"))
    if over:
        slot, reason = over[0]
        raise RepositoryError(
            f"refusing {what} access slot {slot.get('id', '?')} of the repository header: "
            f"its {reason}, and no other slot opens",
            hint="drbackup never makes such a slot (init allows --scrypt-log-n up to "
            f"{MAX_SCRYPT_LOG_N}): restore drbackup.repo from a copy, or open with another "
            "passphrase or key file and remove the slot with 'drbackup key remove'",
        )
    if damaged:
        raise RepositoryError(
            f"the repository header is damaged: {what} access slot {', '.join(damaged)} "
            "has unreadable kdf parameters or wrapped key, and no other slot opens",
            hint="restore drbackup.repo from a copy, or open with another passphrase or key file",
        )
    hint = "check repository.encryption in the config (or DRBACKUP_PASSPHRASE)"
    if passphrase is not None and passphrase != passphrase.strip():
        hint = "the passphrase begins or ends with white space (a copied newline?); " + hint
    raise EncryptionKeyError(
        f"wrong {what}: it opens none of the repository's access slots", hint=hint
    )


def _slot_kek(slot: dict, kind: str, passphrase: str | None, key_file: bytes | None):
    """(key-encryption key, wrapped master key) of one slot; raises on a malformed slot."""
    if kind == "passphrase":
        kek = derive_passphrase_kek(passphrase, slot["kdf"])
    else:
        kek = derive_keyfile_kek(key_file, slot["kdf"])
    return kek, unb64(slot["wrapped_key"], "wrapped key")


# --- data keys: one per backup ----------------------------------------------------------


@dataclass(frozen=True)
class DataKey:
    """A backup's random data key and the slot (type, bytes) that stores it wrapped."""

    key: bytes
    slot_type: int
    slot: bytes


def wrap_data_key_symmetric(master_key: bytes, repo_id: bytes) -> DataKey:
    key = os.urandom(KEY_SIZE)
    nonce = os.urandom(NONCE_SIZE)
    slot = nonce + AESGCM(master_key).encrypt(nonce, key, _DK_AAD + repo_id)
    return DataKey(key, SLOT_SYMMETRIC, slot)


def _x25519_wrap_key(shared: bytes, eph_pub: bytes, repo_pub: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_SIZE,
        salt=eph_pub + repo_pub,
        info=b"drbackup/v1/x25519-wrap",
    )
    return hkdf.derive(shared)


def wrap_data_key_public(public_key: bytes, repo_id: bytes) -> DataKey:
    """ECIES: an ephemeral X25519 key agrees a wrapping key with the repository public key."""
    key = os.urandom(KEY_SIZE)
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    shared = eph.exchange(X25519PublicKey.from_public_bytes(public_key))
    wrap = _x25519_wrap_key(shared, eph_pub, public_key)
    nonce = os.urandom(NONCE_SIZE)
    slot = eph_pub + nonce + AESGCM(wrap).encrypt(nonce, key, _DK_AAD + repo_id)
    return DataKey(key, SLOT_X25519, slot)


def unwrap_data_key(
    slot_type: int,
    slot: bytes,
    repo_id: bytes,
    *,
    master_key: bytes | None,
    private_key: bytes | None,
    object_key: str,
) -> bytes:
    """Recover a data key from an object's slot.

    Raises :class:`EncryptionKeyError` if the needed secret is not held (a writer with only
    the public key trying to read), :class:`IntegrityError` if the slot fails to open.
    """
    try:
        if slot_type == SLOT_SYMMETRIC:
            if master_key is None:
                if private_key is not None:  # a public-key repository never writes these
                    raise IntegrityError(_mode_mismatch(object_key, slot_type, "public-key"))
                raise EncryptionKeyError("this repository key cannot read symmetric-mode objects")
            return AESGCM(master_key).decrypt(
                slot[:NONCE_SIZE], slot[NONCE_SIZE:], _DK_AAD + repo_id
            )
        if slot_type == SLOT_X25519:
            if private_key is None:
                if master_key is not None:  # a symmetric repository never writes these
                    raise IntegrityError(_mode_mismatch(object_key, slot_type, "symmetric"))
                raise EncryptionKeyError(
                    "cannot read: this configuration holds only the repository public key",
                    hint="reading needs the private key: set the passphrase or "
                    "repository.encryption.private_key_file",
                )
            priv = X25519PrivateKey.from_private_bytes(private_key)
            pub = priv.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
            eph_pub, nonce, ct = slot[:32], slot[32:44], slot[44:]
            wrap = _x25519_wrap_key(
                priv.exchange(X25519PublicKey.from_public_bytes(eph_pub)), eph_pub, pub
            )
            return AESGCM(wrap).decrypt(nonce, ct, _DK_AAD + repo_id)
    except (InvalidTag, ValueError):
        raise IntegrityError(
            f"{object_key}: its data key does not open with this repository's key "
            "(tampered, or copied from another repository)"
        ) from None
    raise IntegrityError(f"{object_key}: unknown key slot type {slot_type}")


def _mode_mismatch(object_key: str, slot_type: int, mode: str) -> str:
    return (
        f"{object_key}: key slot type {slot_type} does not belong in a {mode} repository (tampered)"
    )


# --- X25519 key pairs -------------------------------------------------------------------


def generate_x25519() -> tuple[bytes, bytes]:
    """A new (private, public) X25519 key pair as raw 32-byte strings."""
    priv = X25519PrivateKey.generate()
    raw = priv.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return raw, public_from_private(raw)


def public_from_private(private_key: bytes) -> bytes:
    pub = X25519PrivateKey.from_private_bytes(private_key).public_key()
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def read_key_file(path: str | os.PathLike, what: str = "key file") -> bytes:
    """A key file holds 32 bytes, base64-encoded on one line (as `drbackup key generate` writes)."""
    try:
        text = open(path, encoding="ascii").read()  # noqa: SIM115
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    key = unb64(text, f"{what} {path}")
    if len(key) != KEY_SIZE:
        raise ConfigError(f"{what} {path} must hold 32 bytes (base64), found {len(key)}")
    return key
