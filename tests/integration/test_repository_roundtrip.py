"""Repository round trips over every storage backend: what goes in comes out, byte for byte.

A hypothesis property test draws sizes around chunk and segment boundaries, random block
feeds and compressibility; one test streams more than 100 MB.  Every backup is read back
through a freshly opened repository (only the storage and the passphrase), compared with
the source byte for byte, and must pass ``verify`` with no problem.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drbackup.codec.pipeline import CodecSettings
from drbackup.repository.keyring import Secrets
from drbackup.repository.repo import Repository

FAST = {"n": 1024, "r": 8, "p": 1}
BACKENDS = ["local", "s3"]
CHUNK = 4096  # small chunks and segments: many boundaries in little data
SEGMENT = 3 * CHUNK + 100
LARGE = 100 * 1000 * 1000 + 12_345  # > 100 MB, not a multiple of anything


@pytest.fixture(params=BACKENDS)
def storage(request):
    """Each backend in turn, empty and reachable."""
    return request.getfixturevalue(f"{request.param}_storage")


@pytest.fixture
def repo(storage) -> Repository:
    return Repository.init(storage, Secrets(passphrase="pw"), scrypt_params=FAST)


# -- data --------------------------------------------------------------------------------


def _text_pool(size: int = 4 << 20) -> bytes:
    """CSV-like rows (ids, md5 hex, timestamps, amounts, emails): compresses about 2-3:1."""
    rows, total, i = [], 0, 0
    while total < size:
        digest = hashlib.md5(i.to_bytes(8, "big")).hexdigest()
        row = (
            f"{i},{digest},2024-03-{i % 28 + 1:02d}T{i % 24:02d}:{i % 60:02d}:{i * 7 % 60:02d}Z,"
            f"{(i * 7919) % 100000 / 100:.2f},user{i % 9973}@example.com,"
            f"{'active' if i % 3 else 'closed'}\n"
        ).encode()
        rows.append(row)
        total += len(row)
        i += 1
    return b"".join(rows)[:size]


POOL = _text_pool()


def mixed_blocks(
    total: int, seed: int, block: int = 1 << 20, noise: float = 0.2
) -> Iterator[bytes]:
    """``total`` deterministic bytes: text rows from random offsets with random bytes mixed in."""
    rnd = random.Random(seed)
    produced = 0
    while produced < total:
        n = min(block, total - produced)
        random_part = rnd.randbytes(int(n * noise))
        start = rnd.randrange(len(POOL) - n)
        yield random_part + POOL[start : start + n - len(random_part)]
        produced += n


def payload(size: int, noise: float, seed: int) -> bytes:
    """``size`` bytes; ``noise`` is the share of incompressible random bytes."""
    return b"".join(mixed_blocks(size, seed, block=max(size, 1), noise=noise)) if size else b""


def split(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    """``data`` cut into blocks of the given sizes (cycled), as a source would yield it."""
    pos, i = 0, 0
    while pos < len(data):
        step = sizes[i % len(sizes)]
        yield data[pos : pos + step]
        pos += step
        i += 1


class _Rechunk:
    """Takes exact byte counts from an iterator of differently sized blocks."""

    def __init__(self, blocks: Iterable[bytes]):
        self._blocks = iter(blocks)
        self._buf = bytearray()

    def take(self, n: int) -> bytes:
        while len(self._buf) < n:
            more = next(self._blocks, None)
            if more is None:
                break
            self._buf += more
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out


def assert_same_stream(got: Iterable[bytes], want: Iterable[bytes]) -> int:
    """Compare two block streams byte for byte in bounded memory; return the length."""
    expected = _Rechunk(want)
    offset = 0
    for block in got:
        exp = expected.take(len(block))
        if block != exp:
            at = next(
                (i for i, (a, b) in enumerate(zip(block, exp, strict=False)) if a != b), len(exp)
            )
            pytest.fail(f"restored stream differs from the source at byte {offset + at}")
        offset += len(block)
    assert expected.take(1) == b"", f"restored stream ends early, at byte {offset}"
    return offset


def backup(repo: Repository, blocks: Iterable[bytes], name: str = "db"):
    with repo.new_backup("app", "postgres") as writer:
        writer.add_stream(name, "pg_dump", iter(blocks))
        return writer.commit()


def reopen(repo: Repository) -> Repository:
    """The repository as a restore host sees it: only the storage and the passphrase."""
    return Repository.open(repo._storage, Secrets(passphrase="pw"))


# -- tests -------------------------------------------------------------------------------

_BOUNDARIES = [
    0,
    1,
    CHUNK - 1,
    CHUNK,
    CHUNK + 1,
    3 * CHUNK,
    SEGMENT - 1,
    SEGMENT,
    SEGMENT + 1,
    2 * SEGMENT,
    2 * SEGMENT + 1,
]
sizes = st.one_of(
    st.sampled_from(_BOUNDARIES),
    st.integers(0, 6 * SEGMENT),
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    size=sizes,
    noise=st.sampled_from([0.0, 0.3, 1.0]),
    compress=st.booleans(),
    feeds=st.lists(st.integers(1, 3 * SEGMENT), min_size=1, max_size=4),
    segment=st.sampled_from([SEGMENT, CHUNK, 1 << 30]),
    seed=st.integers(0, 2**32),
)
def test_round_trip_property(repo, size, noise, compress, feeds, segment, seed):
    # One repository serves every example (fixtures are not reset between examples).
    repo.codec = CodecSettings(chunk_size=CHUNK, compress=compress)
    repo.segment_size = segment
    data = payload(size, noise, seed)

    manifest = backup(repo, split(data, feeds))

    item = manifest.items[0]
    assert (item.size, item.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert len(item.objects) == max(1, -(-size // segment))
    assert [o.size for o in item.objects[:-1]] == [segment] * (len(item.objects) - 1)
    assert all(o.compressed == compress for o in item.objects)
    reader_repo = reopen(repo)
    loaded = reader_repo.load_manifest(manifest.ref)
    assert loaded.to_dict() == manifest.to_dict()
    with reader_repo.open_item(loaded.items[0]) as reader:
        assert b"".join(reader) == data
    assert reader_repo.verify(loaded) == []


def test_several_items_and_backups(repo):
    repo.segment_size = 50_000
    first = payload(120_000, 0.5, seed=1)
    with repo.new_backup("app", "postgres") as writer:
        writer.add_stream("db", "pg_dump", split(first, [7000]))
        writer.add_stream("globals", "sql", iter([b"CREATE ROLE app;\n"]))
        writer.add_stream("empty", "sql", iter([]))
        one = writer.commit()
    two = backup(repo, [b"second backup"])

    reader_repo = reopen(repo)
    assert [r.backup_id for r in reader_repo.list_refs("app")] == sorted(
        [one.backup_id, two.backup_id]
    )
    loaded = reader_repo.load_manifest(one.ref)
    assert [i.name for i in loaded.items] == ["db", "globals", "empty"]
    expected = {"db": first, "globals": b"CREATE ROLE app;\n", "empty": b""}
    for item in loaded.items:
        with reader_repo.open_item(item) as reader:
            assert b"".join(reader) == expected[item.name]
    assert reader_repo.verify(loaded) == []
    assert reader_repo.verify(reader_repo.load_manifest(two.ref)) == []


def test_public_key_mode_writer_cannot_read_reader_can(storage):
    repo = Repository.init(
        storage, Secrets(passphrase="pw"), public_key_mode=True, scrypt_params=FAST
    )
    public = repo.keyring.public_key
    writer_repo = Repository.open(storage, Secrets(public_key=public))
    data = payload(50_000, 0.3, seed=2)
    manifest = backup(writer_repo, split(data, [4000]))

    reader_repo = reopen(repo)
    with reader_repo.open_item(reader_repo.load_manifest(manifest.ref).items[0]) as reader:
        assert b"".join(reader) == data
    assert reader_repo.verify(manifest) == []


def test_large_stream(repo):
    """More than 100 MB, mixed compressibility, default chunk size, several segments."""
    repo.segment_size = 40 << 20
    manifest = backup(repo, mixed_blocks(LARGE, seed=7))

    item = manifest.items[0]
    assert item.size == LARGE
    assert len(item.objects) == 3
    assert item.stored_size < LARGE  # it did compress
    reader_repo = reopen(repo)
    loaded = reader_repo.load_manifest(manifest.ref)
    with reader_repo.open_item(loaded.items[0]) as reader:
        assert assert_same_stream(reader, mixed_blocks(LARGE, seed=7)) == LARGE
    assert reader_repo.verify(loaded) == []
