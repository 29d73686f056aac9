"""What PostgreSQL's write-ahead log files are: names, LSNs, page headers, history files.

Pure functions over names and bytes (no I/O).  The formats are PostgreSQL's own
(``access/xlog_internal.h``, ``access/xlogdefs.h``); WAL is written in the server's byte order,
which drbackup assumes is little-endian (x86-64, arm64).

File names, all in the 8-hex-digit timeline ``T`` and a 64-bit segment number split in two::

    TTTTTTTTXXXXXXXXYYYYYYYY                 a segment (X = segno // segments per 4 GiB, Y = rest)
    TTTTTTTTXXXXXXXXYYYYYYYY.partial         the unfinished last segment of a timeline
    TTTTTTTTXXXXXXXXYYYYYYYY.0000ABCD.backup a backup history file (start offset in the segment)
    TTTTTTTT.history                         a timeline history file
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

from drbackup.errors import SourceError

XLP_FIRST_IS_CONTRECORD = 0x0001
XLP_LONG_HEADER = 0x0002
SHORT_PAGE_HEADER = 24  # MAXALIGN(sizeof(XLogPageHeaderData))
LONG_PAGE_HEADER = 40  # MAXALIGN(sizeof(XLogLongPageHeaderData))
_LONG_HEADER = struct.Struct("<HHIQI4xQII")  # magic, info, tli, pageaddr, rem_len, sysid, seg, blk
_SHORT_HEADER = struct.Struct("<HHIQI")

# XLOG_PAGE_MAGIC of each major version (it changes whenever the WAL format does).
PAGE_MAGIC = {12: 0xD101, 13: 0xD106, 14: 0xD10D, 15: 0xD110, 16: 0xD113, 17: 0xD116}
_MAJOR_OF_MAGIC = {magic: major for major, magic in PAGE_MAGIC.items()}

_SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
_PARTIAL_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$")
_BACKUP_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.([0-9A-F]{8})\.backup$")
_HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")
_LSN_RE = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")

SEGMENT, PARTIAL, BACKUP, HISTORY = "segment", "partial", "backup", "history"


@dataclass(frozen=True, order=True)
class WalFileName:
    """A parsed WAL file name.  ``log``/``seg`` are 0 for history files."""

    timeline: int
    log: int
    seg: int
    kind: str  # segment | partial | backup | history
    name: str
    offset: int = 0  # start offset of a backup history file

    def segno(self, segment_size: int) -> int:
        """The segment number (position in the log divided by the segment size)."""
        return self.log * segments_per_xlogid(segment_size) + self.seg

    @property
    def segment(self) -> str:
        """The segment this file belongs to (``TTTTTTTTXXXXXXXXYYYYYYYY``)."""
        return self.name[:24]


def parse_wal_file_name(name: str) -> WalFileName:
    """Parse a name PostgreSQL gives WAL files (see the module docstring).

    Raises SourceError for anything else (a path, a lower-case or foreign name).
    """
    for regex, kind in ((_SEGMENT_RE, SEGMENT), (_PARTIAL_RE, PARTIAL), (_BACKUP_RE, BACKUP)):
        match = regex.match(name)
        if match:
            tli, log, seg = (int(g, 16) for g in match.groups()[:3])
            offset = int(match.group(4), 16) if kind == BACKUP else 0
            if tli == 0:
                break
            return WalFileName(tli, log, seg, kind, name, offset)
    match = _HISTORY_RE.match(name)
    if match and int(match.group(1), 16) > 1:
        return WalFileName(int(match.group(1), 16), 0, 0, HISTORY, name)
    raise SourceError(
        f"not a WAL file name: {name!r}",
        hint="archive_command passes %p (the path), restore_command %f (the name) and %p",
    )


def segments_per_xlogid(segment_size: int) -> int:
    return 0x100000000 // segment_size


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    """``TTTTTTTTXXXXXXXXYYYYYYYY`` of segment ``segno`` on ``timeline``."""
    per = segments_per_xlogid(segment_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def history_name(timeline: int) -> str:
    return f"{timeline:08X}.history"


def parse_lsn(text: str) -> int:
    """``'16/B374D848'`` → 0x16B374D848.  Raises ValueError for anything else."""
    match = _LSN_RE.match(text.strip())
    if not match:
        raise ValueError(f"invalid LSN {text!r} (expected e.g. 0/16B374D8)")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def segno_of(lsn: int, segment_size: int) -> int:
    """The segment holding byte ``lsn``."""
    return lsn // segment_size


def segno_of_end(lsn: int, segment_size: int) -> int:
    """The segment holding the byte just before ``lsn`` (where a record ending at ``lsn`` is):
    an end exactly on a segment boundary belongs to the previous segment."""
    return (lsn - 1) // segment_size


def is_valid_segment_size(size: int) -> bool:
    """A power of two from 1 MiB to 1 GiB, as ``initdb --wal-segsize`` allows."""
    return (1 << 20) <= size <= (1 << 30) and size & (size - 1) == 0


# --- page headers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentHeader:
    """The long page header at the start of every WAL segment."""

    magic: int
    info: int
    timeline: int
    pageaddr: int
    system_identifier: int
    segment_size: int
    block_size: int

    @property
    def major(self) -> int | None:
        """The PostgreSQL major version whose WAL format the magic names (None if unknown)."""
        return _MAJOR_OF_MAGIC.get(self.magic)


def read_segment_header(first_page: bytes, what: str) -> SegmentHeader:
    """The long header of a segment's first page.  ``what`` names the file in errors.

    Raises SourceError if the bytes cannot be a segment's start.
    """
    if len(first_page) < LONG_PAGE_HEADER:
        raise SourceError(f"{what}: too short to be a WAL segment ({len(first_page)} bytes)")
    magic, info, tli, pageaddr, _rem, sysid, seg_size, blcksz = _LONG_HEADER.unpack_from(first_page)
    if not info & XLP_LONG_HEADER:
        raise SourceError(f"{what}: not a WAL segment (its first page has no long header)")
    if not is_valid_segment_size(seg_size) or blcksz not in (
        1024 * k for k in (1, 2, 4, 8, 16, 32)
    ):
        raise SourceError(f"{what}: not a WAL segment (invalid segment or block size)")
    return SegmentHeader(magic, info, tli, pageaddr, sysid, seg_size, blcksz)


def check_segment_header(
    header: SegmentHeader,
    name: WalFileName,
    *,
    system_identifier: int,
    major: int,
    segment_size: int,
    what: str,
) -> None:
    """Refuse a segment that is not the one its name says, of the cluster named.

    Raises SourceError naming what differs: another cluster (system identifier), another
    major version (page magic), another segment size, or another position (page address).
    """
    if header.system_identifier != system_identifier:
        raise SourceError(
            f"{what} belongs to another cluster: system identifier "
            f"{header.system_identifier}, the archive's is {system_identifier}",
            hint="two servers archive into one target, or the server was re-created "
            "(initdb, pg_upgrade): 'drbackup wal register TARGET' registers the new one",
        )
    if header.major is None:
        raise SourceError(
            f"{what}: unknown WAL page magic 0x{header.magic:04X} "
            "(a PostgreSQL version this drbackup does not know)"
        )
    if header.major != major:
        raise SourceError(
            f"{what} is PostgreSQL {header.major} WAL, the archive holds PostgreSQL {major} WAL",
            hint="after pg_upgrade, 'drbackup wal register TARGET' registers the upgraded server",
        )
    if header.segment_size != segment_size:
        raise SourceError(
            f"{what}: segment size {header.segment_size}, the cluster's is {segment_size}"
        )
    expected = name.segno(segment_size) * segment_size
    if header.pageaddr != expected:
        raise SourceError(
            f"{what}: holds WAL from {format_lsn(header.pageaddr)}, its name says "
            f"{format_lsn(expected)} (renamed or damaged file)"
        )


def page_header_at(data: bytes, offset: int = 0) -> tuple[int, int, int, int, int]:
    """``(magic, info, timeline, pageaddr, rem_len)`` of the page at ``offset``."""
    return _SHORT_HEADER.unpack_from(data, offset)


# --- timeline history files -------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryEntry:
    """One line of ``N.history``: timeline ``parent`` ended (switched) at ``switch_lsn``."""

    parent: int
    switch_lsn: int
    reason: str


def parse_history(text: str, what: str) -> list[HistoryEntry]:
    """The entries of a timeline history file, oldest first.

    Lines are ``<parent tli>\\t<switch LSN>\\t<reason>``; blank lines and ``#`` comments are
    skipped.  Raises SourceError for a malformed line.
    """
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(None, 2)
        try:
            parent, lsn = int(parts[0]), parse_lsn(parts[1])
        except (ValueError, IndexError):
            raise SourceError(f"{what}: malformed line {number}") from None
        entries.append(HistoryEntry(parent, lsn, parts[2] if len(parts) > 2 else ""))
    return entries


def timeline_path(timeline: int, history: list[HistoryEntry]) -> list[tuple[int, int | None]]:
    """``[(timeline, ends_at)]`` from the oldest ancestor to ``timeline`` (``ends_at`` None):
    the timelines a recovery onto ``timeline`` passes through, and where it leaves each."""
    path: list[tuple[int, int | None]] = [(e.parent, e.switch_lsn) for e in history]
    return [*path, (timeline, None)]


# --- the server's archive status ---------------------------------------------------------------


def ready_files(pg_wal) -> list[str]:
    """Files the server waits to see archived (``archive_status/<name>.ready``), sorted
    (history files sort before the segments of their timeline).  Reads a directory; an
    unreadable one raises SourceError."""
    status = pg_wal / "archive_status"
    try:
        names = [n[: -len(".ready")] for n in os.listdir(status) if n.endswith(".ready")]
    except OSError as exc:
        raise SourceError(f"cannot list {status}: {exc.strerror or exc}") from None
    return sorted(names)


def data_directory_major(data_dir: str | os.PathLike) -> int | None:
    """The major a data directory belongs to (its ``PG_VERSION``), None without one: the
    WAL format its server reads.  (Here, not in versions.py: ``wal-fetch`` asks it once per
    WAL file and must not import the PostgreSQL client libraries for that.)"""
    try:
        with open(os.path.join(data_dir, "PG_VERSION")) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
