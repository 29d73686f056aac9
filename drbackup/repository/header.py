"""The repository header object ``drbackup.repo``: clear JSON, never a key in clear.

It says what the repository is (format, version, id), how its master key is wrapped
(access slots with their KDF parameters) and, in public-key mode, the public key writers
encrypt to.  Opening a repository of a newer format version fails.
"""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime

from drbackup.errors import RepositoryError

HEADER_KEY = "drbackup.repo"
FORMAT_NAME = "drbackup-repository"
FORMAT_VERSION = 1
MODES = ("symmetric", "public-key")


def new_header(mode: str, slots: list[dict], public_key_b64: str | None, chunk_size: int) -> dict:
    if mode not in MODES:
        raise ValueError(f"unknown encryption mode {mode!r}")
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "repository_id": os.urandom(16).hex(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "encryption": {
            "mode": mode,
            "cipher": "AES-256-GCM",
            "public_key": public_key_b64,
            "access_slots": slots,
        },
        "chunk_size": chunk_size,
    }


def encode_header(header: dict) -> bytes:
    return (json.dumps(header, indent=2, sort_keys=True) + "\n").encode()


def parse_header(data: bytes, url: str) -> dict:
    """Parse and validate a header; raise :class:`RepositoryError` with a hint if unusable."""
    try:
        header = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RepositoryError(f"{url}: {HEADER_KEY} is not valid json (damaged header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise RepositoryError(f"{url}: {HEADER_KEY} is not a drbackup repository header")
    version = header.get("version")
    if not isinstance(version, int):
        raise RepositoryError(f"{url}: repository header has no format version")
    if version > FORMAT_VERSION:
        raise RepositoryError(
            f"{url}: repository format version {version} is newer than this drbackup "
            f"supports ({FORMAT_VERSION})",
            hint="upgrade drbackup to read this repository",
        )
    repo_id = header.get("repository_id")
    if not isinstance(repo_id, str) or not _is_hex(repo_id, 32):
        raise RepositoryError(
            f"{url}: repository header has an invalid repository_id (damaged header)"
        )
    enc = header.get("encryption") or {}
    if enc.get("mode") not in MODES or not isinstance(enc.get("access_slots"), list):
        raise RepositoryError(f"{url}: repository header has an invalid encryption section")
    if enc["mode"] == "public-key" and not _is_key_b64(enc.get("public_key")):
        raise RepositoryError(
            f"{url}: repository header has an invalid public key (damaged header)"
        )
    return header


def _is_hex(text: str, length: int) -> bool:
    try:
        return len(text) == length and bytes.fromhex(text) is not None
    except ValueError:
        return False


def _is_key_b64(text) -> bool:
    if not isinstance(text, str):
        return False
    try:
        return len(base64.b64decode(text, validate=True)) == 32
    except (ValueError, TypeError):
        return False
