"""WAL file names, LSNs, segment headers and history files (pure functions, no server)."""

from __future__ import annotations

import struct

import pytest

from drbackup.errors import SourceError
from drbackup.sources.postgres import wal

SEG = 16 << 20


def test_segment_names_round_trip_through_segment_numbers():
    name = wal.segment_name(2, 0x105, SEG)
    assert name == "000000020000000100000005"
    parsed = wal.parse_wal_file_name(name)
    assert (parsed.timeline, parsed.kind, parsed.segno(SEG)) == (2, "segment", 0x105)
    # 64 MiB segments: 64 per 4 GiB "log"
    assert wal.segment_name(1, 65, 64 << 20) == "000000010000000100000001"


@pytest.mark.parametrize(
    ("name", "kind", "timeline"),
    [
        ("000000010000000000000003.partial", "partial", 1),
        ("000000010000000000000003.00000028.backup", "backup", 1),
        ("00000002.history", "history", 2),
    ],
)
def test_other_wal_file_kinds(name, kind, timeline):
    parsed = wal.parse_wal_file_name(name)
    assert (parsed.kind, parsed.timeline) == (kind, timeline)


@pytest.mark.parametrize(
    "name",
    [
        "pg_wal/000000010000000000000003",
        "00000001000000000000000g",
        "00000001.history",
        "000000000000000000000003",
        "RECOVERYXLOG",
        "",
    ],
)
def test_foreign_names_are_refused(name):
    with pytest.raises(SourceError, match="not a WAL file name"):
        wal.parse_wal_file_name(name)


def test_lsn_parse_format_and_segment_of_an_end():
    assert wal.parse_lsn("16/B374D848") == 0x16B374D848
    assert wal.format_lsn(0x16B374D848) == "16/B374D848"
    assert wal.segno_of(wal.parse_lsn("0/3000000"), SEG) == 3
    assert wal.segno_of_end(wal.parse_lsn("0/3000000"), SEG) == 2  # ends on a boundary
    with pytest.raises(ValueError, match="invalid LSN"):
        wal.parse_lsn("16B374D848")


def _first_page(sysid=7, magic=0xD110, pageaddr=3 * SEG, info=wal.XLP_LONG_HEADER, seg=SEG):
    header = struct.pack("<HHIQI4xQII", magic, info, 1, pageaddr, 0, sysid, seg, 8192)
    return header + bytes(8192 - len(header))


def _check(page, name="000000010000000000000003", **expected):
    args = {"system_identifier": 7, "major": 15, "segment_size": SEG} | expected
    header = wal.read_segment_header(page, name)
    wal.check_segment_header(header, wal.parse_wal_file_name(name), what=name, **args)


def test_a_matching_segment_header_passes():
    _check(_first_page())


@pytest.mark.parametrize(
    ("page", "message"),
    [
        (_first_page(sysid=8), "belongs to another cluster: system identifier 8"),
        (_first_page(magic=0xD10D), "is PostgreSQL 14 WAL, the archive holds PostgreSQL 15"),
        (_first_page(magic=0xBEEF), "unknown WAL page magic 0xBEEF"),
        (_first_page(pageaddr=4 * SEG), "holds WAL from 0/4000000, its name says 0/3000000"),
        (_first_page(seg=64 << 20), "segment size 67108864"),
    ],
)
def test_a_foreign_or_misplaced_segment_is_refused_naming_why(page, message):
    with pytest.raises(SourceError, match=message):
        _check(page)


def test_bytes_that_are_not_a_segment_start_are_refused():
    with pytest.raises(SourceError, match="no long header"):
        _check(_first_page(info=0))
    with pytest.raises(SourceError, match="too short"):
        _check(b"\0" * 10)


def test_history_files_parse_with_comments_and_reasons():
    text = '1\t0/3000158\tno recovery target specified\n\n# comment\n2\t0/5000000\tat restore point "x"\n'
    entries = wal.parse_history(text, "00000003.history")
    assert [(e.parent, e.switch_lsn) for e in entries] == [(1, 0x3000158), (2, 0x5000000)]
    assert wal.timeline_path(3, entries) == [(1, 0x3000158), (2, 0x5000000), (3, None)]
    with pytest.raises(SourceError, match="malformed line 1"):
        wal.parse_history("x\ty\n", "00000002.history")
