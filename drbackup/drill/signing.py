"""Ed25519 signatures of drill reports, for auditors.

Two signatures, one key:

* **the record's** (embedded): the report's canonical JSON -- the report without its
  ``signature`` member, serialized with sorted keys, no whitespace (``,`` and ``:``
  separators), UTF-8, non-ASCII characters as they are (Python: ``json.dumps(r,
  sort_keys=True, separators=(",", ":"), ensure_ascii=False)``).  The ``signature`` member
  holds the algorithm, the signer's public key and the signature, both base64.  It travels
  with the record into the repository and the catalog.
* **the document's** (detached, ``documents.py``): the exact bytes of the file a person
  reads (JSON, Markdown, HTML), in ``FILE.sig``, checkable with ``openssl pkeyutl``.

Before signing, the report gets a ``signer`` member (inside what is signed): the key's
fingerprint, the operator, the host and the time of signing.

The key is the file named by ``drill.signing_key_file``: a 32-byte Ed25519 seed, base64 on
one line, as ``drbackup key generate`` writes it.  ``drbackup drill public-key`` prints its
public half for auditors.  Verification looks a report's key up by fingerprint in a
:class:`KeyRing` (the current key and those it replaced), so a key rotation leaves old
reports verifiable.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import json
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from drbackup.codec.keys import read_key_file
from drbackup.errors import CheckFailedError, ConfigError, UsageError

ALGORITHM = "ed25519"
SIGNATURE = "signature"
SIGNER = "signer"
CANONICAL_FORM = "json, keys sorted, separators ',' ':', utf-8, without the signature member"
FINGERPRINT_PREFIX = "ed25519:"
# How a document names its signer's key: found in the signed bytes of any form.
FINGERPRINT_RE = re.compile(r"ed25519:([0-9a-f]{64})")
OPERATOR_ENV = "DRBACKUP_OPERATOR"


def canonical_json(report: dict) -> bytes:
    """The bytes that are signed: the report minus ``signature``, in canonical form."""
    body = {k: v for k, v in report.items() if k != SIGNATURE}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """The Ed25519 private key from a key file (32-byte seed, base64); raises ConfigError."""
    return Ed25519PrivateKey.from_private_bytes(read_key_file(path, "drill signing key file"))


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(public: bytes) -> str:
    """The public key as PEM (SubjectPublicKeyInfo): what ``openssl pkeyutl -pubin`` reads."""
    key = Ed25519PublicKey.from_public_bytes(public)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def fingerprint(public: bytes) -> str:
    """``ed25519:`` and the SHA-256 (hex) of the raw 32-byte public key."""
    return FINGERPRINT_PREFIX + hashlib.sha256(public).hexdigest()


def key_id(public: bytes) -> str:
    """A short name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public).hexdigest()[:16]


def parse_public_key(text: str) -> bytes:
    """An Ed25519 public key: base64 of its 32 bytes, or PEM; raises UsageError."""
    if "-----BEGIN" in text:
        return _parse_pem(text)
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError("the public key is not valid base64 (nor PEM)") from None
    if len(raw) != 32:
        raise UsageError(f"an ed25519 public key has 32 bytes, this one {len(raw)}")
    return raw


def _parse_pem(text: str) -> bytes:
    try:
        key = serialization.load_pem_public_key(text.encode())
    except (ValueError, UnsupportedAlgorithm):
        raise UsageError("the public key is not a valid PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError("the PEM public key is not an ed25519 key")
    return public_bytes(key)


# -- the key ring -----------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyRing:
    """Trusted public keys by fingerprint: the current signing key and those it replaced."""

    keys: dict[str, bytes]

    @classmethod
    def of(cls, publics: Iterable[bytes]) -> KeyRing:
        return cls({fingerprint(p): p for p in publics})

    def find(self, fp: str) -> bytes | None:
        return self.keys.get(fp)

    def describe(self) -> str:
        return ", ".join(fp[len(FINGERPRINT_PREFIX) :][:16] for fp in self.keys) or "none"


def _as_ring(trusted: KeyRing | bytes) -> KeyRing:
    return trusted if isinstance(trusted, KeyRing) else KeyRing.of([trusted])


def read_public_keys(source: str) -> list[bytes]:
    """The keys of ``source``: a base64 key, or a file of keys (PEM blocks, or base64 lines,
    ``#`` comments allowed).  Raises UsageError."""
    if source.strip().startswith("-----BEGIN"):
        return [parse_public_key(source)]
    if not os.path.isfile(source):
        try:
            return [parse_public_key(source)]
        except UsageError:
            if source.startswith((os.sep, ".")) or source.endswith((".pem", ".pub", ".txt")):
                raise UsageError(f"public key file {source} not found") from None
            raise
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read public key file {source}: {exc}") from None
    pems = re.findall(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", text, re.DOTALL)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    found = [_parse_pem(p) for p in pems] if pems else [parse_public_key(ln) for ln in lines]
    if not found:
        raise UsageError(f"public key file {source} holds no key")
    return found


def trusted_keys(
    public_keys: Iterable[str] = (),
    key_file: str | Path | None = None,
    configured: Path | None = None,
    configured_trusted: Iterable[str] = (),
) -> KeyRing:
    """The keys to verify with: those given (``--public-key``, ``--key-file``), else the
    configured signing key's and ``drill.trusted_keys`` (keys it replaced).

    Raises UsageError when there is none: a report checked only against the key it carries
    would prove nothing about who signed it.
    """
    publics = [k for source in public_keys for k in read_public_keys(source)]
    if key_file:
        publics.append(_public_of(key_file))
    if not publics:
        if configured is not None:
            publics.append(_public_of(configured))
        publics += [parse_public_key(k) for k in configured_trusted]
    if not publics:
        raise UsageError(
            "no public key to verify with",
            hint="pass --public-key (from 'drbackup drill public-key') or --key-file",
        )
    return KeyRing.of(publics)


def trusted_key(
    public_key: str | None, key_file: str | Path | None, configured: Path | None
) -> bytes:
    """The one key of :func:`trusted_keys` (given, from a key file, or the config's)."""
    ring = trusted_keys([public_key] if public_key else (), key_file, configured)
    return next(iter(ring.keys.values()))


def _public_of(path: str | Path) -> bytes:
    try:
        return public_bytes(load_signing_key(path))
    except ConfigError as exc:
        raise UsageError(exc.message) from None


# -- the record's signature -------------------------------------------------------------------


def operator() -> str:
    """Who runs drbackup: ``$DRBACKUP_OPERATOR``, else the login name."""
    named = os.environ.get(OPERATOR_ENV, "").strip()
    if named:
        return named
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (containers)
        return f"uid {os.getuid()}"


def signer_of(key: Ed25519PrivateKey, when: datetime | None = None) -> dict:
    """The ``signer`` member: key fingerprint, operator, host, time of signing."""
    return {
        "key_fingerprint": fingerprint(public_bytes(key)),
        "operator": operator(),
        "host": socket.gethostname(),
        "signed_at": (when or datetime.now(UTC)).isoformat(),
    }


def sign_report(report: dict, key: Ed25519PrivateKey) -> dict:
    """A copy of ``report`` with its ``signer`` and ``signature`` members (replacing any
    earlier ones); ``signer`` is part of what is signed."""
    public = public_bytes(key)
    body = {k: v for k, v in report.items() if k not in (SIGNATURE, SIGNER)}
    body[SIGNER] = signer_of(key)
    signature = key.sign(canonical_json(body))
    return {
        **body,
        SIGNATURE: {
            "algorithm": ALGORITHM,
            "public_key": base64.b64encode(public).decode(),
            "key_id": key_id(public),
            "value": base64.b64encode(signature).decode(),
            "canonical_form": CANONICAL_FORM,
        },
    }


@dataclass(frozen=True)
class Verified:
    key_id: str
    public_key: str
    fingerprint: str = ""


def verified(public: bytes) -> Verified:
    return Verified(key_id(public), base64.b64encode(public).decode(), fingerprint(public))


def verify_report(report: dict, trusted: KeyRing | bytes) -> Verified:
    """Check ``report``'s embedded signature with a ``trusted`` key (a ring, or 32 raw bytes).

    Raises CheckFailedError when the report is unsigned, signed by a key not trusted, or
    was changed after signing.
    """
    ring = _as_ring(trusted)
    sig = report.get(SIGNATURE)
    if not isinstance(sig, dict):
        raise CheckFailedError(
            "report is not signed", hint="configure drill.signing_key_file before running drills"
        )
    if sig.get("algorithm") != ALGORITHM:
        raise CheckFailedError(f"unsupported signature algorithm: {sig.get('algorithm')!r}")
    try:
        embedded = base64.b64decode(str(sig.get("public_key", "")), validate=True)
        value = base64.b64decode(str(sig.get("value", "")), validate=True)
    except (binascii.Error, ValueError):
        raise CheckFailedError("signature is malformed (not base64)") from None
    public = ring.find(fingerprint(embedded))
    if public is None:
        raise CheckFailedError(
            f"report was signed by key {key_id(embedded)}, not by a trusted key "
            f"({ring.describe()})",
            hint="check that you were given the right public key (or every key since a rotation)",
        )
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(value, canonical_json(report))
    except InvalidSignature:
        raise CheckFailedError(
            "bad signature: the report was changed after it was signed"
        ) from None
    return verified(public)
