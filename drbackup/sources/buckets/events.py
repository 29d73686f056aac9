"""Bucket event notifications in the S3 event message format (no I/O).

MinIO's webhook target, Ceph RGW's HTTP push endpoint and AWS (via a relay) send::

    {"EventName": "s3:ObjectCreated:Put", "Key": "photos/a.jpg",
     "Records": [{"eventVersion": "2.0", "eventTime": "2026-12-07T10:00:01.123Z",
                  "eventName": "s3:ObjectCreated:Put",
                  "s3": {"bucket": {"name": "photos"},
                         "object": {"key": "a.jpg", "versionId": "…", "sequencer": "…"}}}]}

Object keys in records are URL-encoded (``+`` for a space), as S3 specifies.  Only the
records matter; MinIO's top-level ``EventName``/``Key`` repeat the first one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote_plus

from drbackup.errors import UsageError


@dataclass(frozen=True)
class BucketEvent:
    """One change a server reported."""

    bucket: str
    key: str
    name: str  # s3:ObjectCreated:Put, s3:ObjectRemoved:Delete, ...
    time: datetime | None
    version_id: str | None = None
    sequencer: str | None = None


def parse_events(body: bytes) -> list[BucketEvent]:
    """The records of one notification; UsageError (one line) for anything else.

    MinIO's test notification (``s3:TestEvent``, no records) gives an empty list.
    """
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise UsageError("event body is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("Records", []), list):
        raise UsageError("event body is not an S3 event message (no Records list)")
    return [_record(r, n) for n, r in enumerate(message.get("Records") or [])]


def _record(record, n: int) -> BucketEvent:
    try:
        s3 = record["s3"]
        obj = s3["object"]
        return BucketEvent(
            bucket=str(s3["bucket"]["name"]),
            key=unquote_plus(str(obj["key"])),
            name=str(record.get("eventName") or ""),
            time=_time(record.get("eventTime")),
            version_id=obj.get("versionId") or None,
            sequencer=obj.get("sequencer") or None,
        )
    except (KeyError, TypeError, AttributeError):
        raise UsageError(f"event record {n} lacks s3.bucket.name or s3.object.key") from None


def _time(text) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
