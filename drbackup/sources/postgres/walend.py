"""How much of a ``.partial`` segment pg_receivewal is writing holds whole WAL records.

pg_receivewal creates ``<segment>.partial`` padded with zeros and writes the stream into it
in order, each byte once.  A reader that copies the file meanwhile may see a torn state (a
later byte already written, an earlier one not yet), so :func:`snapshot_partial` reads twice:

1. it reads the file, finds the last page with a valid header, and walks the records that
   start there to the last one that looks whole: it starts at ``S`` and ends at ``E``;
2. it reads ``[0, E)`` again.  The record header at ``S`` was already written during the
   first read, and every byte before ``S`` was written before it, so every byte before
   ``S`` in the second read is final.  The record ``[S, E)`` itself counts only if its
   CRC-32C (``xl_crc``) matches in the second read; otherwise the snapshot ends at ``S``.

The end is rounded up to the next multiple of 8 (where the next record would start, and
what ``pg_current_wal_lsn()`` says once that record is written).  The snapshot is the
segment's bytes up to that end and zeros after (a file of the segment's size, as PostgreSQL
reads segments): the same length always gives the same bytes, so an
upload of it is idempotent.  Recovery that reads it replays up to its end, then finds the
zeros (``invalid record length``) and ends there, as with any partial segment.
"""

from __future__ import annotations

import struct
from pathlib import Path

import google_crc32c

from drbackup.errors import SourceError
from drbackup.sources.postgres.wal import read_segment_header
from drbackup.sources.postgres.walrecords import RECORD_HEADER, _Pages, walk_records

_U32 = struct.Struct("<I")
_CRC_OFFSET = 20  # offsetof(XLogRecord, xl_crc)
CRC_CHECK_MAX = 16 << 20  # no whole record of a segment is longer


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), as PostgreSQL's ``INIT/COMP/FIN_CRC32C``; chainable like
    ``zlib.crc32``: ``crc32c(b, crc32c(a)) == crc32c(a + b)``."""
    return google_crc32c.extend(crc, data)


def record_crc_matches(body: bytes) -> bool:
    """True if a whole record's bytes (page headers removed) carry their own ``xl_crc``:
    the CRC of the data after the 24-byte header, then of the header up to ``xl_crc``."""
    (stored,) = _U32.unpack_from(body, _CRC_OFFSET)
    return crc32c(body[:_CRC_OFFSET], crc32c(body[RECORD_HEADER:])) == stored


def last_valid_page(pages: _Pages) -> int:
    """The last page whose header is valid for its position (written pages are a prefix of
    the file: binary search), or -1 if even the first is not."""
    if pages.header_size(0) is None:
        return -1
    low, high = 0, pages.pages  # low is valid; high is past the end or invalid
    while high - low > 1:
        middle = (low + high) // 2
        if pages.header_size(middle) is not None:
            low = middle
        else:
            high = middle
    return low


def find_last_record(data: bytes, block_size: int, start_lsn: int) -> tuple[int, int] | None:
    """``(start, end)`` offsets of the last record lying whole in ``data`` as far as its page
    headers and length say (its CRC is not checked here), or None if there is none."""
    pages = _Pages(data, block_size, start_lsn)
    for page in range(last_valid_page(pages), -1, -1):
        first = pages.first_record(page)
        if first is None:
            continue
        last = None
        for last in walk_records(pages, first):  # noqa: B007 - the last one is wanted
            pass
        if last is not None:
            return last.start, last.end
    return None


def snapshot_partial(src: Path, dest: Path) -> int:
    """Write to ``dest`` the whole records pg_receivewal has written into ``src`` so far,
    zeros after them (see the module docstring).  Returns how many bytes hold WAL; 0 (and
    ``dest`` not written) when no record is whole yet.  Raises OSError (``src`` renamed
    or removed meanwhile: the segment was completed)."""
    first = src.read_bytes()
    try:
        header = read_segment_header(first[: 1 << 16], src.name)
    except SourceError:
        return 0  # not even the first page is written yet
    found = find_last_record(first, header.block_size, header.pageaddr)
    if found is None:
        return 0
    start, end = found
    aligned = min((end + 7) & ~7, len(first))  # the next record would start there
    with src.open("rb") as f:
        second = f.read(aligned)
    upto = aligned if _whole(second, start, header.block_size, header.pageaddr) else start
    if upto:
        _write_padded(dest, memoryview(second)[:upto], len(first))
    return upto


def _whole(data: bytes, start: int, block_size: int, start_lsn: int) -> bool:
    """True if the record at ``start`` is complete in ``data`` and its CRC matches."""
    if start + 4 > len(data):
        return False
    (total,) = _U32.unpack_from(data, start)
    if total < RECORD_HEADER or total > CRC_CHECK_MAX:
        return False
    base = start - start % block_size  # only the pages the record is on
    region = data[base : base + total + 2 * block_size]
    region += bytes(-len(region) % block_size)
    got = _Pages(region, block_size, start_lsn + base).read(start - base, total)
    return got is not None and base + got[1] <= len(data) and record_crc_matches(got[0])


def _write_padded(dest: Path, head: memoryview, size: int) -> None:
    zeros = bytes(1 << 20)
    with dest.open("wb") as out:
        out.write(head)
        left = size - len(head)
        while left > 0:
            left -= out.write(zeros[: min(left, len(zeros))])
