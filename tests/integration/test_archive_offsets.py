"""Data offsets of pg_dump custom-format archives (drbackup/sources/postgres/archive.py),
against real archives written by pg_dump into a pipe, as our backups are.

What must hold: every data block is found exactly where a chunk-by-chunk walk of the
archive finds it, however the archive is cut into feeds; the patched archive is byte for
byte what pg_dump itself writes to a file (except the creation time); pg_restore -j2
restores from it; compressed archives, large-object data and anything unreadable get no
offsets (or stop there), and no input makes it raise.
"""

from __future__ import annotations

import os
import random
import subprocess

import pytest

from drbackup.sources.postgres.archive import (
    OFFSET_NOT_SET,
    DataOffsets,
    parse_toc,
)

SCHEMA = """
CREATE TABLE small (id int PRIMARY KEY, note text);
INSERT INTO small SELECT g, 'row ' || g FROM generate_series(1, 500) g;
CREATE TABLE empty_one (id int);
-- rows of 255 and 65535 characters (+ newline, id, tab): chunk lengths whose little-endian
-- bytes hold zeros, next to the zero bytes of block and chunk headers
CREATE TABLE wide (id int, pad text);
INSERT INTO wide SELECT g, repeat('x', 248) FROM generate_series(1, 300) g;
INSERT INTO wide SELECT 1000 + g, repeat('y', 65528) FROM generate_series(1, 3) g;
CREATE TABLE "Ünïcode table" ("naïve col" text, data bytea, j jsonb);
INSERT INTO "Ünïcode table" SELECT 'é' || g, decode(repeat('00ff', 40), 'hex'), '{"a": [1, 2]}'
    FROM generate_series(1, 2000) g;
"""


def pg_dump(cluster, dbname: str, *args: str) -> bytes:
    argv = [str(cluster.bin_dir / "pg_dump"), "--format=custom", *args, cluster.dsn(dbname)]
    return subprocess.run(argv, capture_output=True, check=True).stdout


def walk_blocks(archive: bytes) -> list[int]:
    """Start of every data block, found the slow and certain way: chunk by chunk."""
    toc = parse_toc(archive)
    size = toc.int_size

    def read_int(pos: int) -> tuple[int, int]:
        value = int.from_bytes(archive[pos + 1 : pos + 1 + size], "little")
        return (-value if archive[pos] else value), pos + 1 + size

    starts, pos = [], toc.end
    while pos < len(archive):
        starts.append(pos)
        kind, pos = archive[pos], pos + 1
        _, pos = read_int(pos)  # dump id
        while True:
            if kind == 3:  # large objects: (oid, chunks...) until oid 0
                oid, pos = read_int(pos)
                if oid == 0:
                    break
            while True:
                length, pos = read_int(pos)
                if length == 0:
                    break
                pos += length
            if kind != 3:
                break
    return starts


def feed_all(archive: bytes, size: int) -> DataOffsets:
    offsets = DataOffsets()
    for i in range(0, len(archive), size):
        offsets.feed(archive[i : i + size])
    return offsets


@pytest.fixture
def shop(pg_db):
    pg_db.execute(SCHEMA)
    return pg_db


@pytest.mark.parametrize("feed", [1 << 20, 4096, 1000, 13, 7])
def test_every_block_is_found_where_a_chunk_walk_finds_it(shop, feed):
    archive = pg_dump(shop.cluster, shop.name, "--compress=0")
    offsets = feed_all(archive, feed)
    assert offsets.reason is None
    assert offsets.complete
    assert [e.desc for e in offsets.toc.data] == ["TABLE DATA"] * 4
    assert offsets.found == walk_blocks(archive)


def test_the_patched_archive_is_what_pg_dump_writes_to_a_file(shop, tmp_path):
    piped = pg_dump(shop.cluster, shop.name, "--compress=0")
    own_file = tmp_path / "own.dump"
    pg_dump(shop.cluster, shop.name, "--compress=0", f"--file={own_file}")
    spooled = tmp_path / "spooled.dump"
    spooled.write_bytes(piped)
    offsets = feed_all(piped, 1 << 16)
    assert offsets.patch(spooled) == 4
    # The creation time (seven integers after the compression level) differs, nothing else.
    toc = parse_toc(piped)
    assert toc.version[:2] == (1, 14) or toc.version[:2] >= (1, 15)
    start = 11 + (1 if toc.version[:2] >= (1, 15) else 1 + toc.int_size)
    end = start + 7 * (1 + toc.int_size)
    ours, theirs = spooled.read_bytes(), own_file.read_bytes()
    assert ours[:start] + ours[end:] == theirs[:start] + theirs[end:]
    assert ours != piped


def test_pg_restore_j2_restores_the_patched_archive(shop, pg_cluster, tmp_path):
    archive = pg_dump(shop.cluster, shop.name, "--compress=0")
    path = tmp_path / "a.dump"
    path.write_bytes(archive)
    assert feed_all(archive, 1 << 20).patch(path) == 4
    target = f"{shop.name}_r"
    pg_cluster.create_database(target)
    try:
        subprocess.run(
            [str(pg_cluster.bin_dir / "pg_restore"), "-j2", "-d", pg_cluster.dsn(target), path],
            capture_output=True,
            check=True,
        )
        count = "SELECT count(*), sum(length(pad)) FROM wide"
        assert pg_cluster.execute(count, dbname=target) == shop.execute(count)
        uni = 'SELECT count(*) FROM "Ünïcode table"'
        assert pg_cluster.execute(uni, dbname=target) == [(2000,)]
    finally:
        pg_cluster.drop_database(target)


def test_large_objects_are_found_when_they_come_last(shop):
    shop.execute("SELECT lo_from_bytea(0, decode(repeat('00', 5000), 'hex'))")
    archive = pg_dump(shop.cluster, shop.name, "--compress=0")
    offsets = feed_all(archive, 4096)
    assert [e.desc for e in offsets.toc.data][-1] == "BLOBS"
    assert offsets.complete and offsets.found == walk_blocks(archive)


def _int(v: int) -> bytes:
    return bytes([1 if v < 0 else 0]) + abs(v).to_bytes(4, "little")


def _str(s: bytes | None) -> bytes:
    return _int(-1) if s is None else _int(len(s)) + s


def synthetic_archive(blocks: list[tuple[int, str, bytes]]) -> bytes:
    """A version 1.14 archive whose data entries are ``(dump id, desc, block body)``."""
    head = b"PGDMP" + bytes([1, 14, 0, 4, 8, 1]) + _int(0) + _int(0) * 7
    head += _str(b"db") + _str(b"15.0") + _str(b"15.0") + _int(len(blocks))
    for dump_id, desc, _ in blocks:
        head += _int(dump_id) + _int(1) + _str(b"0") * 2 + _str(b"tag") + _str(desc.encode())
        head += _int(3) + _str(b"") * 6 + _str(b"postgres") + _str(b"false") + _str(None)
        head += bytes([OFFSET_NOT_SET]) + bytes(8)
    body = b"".join(bytes([3 if d == "BLOBS" else 1]) + _int(i) + b for i, d, b in blocks)
    return head + body


def test_large_object_data_ends_the_search():
    # Large-object data is binary: it may hold exactly the bytes searched for next (here the
    # end marker and header of block 8), so the search stops at the first BLOBS block.
    trap = bytes(5) + b"\x01" + _int(8)
    blobs = _int(16384) + _int(len(trap)) + trap + _int(0) + _int(0)
    rows = _int(4) + b"1\t2\n" + _int(0)
    archive = synthetic_archive(
        [(5, "TABLE DATA", rows), (7, "BLOBS", blobs), (8, "TABLE DATA", rows)]
    )
    offsets = feed_all(archive, 64)
    assert offsets.found == walk_blocks(archive)[:2]
    assert offsets.reason == "large-object data (binary) follows"


def test_compressed_archives_get_no_offsets(shop, tmp_path):
    archive = pg_dump(shop.cluster, shop.name, "--compress=1")
    offsets = feed_all(archive, 1 << 20)
    assert (offsets.found, offsets.reason) == ([], "compressed archive")
    path = tmp_path / "c.dump"
    path.write_bytes(archive)
    assert offsets.patch(path) == 0
    assert path.read_bytes() == archive


def test_a_toc_that_disagrees_with_the_data_is_not_trusted(shop):
    archive = bytearray(pg_dump(shop.cluster, shop.name, "--compress=0"))
    toc = parse_toc(archive)
    assert archive[toc.data[0].offset_field] == OFFSET_NOT_SET
    # The first block names another dump id than the TOC's first data entry: the first
    # block is then "not where the TOC ends", and nothing at all is filled in.
    archive[toc.end + 2] ^= 0x01
    offsets = feed_all(bytes(archive), 1 << 20)
    assert offsets.found == []
    assert offsets.reason == "the first data block is not where the TOC ends"


def test_no_input_makes_it_raise(shop):
    archive = pg_dump(shop.cluster, shop.name, "--compress=0")
    rng = random.Random(7)
    cases = {
        "random bytes": os.urandom(1 << 16),
        "not an archive": b"-- plain SQL dump\nCREATE TABLE t ();\n" * 100,
        "truncated in the TOC": archive[: parse_toc(archive).end - 10],
        "truncated in the data": archive[: walk_blocks(archive)[2] + 1000],
        "unknown version": archive[:5] + b"\x09\x09\x00" + archive[8:],
    }
    for i in range(20):
        damaged = bytearray(archive)
        damaged[rng.randrange(len(damaged))] ^= 1 << rng.randrange(8)
        cases[f"bit flip {i}"] = bytes(damaged)
    for what, data in cases.items():
        offsets = feed_all(data, 997)
        assert offsets.found == walk_blocks(archive)[: len(offsets.found)] or what.startswith(
            "bit flip"
        ), what
    assert feed_all(cases["unknown version"], 997).reason == "archive version 9.9 not supported"
    assert feed_all(cases["random bytes"], 997).reason.startswith("not a pg_dump custom")
    truncated = feed_all(cases["truncated in the data"], 997)
    assert len(truncated.found) == 3 and truncated.reason is None
