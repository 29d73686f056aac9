"""Parsing S3 event notifications (MinIO's webhook format); no I/O."""

from __future__ import annotations

import json

import pytest

from drbackup.errors import UsageError
from drbackup.sources.buckets.events import parse_events

MINIO_PUT = {
    "EventName": "s3:ObjectCreated:Put",
    "Key": "photos/2026/a b+c.jpg",
    "Records": [
        {
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "eventTime": "2026-12-07T10:00:01.123Z",
            "eventName": "s3:ObjectCreated:Put",
            "s3": {
                "bucket": {"name": "photos"},
                "object": {
                    "key": "2026%2Fa+b%2Bc.jpg",
                    "versionId": "3f1c",
                    "sequencer": "17A0B2C3D4E5F6A7",
                },
            },
        }
    ],
}


def test_a_minio_record_gives_bucket_decoded_key_version_and_time():
    [event] = parse_events(json.dumps(MINIO_PUT).encode())
    assert (event.bucket, event.key, event.version_id) == ("photos", "2026/a b+c.jpg", "3f1c")
    assert event.name == "s3:ObjectCreated:Put"
    assert event.time.isoformat() == "2026-12-07T10:00:01.123000+00:00"


def test_a_test_event_without_records_is_empty():
    assert parse_events(b'{"EventName": "s3:TestEvent"}') == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "event body is not JSON"),
        (b"[]", "event body is not an S3 event message (no Records list)"),
        (b'{"Records": {}}', "event body is not an S3 event message (no Records list)"),
        (b'{"Records": [{"s3": {"bucket": {}}}]}', "event record 0 lacks s3.bucket.name"),
    ],
)
def test_malformed_bodies_are_one_line_usage_errors(body, message):
    with pytest.raises(UsageError) as raised:
        parse_events(body)
    assert raised.value.message.startswith(message)
