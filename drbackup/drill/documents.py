"""Detached signatures over a report document's exact bytes: ``FILE`` and ``FILE.sig``.

What a person reads is what was signed: the signature covers every byte of the file
(JSON, Markdown, HTML alike), so changing any character, even whitespace, fails
verification.  ``FILE.sig`` holds the 64-byte raw Ed25519 signature and nothing else, which
is what ``openssl pkeyutl -verify -pubin -inkey signer.pem -rawin -in FILE -sigfile
FILE.sig`` checks (OpenSSL 3, Debian's ``openssl``): an auditor needs only the public key.

The document names its signer's key (``ed25519:<sha256 hex>``, see ``signing.py``);
verification looks that fingerprint up in the key ring.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from drbackup import files
from drbackup.drill.signing import (
    FINGERPRINT_PREFIX,
    FINGERPRINT_RE,
    KeyRing,
    Verified,
    verified,
)
from drbackup.errors import CheckFailedError, UsageError

SIGNATURE_SUFFIX = ".sig"
SIGNATURE_SIZE = 64


def signature_path(path: str | Path) -> Path:
    """Where the detached signature of ``path`` lives: ``path`` + ``.sig``."""
    path = Path(path)
    return path.with_name(path.name + SIGNATURE_SUFFIX)


def write_signed(path: str | Path, data: bytes, key: Ed25519PrivateKey | None) -> Path:
    """Write ``data`` to ``path`` atomically and, with ``key``, its signature to
    ``path.sig`` (after the document: a crash between leaves a document whose signature
    is missing or stale, which verification reports).  Returns the path.  Raises OSError."""
    written = files.write_atomic(path, data, mode=0o600)
    if key is not None:
        files.write_atomic(signature_path(written), key.sign(data), mode=0o644)
    return written


def signer_fingerprints(data: bytes) -> list[str]:
    """The key fingerprints a document names, in order, without repeats."""
    found = FINGERPRINT_RE.findall(data.decode("utf-8", errors="replace"))
    return list(dict.fromkeys(FINGERPRINT_PREFIX + hexdigits for hexdigits in found))


def read_document(path: str | Path, signature: str | Path | None = None) -> tuple[bytes, bytes]:
    """The bytes of ``path`` and of its detached signature (``path.sig`` unless given).

    Raises UsageError when the document cannot be read, CheckFailedError when its signature
    is missing or is not one.
    """
    path = Path(path)
    sig_path = Path(signature) if signature else signature_path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read report {path}: {exc.strerror or exc}") from None
    try:
        sig = sig_path.read_bytes()
    except FileNotFoundError:
        raise CheckFailedError(
            f"{path.name} has no detached signature ({sig_path.name} not found)",
            hint="keep the .sig file drbackup wrote next to the report; without it the "
            "readable text is not covered by any signature",
        ) from None
    except OSError as exc:
        raise UsageError(f"cannot read {sig_path}: {exc.strerror or exc}") from None
    if len(sig) != SIGNATURE_SIZE:
        raise CheckFailedError(
            f"{sig_path.name} is not an ed25519 signature ({len(sig)} bytes, 64 expected)"
        )
    return data, sig


def verify_document(name: str, data: bytes, signature: bytes, ring: KeyRing) -> Verified:
    """Check the detached ``signature`` of document ``data`` (called ``name`` in messages)
    with the key the document names, looked up in ``ring``; a document naming no key is
    tried with every key of the ring.

    Raises CheckFailedError when the key is not trusted or any byte was changed.
    """
    named = signer_fingerprints(data)
    candidates = [fp for fp in named if ring.find(fp)] if named else list(ring.keys)
    if not candidates:
        raise CheckFailedError(
            f"{name} was signed by key {named[0][len(FINGERPRINT_PREFIX) :][:16]}, not by a "
            f"trusted key ({ring.describe()})",
            hint="check that you were given the right public key (or every key since a rotation)",
        )
    for fp in candidates:
        public = ring.keys[fp]
        try:
            Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
        except InvalidSignature:
            continue
        return verified(public)
    raise CheckFailedError(
        f"bad signature: the report was changed after it was signed ({name}: its bytes do "
        "not match its detached signature)"
    )
