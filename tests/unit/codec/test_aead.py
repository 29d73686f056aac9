"""The authenticated chunk stream (``drbackup/codec/aead.py``): round trips and every way
an object can be damaged.  No storage: objects are built and opened in memory.

Each failure test checks three things: the exact one-line message (it names the object key
and the chunk index), that the chunks yielded before the failure are exactly the authentic
plaintext before the damaged point, and that nothing is yielded after it.
"""

from __future__ import annotations

import io
import random

import pytest

from drbackup.codec.aead import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    SALT_SIZE,
    TAG_SIZE,
    ChunkSealer,
    ObjectHeader,
    new_header,
    open_chunks,
    read_header,
)
from drbackup.errors import IntegrityError

DATA_KEY = bytes(range(32))
OBJ = "data/app/20240101T000000Z-abcdef/0000-00000"
OTHER = "data/app/20240101T000000Z-abcdef/0000-00001"
SLOT = bytes(range(100, 160))  # opaque to the chunk stream; authenticated as part of the header
CHUNK = 64  # small chunks keep the tests small; the format is the same at 1 MiB
SEALED = CHUNK + TAG_SIZE

MID_CHUNK_MSG = "(corrupted, tampered, moved from another key, or wrong key)"
FINAL_CHUNK_MSG = "(corrupted, truncated, or chunks reordered or spliced)"


def plaintext_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def make_header(chunk_size: int = CHUNK) -> ObjectHeader:
    return new_header(1, SLOT, compressed=False, chunk_size=chunk_size)


def seal(
    plaintext: bytes,
    header: ObjectHeader | None = None,
    *,
    object_key: str = OBJ,
    data_key: bytes = DATA_KEY,
    feed: int = 7,
) -> bytes:
    """A whole stored object: header then chunks, fed to the sealer ``feed`` bytes at a time."""
    sealer = ChunkSealer(data_key, object_key, header or make_header())
    parts = [sealer.header_bytes]
    for i in range(0, len(plaintext), feed):
        parts.extend(sealer.update(plaintext[i : i + feed]))
    parts.append(sealer.finish())
    return b"".join(parts)


class ShortReads(io.RawIOBase):
    """A reader that returns at most ``step`` bytes per read, like a pipe or a socket."""

    def __init__(self, data: bytes, step: int = 5):
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._step if n < 0 else min(n, self._step)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


def open_stream(
    stored: bytes, *, object_key: str = OBJ, data_key: bytes = DATA_KEY, short_reads: int = 0
) -> list[bytes]:
    reader = ShortReads(stored, short_reads) if short_reads else io.BytesIO(stored)
    header, header_bytes = read_header(reader, object_key)
    return list(open_chunks(reader, data_key, object_key, header, header_bytes))


def open_until_failure(stored: bytes, **kw) -> tuple[list[bytes], IntegrityError]:
    """The chunks yielded before :class:`IntegrityError`, and the error (which must come)."""
    object_key = kw.pop("object_key", OBJ)
    reader = io.BytesIO(stored)
    header, header_bytes = read_header(reader, object_key)
    got = []
    with pytest.raises(IntegrityError) as info:
        for chunk in open_chunks(
            reader, kw.pop("data_key", DATA_KEY), object_key, header, header_bytes
        ):
            got.append(chunk)
    return got, info.value


def header_len(header: ObjectHeader) -> int:
    return len(header.encode())


def chunk_at(stored: bytes, index: int, hlen: int) -> bytes:
    return stored[hlen + index * SEALED : hlen + (index + 1) * SEALED]


def flip(data: bytes, pos: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[pos] ^= mask
    return bytes(out)


def assert_fails_at(stored: bytes, plaintext: bytes, index: int, kind: str, object_key: str = OBJ):
    got, err = open_until_failure(stored, object_key=object_key)
    assert str(err) == f"{object_key}: chunk {index} failed authentication {kind}"
    assert "\n" not in str(err)
    assert got == [plaintext[i * CHUNK : (i + 1) * CHUNK] for i in range(index)]


# -- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "chunks"),
    [
        (0, 1),
        (1, 1),
        (CHUNK - 1, 1),
        (CHUNK, 1),
        (CHUNK + 1, 2),
        (3 * CHUNK, 3),
        (3 * CHUNK + 1, 4),
    ],
)
@pytest.mark.parametrize("feed", [1, 7, CHUNK, 10_000])
def test_round_trip_at_chunk_boundaries(size, chunks, feed):
    """Every chunk but the last is full; the last may be empty or full."""
    plaintext = plaintext_of(size)
    header = make_header()
    sealer = ChunkSealer(DATA_KEY, OBJ, header)
    stored = [sealer.header_bytes]
    for i in range(0, size, feed):
        stored.extend(sealer.update(plaintext[i : i + feed]))
    stored.append(sealer.finish())
    stored = b"".join(stored)

    assert sealer.chunks == chunks
    assert len(stored) == header_len(header) + size + chunks * TAG_SIZE
    opened = open_stream(stored)
    assert b"".join(opened) == plaintext
    assert len(opened) == chunks
    assert all(len(c) == CHUNK for c in opened[:-1])
    assert open_stream(stored, short_reads=5) == opened


@pytest.mark.parametrize("size", [0, DEFAULT_CHUNK_SIZE, 3 * DEFAULT_CHUNK_SIZE + 5])
def test_round_trip_with_default_chunk_size_and_short_reads(size):
    plaintext = plaintext_of(size)
    stored = seal(plaintext, make_header(DEFAULT_CHUNK_SIZE), feed=300_000)
    assert b"".join(open_stream(stored, short_reads=65_521)) == plaintext


def test_update_holds_back_a_full_chunk_until_more_arrives():
    sealer = ChunkSealer(DATA_KEY, OBJ, make_header())
    assert sealer.update(b"x" * CHUNK) == []  # could still be the final chunk
    assert len(sealer.update(b"y")) == 1
    assert sealer.chunks == 1


def test_header_round_trip():
    header = make_header()
    parsed, raw = read_header(io.BytesIO(header.encode() + b"rest"), OBJ)
    assert parsed == header
    assert raw == header.encode()
    assert len(header.salt) == SALT_SIZE
    assert make_header().salt != header.salt  # a fresh salt per object


def test_compressed_flag():
    assert new_header(1, SLOT, compressed=True, chunk_size=CHUNK).compressed
    assert not make_header().compressed


# -- damaged headers ------------------------------------------------------------------------


def test_bad_magic():
    stored = seal(b"abc")
    with pytest.raises(IntegrityError) as info:
        open_stream(b"XXXX" + stored[4:])
    assert str(info.value) == f"{OBJ}: not a drbackup object (bad magic)"


def test_unsupported_version():
    stored = seal(b"abc")
    with pytest.raises(IntegrityError) as info:
        open_stream(flip(stored, 4, 0x03))
    assert str(info.value) == f"{OBJ}: unsupported object format version 2"


@pytest.mark.parametrize("cut", [0, 3, 9, 9 + len(SLOT) + 5])
def test_truncated_header(cut):
    with pytest.raises(IntegrityError) as info:
        open_stream(seal(b"abc")[:cut])
    assert str(info.value) == f"{OBJ}: truncated object header"


@pytest.mark.parametrize("chunk_size", [0, MAX_CHUNK_SIZE + 1])
def test_invalid_chunk_size(chunk_size):
    stored = ObjectHeader(0, 1, SLOT, bytes(SALT_SIZE), chunk_size).encode()
    with pytest.raises(IntegrityError) as info:
        open_stream(stored)
    assert str(info.value) == f"{OBJ}: invalid chunk size {chunk_size} in header"


# -- damaged chunk streams ---------------------------------------------------------------
# A three-chunk object: two full chunks and a final one of 10 bytes.

PLAIN = plaintext_of(2 * CHUNK + 10, seed=1)


@pytest.fixture
def obj() -> tuple[bytes, int]:
    """(stored object, header length)."""
    header = make_header()
    return seal(PLAIN, header), header_len(header)


@pytest.mark.parametrize(
    ("region", "offset"),
    [
        ("flags", lambda h: 5),
        ("slot type", lambda h: 6),
        ("slot", lambda h: 9 + 17),
        ("salt", lambda h: 9 + len(SLOT) + 3),
        ("chunk size", lambda h: h - 1),
    ],
)
def test_flipped_header_byte_fails_chunk_0(obj, region, offset):
    stored, hlen = obj
    assert_fails_at(flip(stored, offset(hlen)), PLAIN, 0, MID_CHUNK_MSG)


@pytest.mark.parametrize("index", [0, 1])
@pytest.mark.parametrize(
    ("region", "offset"),
    [("ciphertext", 0), ("ciphertext", CHUNK - 1), ("tag", CHUNK), ("tag", SEALED - 1)],
)
def test_flipped_byte_in_a_chunk(obj, index, region, offset):
    stored, hlen = obj
    assert_fails_at(flip(stored, hlen + index * SEALED + offset), PLAIN, index, MID_CHUNK_MSG)


@pytest.mark.parametrize("offset", [0, 9, 10, 10 + TAG_SIZE - 1])
def test_flipped_byte_in_the_final_chunk(obj, offset):
    stored, hlen = obj
    assert_fails_at(flip(stored, hlen + 2 * SEALED + offset), PLAIN, 2, FINAL_CHUNK_MSG)


def test_every_single_byte_flip_is_detected(obj):
    stored, hlen = obj
    for pos in range(len(stored)):
        for mask in (0x01, 0x80):
            damaged = flip(stored, pos, mask)
            reader = io.BytesIO(damaged)
            got = []
            with pytest.raises(IntegrityError, match=f"^{OBJ}: "):
                header, raw = read_header(reader, OBJ)
                for chunk in open_chunks(reader, DATA_KEY, OBJ, header, raw):
                    got.append(chunk)
            assert b"".join(got) == PLAIN[: len(b"".join(got))], f"wrong plaintext at {pos}"
            assert len(b"".join(got)) < len(PLAIN)


def test_truncated_at_a_chunk_boundary(obj):
    stored, hlen = obj
    dropped_last = stored[: hlen + 2 * SEALED]
    assert_fails_at(dropped_last, PLAIN, 1, FINAL_CHUNK_MSG)


def test_truncated_at_a_chunk_boundary_when_final_chunk_is_full():
    plaintext = plaintext_of(3 * CHUNK, seed=2)
    header = make_header()
    stored = seal(plaintext, header)
    assert_fails_at(stored[: header_len(header) + 2 * SEALED], plaintext, 1, FINAL_CHUNK_MSG)


def test_truncated_mid_chunk(obj):
    stored, hlen = obj
    assert_fails_at(stored[: hlen + SEALED + 30], PLAIN, 1, FINAL_CHUNK_MSG)


@pytest.mark.parametrize(("keep", "index"), [(0, 0), (5, 0), (SEALED + TAG_SIZE - 1, 1)])
def test_truncated_shorter_than_a_tag(obj, keep, index):
    stored, hlen = obj
    got, err = open_until_failure(stored[: hlen + keep])
    assert str(err) == f"{OBJ}: truncated at chunk {index} (no final chunk)"
    assert err.hint == "the object was cut short; restore from another backup"
    assert got == [PLAIN[:CHUNK]] * index


@pytest.mark.parametrize("size", [2 * CHUNK + 10, 3 * CHUNK])
def test_extra_chunk_after_final(size):
    """A chunk of the same object (same key, same salt) appended after the final one."""
    header = make_header()
    hlen = header_len(header)
    plaintext = plaintext_of(size, seed=3)
    stored = seal(plaintext, header)
    longer = seal(plaintext + plaintext_of(2 * CHUNK, seed=4), header)
    last = (size - 1) // CHUNK
    extended = stored + chunk_at(longer, last + 1, hlen)
    assert_fails_at(extended, plaintext, last, MID_CHUNK_MSG)


def test_trailing_garbage_after_final(obj):
    stored, _ = obj
    assert_fails_at(stored + b"\0", PLAIN, 2, FINAL_CHUNK_MSG)


def test_two_chunks_swapped(obj):
    stored, hlen = obj
    c0, c1 = chunk_at(stored, 0, hlen), chunk_at(stored, 1, hlen)
    swapped = stored[:hlen] + c1 + c0 + stored[hlen + 2 * SEALED :]
    assert_fails_at(swapped, PLAIN, 0, MID_CHUNK_MSG)


def test_chunk_spliced_from_another_object_with_the_same_data_key(obj):
    stored, hlen = obj
    other_header = make_header()
    other = seal(plaintext_of(3 * CHUNK, seed=5), other_header, object_key=OTHER)
    spliced = (
        stored[:hlen] + chunk_at(stored, 0, hlen) + chunk_at(other, 1, header_len(other_header))
    )
    spliced += stored[hlen + 2 * SEALED :]
    assert_fails_at(spliced, PLAIN, 1, MID_CHUNK_MSG)


def test_chunk_spliced_from_another_object_with_the_same_salt(obj):
    """Even a header copied along with the chunk does not help: the key name is bound."""
    stored, hlen = obj
    header, _ = read_header(io.BytesIO(stored), OBJ)
    other = seal(plaintext_of(3 * CHUNK, seed=6), header, object_key=OTHER)
    spliced = stored[: hlen + SEALED] + chunk_at(other, 1, hlen) + stored[hlen + 2 * SEALED :]
    assert_fails_at(spliced, PLAIN, 1, MID_CHUNK_MSG)


def test_object_moved_to_another_key(obj):
    stored, _ = obj
    assert_fails_at(stored, PLAIN, 0, MID_CHUNK_MSG, object_key=OTHER)


def test_wrong_data_key(obj):
    stored, _ = obj
    got, err = open_until_failure(stored, data_key=bytes(32))
    assert str(err) == f"{OBJ}: chunk 0 failed authentication {MID_CHUNK_MSG}"
    assert got == []


def test_error_is_one_line_with_no_hint_for_auth_failures(obj):
    stored, hlen = obj
    _, err = open_until_failure(flip(stored, hlen))
    assert err.hint is None
    assert "\n" not in str(err)


@pytest.mark.parametrize("chunk_size", [0, MAX_CHUNK_SIZE + 1])
def test_sealer_refuses_an_invalid_chunk_size(chunk_size):
    """A chunk size of 0 would otherwise seal empty chunks forever."""
    header = ObjectHeader(0, 1, SLOT, bytes(SALT_SIZE), chunk_size)
    with pytest.raises(ValueError, match="chunk size must be"):
        ChunkSealer(DATA_KEY, OBJ, header)


def test_sealer_accepts_any_bytes_like_input():
    plaintext = plaintext_of(3 * CHUNK + 5)
    sealer = ChunkSealer(DATA_KEY, OBJ, make_header())
    parts = [sealer.header_bytes]
    parts += sealer.update(bytearray(plaintext[:CHUNK]))
    parts += sealer.update(memoryview(plaintext)[CHUNK:])
    parts.append(sealer.finish())
    assert b"".join(open_stream(b"".join(parts))) == plaintext
