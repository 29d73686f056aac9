"""Ed25519 signatures of drill reports, for auditors.

What is signed: the report's canonical JSON -- the report without its ``signature`` member,
serialized with sorted keys, no whitespace (``,`` and ``:`` separators), UTF-8, non-ASCII
characters as they are (Python: ``json.dumps(r, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``).  The signature member holds the algorithm, the signer's public key
and the signature, both base64.

The key is the file named by ``drill.signing_key_file``: a 32-byte Ed25519 seed, base64 on
one line, as ``drbackup key generate`` writes it.  ``drbackup drill public-key`` prints its
public half for auditors.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from drbackup.codec.keys import read_key_file
from drbackup.errors import CheckFailedError, ConfigError, UsageError

ALGORITHM = "ed25519"
SIGNATURE = "signature"
CANONICAL_FORM = "json, keys sorted, separators ',' ':', utf-8, without the signature member"


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


def key_id(public: bytes) -> str:
    """A short name for a public key: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(public).hexdigest()[:16]


def parse_public_key(text: str) -> bytes:
    """A base64 Ed25519 public key (32 bytes); raises UsageError."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError("the public key is not valid base64") from None
    if len(raw) != 32:
        raise UsageError(f"an ed25519 public key has 32 bytes, this one {len(raw)}")
    return raw


def sign_report(report: dict, key: Ed25519PrivateKey) -> dict:
    """A copy of ``report`` with its ``signature`` member (replacing any earlier one)."""
    public = public_bytes(key)
    signature = key.sign(canonical_json(report))
    return {
        **{k: v for k, v in report.items() if k != SIGNATURE},
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


def verify_report(report: dict, trusted: bytes) -> Verified:
    """Check ``report``'s signature with the ``trusted`` public key (32 raw bytes).

    Raises CheckFailedError when the report is unsigned, signed by another key, or was
    changed after signing.
    """
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
    if embedded != trusted:
        raise CheckFailedError(
            f"report was signed by key {key_id(embedded)}, not by the trusted key {key_id(trusted)}",
            hint="check that you were given the right public key",
        )
    try:
        Ed25519PublicKey.from_public_bytes(trusted).verify(value, canonical_json(report))
    except InvalidSignature:
        raise CheckFailedError(
            "bad signature: the report was changed after it was signed"
        ) from None
    return Verified(key_id(trusted), base64.b64encode(trusted).decode())


def trusted_key(
    public_key: str | None, key_file: str | Path | None, configured: Path | None
) -> bytes:
    """The public key to verify with: given, from a signing key file, or from the config.

    Raises UsageError when none is available: a report checked only against the key it
    carries would prove nothing about who signed it.
    """
    if public_key and key_file:
        raise UsageError("give either --public-key or --key-file, not both")
    if public_key:
        return parse_public_key(public_key)
    path = key_file or configured
    if path is None:
        raise UsageError(
            "no public key to verify with",
            hint="pass --public-key (from 'drbackup drill public-key') or --key-file",
        )
    try:
        return public_bytes(load_signing_key(path))
    except ConfigError as exc:
        raise UsageError(exc.message) from None
