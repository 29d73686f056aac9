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

from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from drbackup import files
from drbackup.drill.report import REPORT_FORMAT, format_for_path, read_report_file
from drbackup.drill.signing import (
    FINGERPRINT_PREFIX,
    FINGERPRINT_RE,
    KeyRing,
    Verified,
    verified,
    verify_report,
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


@dataclass(frozen=True)
class ReportVerification:
    """What ``drill verify-report`` proved: the document's bytes (``document``, None for a
    JSON file without ``.sig``), and the record inside it (``record``)."""

    report: dict | None
    document: Verified | None
    record: Verified | None

    @property
    def key(self) -> Verified:
        return self.document or self.record


def verify_report_file(
    path: str | Path, ring: KeyRing, signature: str | Path | None = None
) -> ReportVerification:
    """Verify a report file: its detached signature over every byte, then the signed record
    it carries (JSON, or the Markdown form's JSON block).  A JSON report without ``.sig``
    is accepted on its record's signature alone (its content is covered, its layout is
    not); any other form needs its ``.sig``.

    Raises CheckFailedError naming what failed, UsageError for what cannot be read.
    """
    path = Path(path)
    has_sig = signature is not None or signature_path(path).exists()
    if not has_sig and format_for_path(path) == "json" and _looks_like_json(path):
        report = read_report_file(path)
        return ReportVerification(report, None, verify_report(report, ring))
    data, sig = read_document(path, signature)
    document = verify_document(path.name, data, sig, ring)
    report = _embedded_record(path, data)
    record = verify_report(report, ring) if report is not None else None
    return ReportVerification(report, document, record)


def _looks_like_json(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(64).lstrip().startswith(b"{")
    except OSError:
        return False


def _embedded_record(path: Path, data: bytes) -> dict | None:
    """The signed record a document carries, or None for a form without one (HTML)."""
    text = data.decode("utf-8", errors="replace")
    if not text.lstrip().startswith("{") and REPORT_FORMAT not in text:
        return None
    return read_report_file(path)
