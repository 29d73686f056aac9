"""Reading WAL records in a segment: where the WAL ends, and the newest timestamped record.

A time target is reached only when recovery finds a record with a later timestamp (PostgreSQL
stops *before* the first commit after the target): the newest second a restore can reach is
set by the last commit, abort or restore point in the archive.  This module finds it without
``pg_waldump``, by walking the records of a segment's last pages (``access/xlogrecord.h``):

* a page starts with a header (24 bytes; 40 on a segment's first page), then, if
  ``XLP_FIRST_IS_CONTRECORD``, ``xlp_rem_len`` bytes that continue the previous page's record;
* a record is a 24-byte ``XLogRecord`` (``xl_tot_len`` first) and its body, continued across
  page headers, and the next record starts at the next multiple of 8 bytes;
* the main data of a commit or abort record starts with its time (``TimestampTz``:
  microseconds since 2000-01-01 UTC), as does a restore point's.

Each page's ``xlp_pageaddr`` and each record's ``xl_prev`` are checked, so that stale bytes
of a recycled file are never read as WAL.  A record that continues into the next segment
is not seen here (the newest time is then slightly conservative).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from drbackup.sources.postgres.wal import (
    LONG_PAGE_HEADER,
    SHORT_PAGE_HEADER,
    XLP_FIRST_IS_CONTRECORD,
    XLP_LONG_HEADER,
    page_header_at,
)

RECORD_HEADER = 24  # SizeOfXLogRecord
_RECORD = struct.Struct("<IIQBB")  # xl_tot_len, xl_xid, xl_prev, xl_info, xl_rmid
_U32, _I64 = struct.Struct("<I"), struct.Struct("<q")
RM_XLOG_ID, RM_XACT_ID = 0, 1
XLOG_RESTORE_POINT = 0x70
_XACT_TIMED = {0x00, 0x20, 0x30, 0x40}  # commit, abort, commit prepared, abort prepared
_XACT_OPMASK = 0x70
_DATA_SHORT, _DATA_LONG, _ORIGIN, _TOPLEVEL_XID = 255, 254, 253, 252
POSTGRES_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Record:
    """A record found in a segment: where it starts (offset in the segment) and its end."""

    start: int
    end: int  # offset just past its last byte (page headers included)
    rmid: int
    info: int
    timestamp: datetime | None


@dataclass(frozen=True)
class SegmentEnd:
    """What the tail of a segment holds."""

    end: int  # offset just past the last valid record (0 if none found)
    last_time: datetime | None  # time of the newest commit/abort/restore point, if any
    last_time_lsn: int | None  # where that record starts


def to_datetime(timestamp_tz: int) -> datetime:
    return POSTGRES_EPOCH + timedelta(microseconds=timestamp_tz)


class _Pages:
    """Logical reads over a segment's bytes, stepping over page headers."""

    def __init__(self, data: bytes, block_size: int, start_lsn: int):
        self.data, self.block, self.start_lsn = data, block_size, start_lsn
        self.pages = len(data) // block_size

    def header_size(self, page: int) -> int | None:
        """Header length of ``page`` if its header is valid for this position, else None."""
        if page >= self.pages:
            return None
        _magic, info, _tli, addr, _rem = page_header_at(self.data, page * self.block)
        if addr != self.start_lsn + page * self.block:
            return None
        return LONG_PAGE_HEADER if info & XLP_LONG_HEADER else SHORT_PAGE_HEADER

    def first_record(self, page: int) -> int | None:
        """Offset of the first record starting on ``page``, or None if none does."""
        size = self.header_size(page)
        if size is None:
            return None
        _magic, info, _tli, _addr, rem = page_header_at(self.data, page * self.block)
        pos = page * self.block + size
        if info & XLP_FIRST_IS_CONTRECORD:
            if rem >= self.block - size:
                return None
            pos += _maxalign(rem)
        return pos

    def read(self, pos: int, length: int) -> tuple[bytes, int] | None:
        """``length`` logical bytes from ``pos`` and the offset after them, or None if they
        run past the segment or into an invalid page."""
        parts, need = [], length
        while need:
            if pos % self.block == 0:
                size = self.header_size(pos // self.block)
                if size is None:
                    return None
                pos += size
            take = min(need, self.block - pos % self.block)
            parts.append(self.data[pos : pos + take])
            pos, need = pos + take, need - take
        return b"".join(parts), pos


def _maxalign(n: int) -> int:
    return (n + 7) & ~7


def walk_records(pages: _Pages, start: int, stop: int | None = None):
    """Records from offset ``start`` until the WAL ends (or a record starts at ``stop``)."""
    pos, prev = start, None
    while stop is None or pos < stop:
        if pos % pages.block == 0:
            size = pages.header_size(pos // pages.block)
            if size is None:
                return
            pos += size
        if pos + 4 > len(pages.data):
            return
        (total,) = _U32.unpack_from(pages.data, pos)
        got = pages.read(pos, total) if total >= RECORD_HEADER else None
        if got is None:
            return
        body, end = got
        _total, _xid, xl_prev, info, rmid = _RECORD.unpack_from(body)
        if prev is not None and xl_prev != pages.start_lsn + prev:
            return
        yield Record(pos, end, rmid, info, record_timestamp(body, rmid, info))
        prev, pos = pos, _maxalign(end)


def record_timestamp(body: bytes, rmid: int, info: int) -> datetime | None:
    """The time in a commit, abort (prepared or not) or restore point record, else None."""
    timed = (rmid == RM_XACT_ID and info & _XACT_OPMASK in _XACT_TIMED) or (
        rmid == RM_XLOG_ID and info & 0xF0 == XLOG_RESTORE_POINT
    )
    if not timed:
        return None
    main = _main_data_length(body)
    if main is None or main < 8:
        return None
    (value,) = _I64.unpack_from(body, len(body) - main)
    return to_datetime(value)


def _main_data_length(body: bytes) -> int | None:
    """Length of a record's main data, read from its block headers; None for records with
    block references (never the case for the records whose time is read here)."""
    pos = RECORD_HEADER
    while pos < len(body):
        block_id = body[pos]
        if block_id == _DATA_SHORT:
            return body[pos + 1]
        if block_id == _DATA_LONG:
            return _U32.unpack_from(body, pos + 1)[0]
        if block_id == _ORIGIN:
            pos += 3
        elif block_id == _TOPLEVEL_XID:
            pos += 5
        else:
            return None
    return 0


def scan_segment_end(data: bytes, block_size: int, start_lsn: int) -> SegmentEnd:
    """Where the WAL in a segment ends, and its newest timestamped record.

    Walks back page by page from the end, each time reading only the records that start on
    that page, until a timestamped record is found (or the segment's start is reached).
    """
    pages = _Pages(data, block_size, start_lsn)
    end, stop = 0, None
    for page in range(pages.pages - 1, -1, -1):
        first = pages.first_record(page)
        if first is None:
            continue
        timed = None
        for record in walk_records(pages, first, stop):
            end = max(end, record.end)
            if record.timestamp is not None:
                timed = record
        if timed is not None:
            return SegmentEnd(end, timed.timestamp, start_lsn + timed.start)
        stop = first
    return SegmentEnd(end, None, None)
