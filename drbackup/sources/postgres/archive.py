"""pg_dump custom-format archives: their table of contents, and the data offsets that
pg_dump cannot write into a pipe.

pg_dump -Fc writes its table of contents (TOC) first and the data blocks after it.  Writing
to a file, it goes back at the end and fills in where each data block starts; writing to a
pipe (our backups) it cannot, so every entry says "position not set".  pg_restore copes:
each parallel worker finds its block by walking the chunk headers of every block before
it (one header per row in an uncompressed dump, so millions), and with no positions it
cannot tell table sizes apart to load the largest first.

:class:`DataOffsets` watches the archive as it is spooled for a parallel restore, finds
where each data block starts, and :meth:`DataOffsets.patch` writes those positions into
the spooled file's TOC: the file is then what pg_dump would have written to a file.

Finding a block cheaply relies on one property of uncompressed table data: it is COPY
text (or INSERT statements), and PostgreSQL text never contains a NUL byte.  A chunk
header is a sign byte and a little-endian length, so the only run of ``1 + intSize`` zero
bytes in such a block is its end marker (a chunk of length zero), and what follows it is
the next block's header: type, sign and dump id.  The search for entry *k+1* therefore
looks for "end marker + header of *k+1*" from the start of block *k*, and its first hit is
exact.  Where the property does not hold nothing more is filled in and pg_restore searches
as it always did: compressed archives (binary data), and every block from the first
large-object block on (``BLOBS``: binary data).  Versions of the format this module does
not know are left alone, and a TOC parse is trusted only if the first data block's header
sits exactly where the parse says the TOC ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MAGIC = b"PGDMP"
FORMAT_CUSTOM = 1
BLK_DATA, BLK_BLOBS = 1, 3
OFFSET_NOT_SET, OFFSET_SET, OFFSET_NO_DATA = 1, 2, 3
# (major, minor) of the archive versions this module reads: 1.12 and 1.13 (pg_dump before
# 12); 1.14 (pg_dump 12) adds the table access method to each entry, 1.15 (16) names the
# compression algorithm in one byte, 1.16 (17) adds relkind to each entry.
SUPPORTED = ((1, 12), (1, 13), (1, 14), (1, 15), (1, 16))
TOC_LIMIT = 8 << 20  # bytes of head kept in memory to parse the TOC; beyond, no offsets


class ArchiveFormatError(ValueError):
    """Not a custom-format archive this module can read."""


class _Incomplete(Exception):
    """The bytes seen so far end inside the TOC."""


@dataclass(frozen=True)
class DataEntry:
    dump_id: int
    desc: str
    offset_field: int  # file position of the entry's offset (flag byte, then offSize bytes)

    @property
    def block_type(self) -> int:
        return BLK_BLOBS if self.desc == "BLOBS" else BLK_DATA


@dataclass(frozen=True)
class Toc:
    version: tuple[int, int, int]
    int_size: int
    off_size: int
    compressed: bool
    end: int  # file position where the TOC ends and the first data block starts
    data: tuple[DataEntry, ...]  # entries with a data block, in TOC (= file) order


class _Cursor:
    def __init__(self, buf: bytes | bytearray, int_size: int = 4):
        self.buf, self.pos, self.int_size = buf, 0, int_size

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise _Incomplete
        data = bytes(self.buf[self.pos : end])
        self.pos = end
        return data

    def byte(self) -> int:
        return self.take(1)[0]

    def read_int(self) -> int:
        sign = self.byte()
        value = int.from_bytes(self.take(self.int_size), "little")
        return -value if sign else value

    def read_str(self) -> bytes | None:
        n = self.read_int()
        if n < -1:
            raise ArchiveFormatError(f"negative string length {n} in the TOC")
        return None if n == -1 else self.take(n)


def parse_toc(buf: bytes | bytearray) -> Toc:
    """The TOC of the custom-format archive that ``buf`` starts with.

    Raises :class:`_Incomplete` if ``buf`` ends inside it, :class:`ArchiveFormatError` if it
    is not a custom-format archive of a supported version.
    """
    cur = _Cursor(buf)
    if cur.take(5) != MAGIC:
        raise ArchiveFormatError("not a pg_dump custom-format archive (no PGDMP magic)")
    version = (cur.byte(), cur.byte(), cur.byte())
    if version[:2] not in SUPPORTED:
        raise ArchiveFormatError(f"archive version {version[0]}.{version[1]} not supported")
    cur.int_size, off_size, fmt = cur.byte(), cur.byte(), cur.byte()
    if fmt != FORMAT_CUSTOM or not 1 <= cur.int_size <= 8 or not 1 <= off_size <= 8:
        raise ArchiveFormatError("not a custom-format archive with sane integer sizes")
    compressed = cur.byte() != 0 if version[:2] >= (1, 15) else cur.read_int() != 0
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        cur.read_int()
    for _ in range(3):  # database name, server version, pg_dump version
        cur.read_str()
    count = cur.read_int()
    if count < 0:
        raise ArchiveFormatError(f"negative TOC entry count {count}")
    data = []
    for _ in range(count):
        dump_id = cur.read_int()
        cur.read_int()  # had dumper
        for _ in range(3):  # tableoid, oid, tag
            cur.read_str()
        desc = (cur.read_str() or b"").decode("utf-8", "replace")
        cur.read_int()  # section
        for _ in range(6 if version[:2] >= (1, 14) else 5):
            cur.read_str()  # defn, drop, copy, namespace, tablespace[, table access method]
        if version[:2] >= (1, 16):
            cur.read_int()  # relkind
        cur.read_str()  # owner
        cur.read_str()  # "with oids"
        while cur.read_str() is not None:  # dependencies, ended by a null string
            pass
        field = cur.pos
        flag = cur.byte()
        cur.take(off_size)
        if flag == OFFSET_NOT_SET:
            data.append(DataEntry(dump_id, desc, field))
        elif flag not in (OFFSET_SET, OFFSET_NO_DATA):
            raise ArchiveFormatError(f"unexpected data offset flag {flag} in the TOC")
    return Toc(version, cur.int_size, off_size, compressed, cur.pos, tuple(data))


def block_header(entry: DataEntry, int_size: int) -> bytes:
    """The bytes a data block of ``entry`` starts with: type, sign, dump id."""
    return bytes((entry.block_type, 0)) + entry.dump_id.to_bytes(int_size, "little")


class DataOffsets:
    """Finds where the data blocks of a custom-format archive start, from its bytes fed in
    order; :meth:`patch` writes them into the file those bytes went to.  Never raises on
    what it is fed: an archive it cannot read just gets no offsets."""

    def __init__(self) -> None:
        self.toc: Toc | None = None
        self.found: list[int] = []  # start of the block of toc.data[i]
        self.reason: str | None = None  # why the search stopped early, if it did
        self._head = bytearray()  # the archive's first bytes, until the TOC is parsed
        self._pos = 0  # archive position of the next byte fed
        self._searching = True
        self._needle = b""  # end marker + header of the block looked for
        self._from = 0  # archive position the needle is searched from
        self._tail = b""  # the last len(needle) - 1 bytes fed, for a needle across feeds

    @property
    def complete(self) -> bool:
        return self.toc is not None and len(self.found) == len(self.toc.data)

    def feed(self, block: bytes) -> None:
        start, self._pos = self._pos, self._pos + len(block)
        if not self._searching:
            return
        if not self.found:  # still reading the head: the TOC, then the first block header
            self._head += block
            if self.toc is None and not self._parse():
                return
            rest = self._first_block()
            if rest is None:
                return
            block, start = rest, self.toc.end
        self._search(block, start)

    def patch(self, path: Path) -> int:
        """Write the offsets found into the TOC of the archive at ``path``; how many."""
        if self.toc is None or not self.found:
            return 0
        with open(path, "r+b") as f:
            for entry, position in zip(self.toc.data, self.found, strict=False):
                f.seek(entry.offset_field)
                f.write(bytes((OFFSET_SET,)) + position.to_bytes(self.toc.off_size, "little"))
        return len(self.found)

    def _stop(self, reason: str | None) -> None:
        self._searching, self.reason = False, reason
        self._head, self._tail = bytearray(), b""

    def _parse(self) -> bool:
        try:
            toc = parse_toc(self._head)
        except _Incomplete:
            if len(self._head) > TOC_LIMIT:
                self._stop(f"TOC larger than {TOC_LIMIT >> 20} MiB")
            return False
        except ArchiveFormatError as exc:
            self._stop(str(exc))
            return False
        if toc.compressed:
            self._stop("compressed archive")
            return False
        if not toc.data:
            self._stop(None)
            return False
        self.toc = toc
        return True

    def _first_block(self) -> bytes | None:
        """The bytes after the TOC, once the first block's header is found there (None
        before, and if it is not there)."""
        # If the first block is not right after the TOC, the parse is not to be trusted.
        header = block_header(self.toc.data[0], self.toc.int_size)
        end = self.toc.end
        if len(self._head) < end + len(header):
            return None  # wait for more
        if self._head[end : end + len(header)] != header:
            self._stop("the first data block is not where the TOC ends")
            return None
        rest = bytes(self._head[end:])
        self._head = bytearray()
        self._found(end)
        return rest

    def _found(self, position: int) -> None:
        self.found.append(position)
        entry = self.toc.data[len(self.found) - 1]
        if self.complete:
            self._stop(None)
        elif entry.block_type == BLK_BLOBS:
            self._stop("large-object data (binary) follows")
        else:
            nxt = self.toc.data[len(self.found)]
            self._needle = b"\0" * (1 + self.toc.int_size) + block_header(nxt, self.toc.int_size)
            self._from = position + len(block_header(entry, self.toc.int_size))
            self._tail = b""

    def _search(self, block: bytes, start: int) -> None:
        while self._searching:
            width = len(self._needle) - 1
            if self._tail and self._from < start:  # a needle across the previous feed
                seam_start = start - len(self._tail)
                seam = self._tail + block[:width]
                i = seam.find(self._needle, max(0, self._from - seam_start))
                if i >= 0:
                    self._found(seam_start + i + 1 + self.toc.int_size)
                    continue
            i = block.find(self._needle, max(0, self._from - start))
            if i < 0:
                self._tail = block[-width:] if len(block) >= width else self._tail + block
                self._tail = self._tail[-width:]
                return
            self._found(start + i + 1 + self.toc.int_size)
