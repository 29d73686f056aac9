"""ISO 8601 times: the one parser for the times drbackup stores (manifests, drill reports,
job details) and the ones users give it (``--point-in-time``, drill plans).

Imports nothing of drbackup: every layer may use it.
"""

from __future__ import annotations

from datetime import UTC, datetime


def parse_iso_time(text: str) -> datetime:
    """An aware datetime from ISO 8601 text: ``2026-11-23T02:00:00Z``, ``...+01:00``,
    ``2026-11-23 02:00`` (naive means UTC).  Surrounding blanks are ignored; the offset
    given is kept.  Raises ValueError for anything else (callers word the error)."""
    if not isinstance(text, str):
        raise ValueError(f"not a time: {text!r}")
    value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)
