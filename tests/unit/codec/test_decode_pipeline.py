"""Decoding a stored object (``drbackup/codec/pipeline.py``, ``DecodedReader``) once it
hands work to helper threads: a large object is read, authenticated and hashed in threads
while ``read`` decompresses.  The checks must be exactly those of the single-threaded path:
a damaged chunk fails naming the object after exactly the authentic plaintext before it, a
plaintext or stored digest that differs from the record fails at the end, and no helper
thread outlives the reader.  No storage backend: objects live in a dict.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time

import pytest

from drbackup.codec import pipeline
from drbackup.codec.aead import TAG_SIZE, read_header
from drbackup.codec.pipeline import CodecSettings, ObjectRecord, encode_to_storage, open_decoded
from drbackup.errors import IntegrityError

DATA_KEY = bytes(range(32))
KEY = "data/app/20240101T000000Z-abcdef/0000-00000"
CHUNK = 4096
HELPERS = {"drbackup-decrypt", "drbackup-sha256"}


class MemoryStorage:
    """Just what encode_to_storage and open_decoded use."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def put(self, key: str, reader) -> None:
        parts = []
        while part := reader.read(1 << 16):
            parts.append(part)
        self.objects[key] = b"".join(parts)

    def open(self, key: str):
        return io.BytesIO(self.objects[key])


def data_of(size: int, seed: int = 0) -> bytes:
    """Compressible but not trivial: random words from a small vocabulary."""
    rnd = random.Random(seed)
    words = [rnd.randbytes(rnd.randint(3, 12)) for _ in range(500)]
    out = bytearray()
    while len(out) < size:
        out += rnd.choice(words)
    return bytes(out[:size])


def store(storage, data: bytes, *, compress: bool, chunk: int = CHUNK) -> ObjectRecord:
    settings = CodecSettings(level=1, threads=1, chunk_size=chunk, compress=compress)
    blocks = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
    return encode_to_storage(
        storage, KEY, blocks, slot_type=1, slot=b"slot", data_key=DATA_KEY, settings=settings
    )


def helper_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name in HELPERS}


def wait_no_helpers(timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while helper_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert helper_threads() == set()


@pytest.fixture
def early(monkeypatch):
    """Helper threads after 64 KiB, so small objects exercise the threaded path."""
    monkeypatch.setattr(pipeline, "PIPELINE_AFTER", 64 << 10)


@pytest.fixture
def started(monkeypatch) -> list[str]:
    """The helpers readers start, in order (a helper may finish before anyone looks)."""
    names: list[str] = []

    class Prefetcher(pipeline._Prefetcher):
        def __init__(self, *args, **kwargs):
            names.append("drbackup-decrypt")
            super().__init__(*args, **kwargs)

    class BackgroundSha(pipeline._BackgroundSha):
        def __init__(self, *args, **kwargs):
            names.append("drbackup-sha256")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_Prefetcher", Prefetcher)
    monkeypatch.setattr(pipeline, "_BackgroundSha", BackgroundSha)
    return names


def read_all(reader, n: int) -> bytes:
    got = bytearray()
    while block := reader.read(n):
        got += block
    return bytes(got)


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("n", [1 << 20, 100_003, 1000])
def test_large_object_round_trips_through_helper_threads(early, started, compress, n):
    storage = MemoryStorage()
    data = data_of(1_500_000)
    record = store(storage, data, compress=compress)
    with open_decoded(storage, KEY, lambda h: DATA_KEY, record) as reader:
        assert read_all(reader, n) == data
        assert reader.read(n) == b""  # and stays at the end
    assert started == ["drbackup-decrypt", "drbackup-sha256"]
    wait_no_helpers()


def test_default_threshold_starts_helpers_only_for_a_large_object(started):
    storage = MemoryStorage()
    small = data_of(pipeline.PIPELINE_AFTER // 2, seed=1)
    record = store(storage, small, compress=True, chunk=1 << 20)
    with open_decoded(storage, KEY, lambda h: DATA_KEY, record) as reader:
        assert read_all(reader, 1 << 20) == small
    assert started == []

    large = data_of(pipeline.PIPELINE_AFTER + (3 << 20), seed=2)
    record = store(storage, large, compress=True, chunk=1 << 20)
    with open_decoded(storage, KEY, lambda h: DATA_KEY, record) as reader:
        assert read_all(reader, 1 << 20) == large
    assert started == ["drbackup-decrypt", "drbackup-sha256"]
    wait_no_helpers()


def test_shared_plain_sha_receives_the_whole_plaintext(early):
    storage = MemoryStorage()
    data = data_of(700_000, seed=3)
    record = store(storage, data, compress=True)
    shared = hashlib.sha256()
    with open_decoded(storage, KEY, lambda h: DATA_KEY, record, plain_sha=shared) as reader:
        assert read_all(reader, 1 << 16) == data
    assert shared.hexdigest() == hashlib.sha256(data).hexdigest() == record.sha256


def flip_in_chunk(storage, index: int) -> None:
    stored = storage.objects[KEY]
    _, raw = read_header(io.BytesIO(stored), KEY)
    pos = len(raw) + index * (CHUNK + TAG_SIZE) + 100
    damaged = bytearray(stored)
    damaged[pos] ^= 0x40
    storage.objects[KEY] = bytes(damaged)


def test_damaged_chunk_past_the_threshold_fails_naming_the_object(early):
    """Uncompressed, so chunk k starts at plaintext offset k * CHUNK: the reader returns
    exactly the plaintext before the damaged chunk, then raises."""
    storage = MemoryStorage()
    data = data_of(1_000_000, seed=4)
    record = store(storage, data, compress=False)
    bad = 200  # 800 KiB in: well past the 64 KiB threshold
    flip_in_chunk(storage, bad)
    got = bytearray()
    with (
        pytest.raises(IntegrityError) as info,
        open_decoded(storage, KEY, lambda h: DATA_KEY, record) as reader,
    ):
        while block := reader.read(10_000):
            got += block
    assert str(info.value) == (
        f"{KEY}: chunk {bad} failed authentication "
        "(corrupted, tampered, moved from another key, or wrong key)"
    )
    assert bytes(got) == data[: bad * CHUNK]
    wait_no_helpers()


def test_damaged_chunk_of_a_compressed_object_never_yields_wrong_plaintext(early):
    storage = MemoryStorage()
    data = data_of(2_000_000, seed=5)
    record = store(storage, data, compress=True)
    flip_in_chunk(storage, record.chunks - 3)
    got = bytearray()
    with (
        pytest.raises(IntegrityError) as info,
        open_decoded(storage, KEY, lambda h: DATA_KEY, record) as reader,
    ):
        while block := reader.read(1 << 16):
            got += block
    assert str(info.value).startswith(f"{KEY}: chunk {record.chunks - 3} failed authentication")
    assert data.startswith(bytes(got)) and len(got) < len(data)
    wait_no_helpers()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "0" * 64}, "plaintext does not match the manifest"),
        ({"size": 1}, "plaintext does not match the manifest"),
        ({"stored_sha256": "0" * 64}, "stored bytes do not match the manifest's sha256"),
    ],
)
def test_record_mismatch_fails_at_the_end(early, change, message):
    storage = MemoryStorage()
    data = data_of(600_000, seed=6)
    record = ObjectRecord.from_dict(store(storage, data, compress=True).to_dict() | change)
    with (
        pytest.raises(IntegrityError) as info,
        open_decoded(storage, KEY, lambda h: DATA_KEY, record) as reader,
    ):
        read_all(reader, 1 << 16)
    assert str(info.value).startswith(f"{KEY}: {message}")
    wait_no_helpers()


def test_closing_mid_way_stops_the_helper_threads(early, started):
    storage = MemoryStorage()
    data = data_of(3_000_000, seed=7)
    record = store(storage, data, compress=True)
    reader = open_decoded(storage, KEY, lambda h: DATA_KEY, record)
    got = bytearray()
    while len(got) < 500_000:
        got += reader.read(1 << 16)
    assert started == ["drbackup-decrypt", "drbackup-sha256"]
    # Hundreds of chunks are left, four fit the queue: the producer waits on it.
    assert helper_threads() == HELPERS
    reader.close()
    assert data.startswith(bytes(got))
    wait_no_helpers()
