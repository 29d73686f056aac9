"""The version listing parser and the state of a bucket at a second (no I/O)."""

from __future__ import annotations

import json

import pytest

from drbackup.sources.buckets.index import IndexEntry
from drbackup.sources.buckets.versions import (
    VersionEntry,
    group_by_key,
    parse_versions_page,
    state_at,
)

NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def entry(key: str, when: str, content: str = "x", version: str = "v") -> IndexEntry:
    return IndexEntry(key, len(content), content, "blob-" + content, "e", when, version_id=version)


def version(key: str, when: str, content: str | None, vid: str) -> VersionEntry:
    if content is None:
        return VersionEntry(key, vid, when, deleted=True)
    return VersionEntry(key, vid, when, entry=entry(key, when, content, vid))


T = "2026-12-07T10:00:0{}.000Z"


def test_state_at_takes_the_newest_line_at_or_before_the_time():
    base = [entry("a", T.format(0), "a0"), entry("b", T.format(0), "b0")]
    history = [
        version("a", T.format(2), "a2", "2"),
        version("a", T.format(4), None, "4"),
        version("b", T.format(3), None, "3"),
        version("b", T.format(5), "b5", "5"),
        version("c", T.format(1), "c1", "1"),
    ]
    at = {s: {e.key: e.sha256 for e in state_at(base, [history], T.format(s))} for s in range(6)}
    assert at[0] == {"a": "a0", "b": "b0"}
    assert at[1] == {"a": "a0", "b": "b0", "c": "c1"}
    assert at[2] == {"a": "a2", "b": "b0", "c": "c1"}
    assert at[3] == {"a": "a2", "c": "c1"}
    assert at[4] == {"c": "c1"}
    assert at[5] == {"b": "b5", "c": "c1"}


def test_state_at_a_later_history_wins_a_tie_and_an_empty_base_works():
    older = [version("k", T.format(1), "old", "1")]
    newer = [version("k", T.format(1), "new", "2")]
    assert [e.sha256 for e in state_at([], [older, newer], T.format(1))] == ["new"]
    assert list(state_at([], [older], T.format(0))) == []


def test_history_line_round_trips_and_ignores_unknown_fields():
    line = version("k", T.format(1), "c", "v1")
    marker = version("k", T.format(2), None, "v2")
    for v in (line, marker):
        data = json.loads(v.to_line())
        assert VersionEntry.from_dict({**data, "future": 1}) == v
    assert json.loads(marker.to_line()) == {
        "key": "k", "version_id": "v2", "last_modified": T.format(2), "deleted": True
    }  # fmt: skip


def page(*lines: str, truncated: bool = False) -> bytes:
    body = "".join(lines)
    return (
        f'<ListVersionsResult xmlns="{NS}"><Name>b</Name>'
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
        f"<NextKeyMarker>k2</NextKeyMarker><NextVersionIdMarker>v9</NextVersionIdMarker>{body}"
        "</ListVersionsResult>"
    ).encode()


def v(key, vid, when, latest=False, kind="Version"):
    size = "<Size>3</Size><ETag>&quot;abc&quot;</ETag>" if kind == "Version" else ""
    return (
        f"<{kind}><Key>{key}</Key><VersionId>{vid}</VersionId><IsLatest>{str(latest).lower()}"
        f"</IsLatest><LastModified>{when}</LastModified>{size}</{kind}>"
    )


def test_a_page_with_delete_markers_listed_last_is_put_in_key_and_time_order():
    # moto lists every version of a page before every delete marker
    body = page(
        v("a", "a1", "2026-12-07T10:00:01.000Z"),
        v("b", "b1", "2026-12-07T10:00:01.000Z"),
        v("a", "a2", "2026-12-07T10:00:02.000Z", latest=True, kind="DeleteMarker"),
        truncated=True,
    )
    parsed = parse_versions_page(body)
    assert [(x.key, x.version_id, x.deleted) for x in parsed.versions] == [
        ("a", "a2", True),
        ("a", "a1", False),
        ("b", "b1", False),
    ]
    assert (parsed.truncated, parsed.next_key, parsed.next_version) == (True, "k2", "v9")
    assert parsed.versions[1].etag == "abc" and parsed.versions[1].size == 3
    groups = [[x.version_id for x in g] for g in group_by_key(parsed.versions)]
    assert groups == [["a1", "a2"], ["b1"]]


@pytest.mark.parametrize("bad", [b"<not xml", b""])
def test_a_garbled_page_raises(bad):
    with pytest.raises(Exception):  # noqa: B017 - ElementTree's ParseError
        parse_versions_page(bad)
