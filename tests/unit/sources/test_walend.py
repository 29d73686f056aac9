"""Where the whole WAL records of a partial segment end: records laid out across pages as
PostgreSQL writes them, CRC-32C included, then cut, torn and zeroed."""

from __future__ import annotations

import struct

import pytest

from drbackup.sources.postgres.walend import (
    crc32c,
    find_last_record,
    record_crc_matches,
    snapshot_partial,
)

BLOCK = 8192
SEG = 1 << 20  # a 1 MiB segment (initdb --wal-segsize=1)
START = 5 * SEG  # segment 5 of timeline 1
SYSID = 7301234567890123456
MAGIC = 0xD110  # PostgreSQL 15


def record(payload: bytes, prev: int) -> bytes:
    """An XLogRecord with main data ``payload`` (short or long form) and its CRC."""
    if len(payload) < 256:
        data = bytes([255, len(payload)]) + payload
    else:
        data = bytes([254]) + struct.pack("<I", len(payload)) + payload
    total = 24 + len(data)
    head = struct.pack("<IIQBB2x", total, 1234, prev, 0, 0)
    crc = crc32c(head, crc32c(data))
    return head + struct.pack("<I", crc) + data


def segment(payload_sizes: list[int]) -> tuple[bytearray, list[tuple[int, int]]]:
    """A segment holding records of these payload sizes; their (start, end) offsets."""
    out = bytearray(SEG)
    pos, prev, spans = 0, 0, []

    def header(page: int, rem: int) -> bytes:
        info = (2 if page == 0 else 0) | (1 if rem else 0)
        short = struct.pack("<HHIQI", MAGIC, info, 1, START + page * BLOCK, rem)
        if page == 0:
            return short + struct.pack("<4xQII", SYSID, SEG, BLOCK)
        return short + bytes(4)  # MAXALIGN(20) = 24

    for size in payload_sizes:
        body = record(bytes((i % 251) + 1 for i in range(size)), START + prev)
        start = None
        remaining = body
        while remaining:
            if pos % BLOCK == 0:
                hdr = header(pos // BLOCK, len(remaining) if start is not None else 0)
                out[pos : pos + len(hdr)] = hdr
                pos += len(hdr)
            if start is None:
                start = pos
            take = min(len(remaining), BLOCK - pos % BLOCK)
            out[pos : pos + take] = remaining[:take]
            pos, remaining = pos + take, remaining[take:]
        spans.append((start, pos))
        prev = start
        pos = (pos + 7) & ~7
    return out, spans


def test_crc32c_is_castagnoli_and_chains():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")


def test_records_carry_their_crc_and_a_changed_byte_breaks_it():
    body = record(b"hello", 0)
    assert record_crc_matches(body)
    assert not record_crc_matches(body[:-1] + b"X")


def test_the_last_whole_record_is_found_across_pages():
    data, spans = segment([100, 9000, 50, 30])  # the second spans two pages
    assert find_last_record(bytes(data), BLOCK, START) == spans[-1]


def test_a_snapshot_ends_after_the_last_whole_record_and_is_zero_after(tmp_path):
    data, spans = segment([100, 9000, 50, 29])
    (tmp_path / "p").write_bytes(data)
    upto = snapshot_partial(tmp_path / "p", tmp_path / "snap")
    assert spans[-1][1] % 8 and upto == (spans[-1][1] + 7) & ~7  # where the next would start
    snap = (tmp_path / "snap").read_bytes()
    assert len(snap) == SEG and snap[:upto] == data[:upto] and not any(snap[upto:])
    again = snapshot_partial(tmp_path / "p", tmp_path / "snap2")
    assert again == upto and (tmp_path / "snap2").read_bytes() == snap  # idempotent


def test_a_record_whose_body_is_not_written_yet_is_left_out(tmp_path):
    data, spans = segment([100, 200, 300])
    start, end = spans[-1]
    data[start + 40 : end] = bytes(end - start - 40)  # header written, the rest not yet
    (tmp_path / "p").write_bytes(data)
    assert snapshot_partial(tmp_path / "p", tmp_path / "snap") == start
    assert (tmp_path / "snap").read_bytes()[:start] == data[:start]


def test_a_record_running_into_an_unwritten_page_is_left_out(tmp_path):
    data, spans = segment([100, 200, 9000])
    start, end = spans[-1]
    data[BLOCK : 2 * BLOCK] = bytes(BLOCK)  # its second page is not written yet
    (tmp_path / "p").write_bytes(data)
    assert snapshot_partial(tmp_path / "p", tmp_path / "snap") == spans[2][0]


@pytest.mark.parametrize("written", [0, 16])
def test_nothing_whole_yet_writes_nothing(tmp_path, written):
    data, _ = segment([100])
    data[written:] = bytes(SEG - written)
    (tmp_path / "p").write_bytes(data)
    assert snapshot_partial(tmp_path / "p", tmp_path / "snap") == 0
    assert not (tmp_path / "snap").exists()
