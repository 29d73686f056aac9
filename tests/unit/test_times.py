"""The one ISO 8601 parser, and the manifest's timestamps as datetimes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from drbackup.errors import IntegrityError
from drbackup.repository.manifest import Manifest
from drbackup.times import parse_iso_time

CET = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T02:00:00Z", datetime(2026, 11, 23, 2, tzinfo=UTC)),
        ("2026-11-23T02:00:00+00:00", datetime(2026, 11, 23, 2, tzinfo=UTC)),
        (" 2026-11-23 02:00 ", datetime(2026, 11, 23, 2, tzinfo=UTC)),  # naive: UTC
        ("2026-11-23T03:00:00.250+01:00", datetime(2026, 11, 23, 3, 0, 0, 250000, tzinfo=CET)),
    ],
)
def test_iso_times_parse_to_aware_datetimes(text, expected):
    parsed = parse_iso_time(text)
    assert parsed == expected and parsed.utcoffset() == expected.utcoffset()


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01T00:00:00Z", None])
def test_anything_else_is_a_value_error(text):
    with pytest.raises(ValueError):
        parse_iso_time(text)


def manifest(**times) -> Manifest:
    fields = {
        "started_at": "2026-11-23T02:00:00+00:00",
        "finished_at": "2026-11-23T02:00:05.5+00:00",
        "recovery_point": "2026-11-23T02:00:01+00:00",
    }
    return Manifest(
        "20261123T020000Z-000aaa",
        "app",
        "postgres",
        "r1",
        **{**fields, **times},
        tool_version="t",
        items=[],
    )


def test_a_manifest_keeps_its_strings_and_gives_datetimes():
    m = manifest()
    assert m.started_at == "2026-11-23T02:00:00+00:00"  # what the manifest stores
    assert m.started_time == datetime(2026, 11, 23, 2, tzinfo=UTC)
    assert m.finished_time - m.started_time == timedelta(seconds=5.5)
    assert m.recovery_time == datetime(2026, 11, 23, 2, 0, 1, tzinfo=UTC)
    assert manifest(recovery_point=None).recovery_time is None


def test_a_manifest_timestamp_that_does_not_parse_names_the_manifest():
    with pytest.raises(IntegrityError) as info:
        _ = manifest(finished_at="soon").finished_time
    assert info.value.message == (
        "manifests/app/20261123T020000Z-000aaa: bad timestamp 'soon' in manifest"
    )
