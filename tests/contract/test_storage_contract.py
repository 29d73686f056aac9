"""The storage contract (``drbackup/storage/base.py``): one suite every backend must pass.

Each test runs once per backend through the ``storage`` fixture.  The few clauses that only
one kind of backend can exhibit (a dead network endpoint, object lock) are at the end.
"""

from __future__ import annotations

import io
import itertools
import os
import random
import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drbackup.errors import ObjectNotFoundError, StorageUnreachableError
from drbackup.storage import ObjectInfo, Storage
from drbackup.storage.local import LocalStorage
from drbackup.storage.s3 import S3Storage
from tests.fixtures.s3server import TEST_PART_SIZE, free_port

PART = TEST_PART_SIZE
BACKENDS = ["local", "s3"]


class ReaderFailedError(Exception):
    """Raised by a test reader to simulate a failing source mid-stream."""


class ShortReader:
    """A non-seekable reader (no seek/tell) whose reads return at most ``chunk`` bytes.

    ``chunk`` may be a list of limits, used in turn (cycling), to mix full and short reads.
    """

    def __init__(
        self, data: bytes, chunk: int | list[int] = 64 * 1024, fail_after: int | None = None
    ):
        self._data = memoryview(data)
        self._pos = 0
        self._chunks = itertools.cycle(chunk if isinstance(chunk, list) else [chunk])
        self._fail_after = fail_after
        self.on_read = None  # optional callback, called once per read

    def read(self, size: int = -1) -> bytes:
        if self.on_read is not None:
            self.on_read()
        if self._fail_after is not None and self._pos >= self._fail_after:
            raise ReaderFailedError("source broke mid-stream")
        limit = next(self._chunks)
        size = len(self._data) if size is None or size < 0 else min(size, limit)
        out = bytes(self._data[self._pos : self._pos + size])
        self._pos += len(out)
        return out


def data_of(size: int, seed: int = 0) -> bytes:
    """``size`` deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


@pytest.fixture(params=BACKENDS)
def storage(request) -> Storage:
    """Each backend in turn, empty and reachable."""
    return request.getfixturevalue(f"{request.param}_storage")


@pytest.fixture
def partial_writes(request, storage):
    """A function listing leftovers of unfinished writes: temp files or multipart uploads."""
    if isinstance(storage, LocalStorage):
        return lambda: [p.name for p in Path(storage.root).rglob(".tmp-*")]
    client = request.getfixturevalue("s3_server").client()
    return lambda: client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])


@pytest.fixture(params=BACKENDS)
def missing_storage(request, tmp_path) -> Storage:
    """Each backend pointed at a location that does not exist (directory, bucket)."""
    if request.param == "local":
        return LocalStorage(tmp_path / "does-not-exist")
    server = request.getfixturevalue("s3_server")
    request.getfixturevalue("s3_bucket")  # resets the server
    return S3Storage("no-such-bucket", "repo", **server.storage_options())


# -- put / get round trips ---------------------------------------------------------------


def test_backend_satisfies_protocol(storage):
    assert isinstance(storage, Storage)
    assert storage.url


@pytest.mark.parametrize("size", [0, 1, 1000, PART, 2 * PART + 123])
def test_put_get_round_trip(storage, size):
    data = data_of(size, seed=size)
    assert storage.put("backups/obj", io.BytesIO(data)) == size
    assert storage.get("backups/obj") == data
    assert storage.stat("backups/obj") == ObjectInfo(
        "backups/obj", size, storage.stat("backups/obj").mtime
    )
    assert storage.exists("backups/obj")


def test_put_from_non_seekable_reader_with_short_reads(storage):
    data = data_of(2 * PART + 7)
    assert storage.put("k", ShortReader(data, chunk=64 * 1024 + 3)) == len(data)
    assert storage.get("k") == data


def test_put_from_reader_with_full_then_short_reads(storage):
    data = data_of(3 * PART + 5, seed=2)
    reader = ShortReader(data, chunk=[PART, 1000, 3 * PART, 70_000])
    assert storage.put("k", reader) == len(data)
    assert storage.get("k") == data


def test_put_from_pipe(storage):
    data = data_of(PART + 4096, seed=3)
    read_fd, write_fd = os.pipe()

    def feed() -> None:
        with os.fdopen(write_fd, "wb") as w:
            w.write(data)

    writer = threading.Thread(target=feed)
    writer.start()
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        assert storage.put("piped", pipe) == len(data)
    writer.join()
    assert storage.get("piped") == data


def test_put_memory_is_bounded_for_a_stream(storage):
    # S3 holds the parts in flight (4), one queued and one being read: ~6.3 parts measured.
    size = 12 * PART
    reader = ShortReader(b"\0" * size, chunk=1 << 20)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        assert storage.put("big", reader) == size
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()
    assert peak < 7 * PART, f"peak {peak} bytes while streaming {size}"


def test_put_overwrites(storage):
    storage.put("k", io.BytesIO(b"first version"))
    assert storage.put("k", io.BytesIO(b"second")) == 6
    assert storage.get("k") == b"second"
    assert [i.key for i in storage.list("")] == ["k"]


def test_open_streams_and_closes(storage):
    data = data_of(300_000)
    storage.put("a/b/c", io.BytesIO(data))
    chunks = []
    with storage.open("a/b/c") as f:
        while chunk := f.read(65536):
            assert len(chunk) <= 65536
            chunks.append(chunk)
    assert b"".join(chunks) == data


# -- list ----------------------------------------------------------------------------------

KEYS = [
    "backups/a/x",
    "backups/a/y/z",
    "backups/ab",
    "backups/a-b",
    "backups/b",
    "backupsX",
    "other/a",
]


@pytest.fixture
def populated(storage) -> Storage:
    """``storage`` holding every key of ``KEYS`` (written in a shuffled order)."""
    for key in random.Random(1).sample(KEYS, len(KEYS)):
        storage.put(key, io.BytesIO(key.encode()))
    return storage


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", sorted(KEYS)),
        ("backups/a", ["backups/a-b", "backups/a/x", "backups/a/y/z", "backups/ab"]),
        ("backups/a/", ["backups/a/x", "backups/a/y/z"]),
        ("backups", ["backups/a-b", "backups/a/x", "backups/a/y/z", "backups/ab", "backups/b", "backupsX"]),
        ("backups/", ["backups/a-b", "backups/a/x", "backups/a/y/z", "backups/ab", "backups/b"]),
        ("backups/a/y/z", ["backups/a/y/z"]),
        ("o", ["other/a"]),
        ("nothing", []),
        ("backups/c/", []),
    ],
)  # fmt: skip
def test_list_is_sorted_string_prefix(populated, prefix, expected):
    infos = list(populated.list(prefix))
    assert [i.key for i in infos] == expected
    for info in infos:
        assert info.size == len(info.key.encode())
        assert info.mtime > 0


def test_list_is_lazy(populated):
    listing = populated.list("")
    assert iter(listing) is listing
    assert next(listing).key == sorted(KEYS)[0]


def test_list_across_pages(s3_server, s3_bucket):
    storage = S3Storage(s3_bucket, "repo", list_page_size=2, **s3_server.storage_options())
    for key in KEYS:
        storage.put(key, io.BytesIO(b"x"))
    pages = []
    storage._client.meta.events.register(
        "after-call.s3.ListObjectsV2", lambda **kwargs: pages.append(1)
    )
    assert [i.key for i in storage.list("")] == sorted(KEYS)
    assert len(pages) == 4
    assert [i.key for i in storage.list("backups/")] == sorted(KEYS)[:5]


def test_list_skips_folder_markers(s3_server, s3_storage):
    s3_server.client().put_object(Bucket=s3_storage.bucket, Key="repo/backups/", Body=b"")
    s3_storage.put("backups/k", io.BytesIO(b"x"))
    assert [i.key for i in s3_storage.list("")] == ["backups/k"]


def test_list_of_empty_storage(storage):
    assert list(storage.list("")) == []
    assert list(storage.list("backups/")) == []


def test_list_during_a_write_shows_no_partial_object(storage):
    storage.put("done", io.BytesIO(b"x"))
    seen: list[list[str]] = []
    reader = ShortReader(data_of(PART + 10))
    reader.on_read = lambda: seen.append([i.key for i in storage.list("")])
    storage.put("pending", reader)
    assert seen and all(keys == ["done"] for keys in seen)
    assert [i.key for i in storage.list("")] == ["done", "pending"]


# -- missing keys, exists, delete ----------------------------------------------------------


def test_missing_key_raises_object_not_found(storage):
    for call in (storage.open, storage.get, storage.stat):
        with pytest.raises(ObjectNotFoundError) as info:
            call("nope/x")
        assert str(info.value) == "object not found: nope/x"
        assert info.value.key == "nope/x"
    assert storage.exists("nope/x") is False


def test_prefix_of_a_key_is_not_an_object(storage):
    storage.put("dir/file", io.BytesIO(b"1"))
    assert storage.exists("dir") is False
    with pytest.raises(ObjectNotFoundError):
        storage.stat("dir")


def test_key_below_an_object_is_missing(storage):
    storage.put("file", io.BytesIO(b"1"))
    for call in (storage.open, storage.get, storage.stat):
        with pytest.raises(ObjectNotFoundError, match="object not found: file/below"):
            call("file/below")
    assert storage.exists("file/below") is False
    storage.delete("file/below")
    assert storage.get("file") == b"1"


def test_delete_is_idempotent(storage):
    storage.put("a/b", io.BytesIO(b"1"))
    storage.put("a/c", io.BytesIO(b"2"))
    storage.delete("a/b")
    assert not storage.exists("a/b")
    storage.delete("a/b")
    storage.delete("never/existed")
    assert [i.key for i in storage.list("")] == ["a/c"]


def test_key_can_be_written_again_after_delete(storage):
    storage.put("a/b/c", io.BytesIO(b"1"))
    storage.delete("a/b/c")
    storage.put("a/b/c", io.BytesIO(b"22"))
    assert storage.get("a/b/c") == b"22"


# -- atomicity -----------------------------------------------------------------------------


@pytest.mark.parametrize("fail_after", [0, 10, PART + 100], ids=["at-once", "early", "multipart"])
def test_failed_put_leaves_no_object(storage, partial_writes, fail_after):
    reader = ShortReader(data_of(3 * PART), fail_after=fail_after)
    with pytest.raises(ReaderFailedError):
        storage.put("backups/x", reader)
    assert not storage.exists("backups/x")
    assert list(storage.list("")) == []
    assert partial_writes() == []


def test_failed_overwrite_keeps_previous_object(storage, partial_writes):
    storage.put("manifest", io.BytesIO(b"previous"))
    with pytest.raises(ReaderFailedError):
        storage.put("manifest", ShortReader(data_of(2 * PART), fail_after=PART + 1))
    assert storage.get("manifest") == b"previous"
    assert partial_writes() == []


# -- invalid keys --------------------------------------------------------------------------

INVALID_KEYS = ["", "/abs", "trailing/", "a//b", ".", "..", "a/../b", "a/./b"]


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_rejected(storage, key):
    calls = [
        lambda: storage.put(key, io.BytesIO(b"x")),
        lambda: storage.open(key),
        lambda: storage.get(key),
        lambda: storage.stat(key),
        lambda: storage.exists(key),
        lambda: storage.delete(key),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="invalid storage key"):
            call()
    assert list(storage.list("")) == []


# -- check / reachability ------------------------------------------------------------------


def test_check_passes_on_a_reachable_backend(storage):
    storage.check()


def test_check_on_missing_location_is_unreachable(missing_storage):
    with pytest.raises(StorageUnreachableError) as info:
        missing_storage.check()
    assert "\n" not in str(info.value)
    assert info.value.hint


@pytest.mark.parametrize(
    ("operation", "action"),
    [
        (lambda s: s.put("a/k", io.BytesIO(b"x")), "write"),
        (lambda s: s.get("a/k"), "read"),
        (lambda s: s.open("a/k"), "read"),
        (lambda s: list(s.list("a/")), "list"),
        (lambda s: s.delete("a/k"), "delete"),
    ],
    ids=["put", "get", "open", "list", "delete"],
)
def test_operations_on_missing_location_are_unreachable(missing_storage, operation, action):
    # stat/exists are left out: S3's HEAD answers a bare 404 for a missing bucket and a
    # missing key alike, so S3Storage reports "object not found" / False there.
    with pytest.raises(StorageUnreachableError) as info:
        operation(missing_storage)
    assert str(info.value).startswith(f"cannot {action} a/")
    assert "does not exist" in str(info.value)
    assert info.value.hint
    if isinstance(missing_storage, LocalStorage):
        assert not missing_storage.root.exists()  # a write must not create the repository


@pytest.fixture
def dead_endpoint_storage(aws_env) -> S3Storage:
    """An ``S3Storage`` on a closed loopback port, with no retries and short timeouts."""
    return S3Storage(
        "bucket",
        "repo",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        access_key_id="testing",
        secret_access_key="testing",
        max_attempts=1,
        connect_timeout=1,
        read_timeout=1,
    )


@pytest.mark.parametrize(
    ("operation", "message_start"),
    [
        (lambda s: s.check(), "cannot access s3://bucket/repo: s3 endpoint"),
        (lambda s: s.get("backups/k"), "cannot read backups/k: s3 endpoint"),
        (lambda s: s.stat("backups/k"), "cannot stat backups/k: s3 endpoint"),
        (lambda s: s.exists("backups/k"), "cannot stat backups/k: s3 endpoint"),
        (lambda s: list(s.list("backups/")), "cannot list backups/: s3 endpoint"),
        (lambda s: s.delete("backups/k"), "cannot delete backups/k: s3 endpoint"),
        (lambda s: s.put("backups/k", io.BytesIO(b"x")), "cannot write backups/k: s3 endpoint"),
    ],
    ids=["check", "get", "stat", "exists", "list", "delete", "put"],
)
def test_dead_endpoint_is_unreachable_quickly(dead_endpoint_storage, operation, message_start):
    started = time.monotonic()
    with pytest.raises(StorageUnreachableError) as info:
        operation(dead_endpoint_storage)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert message.startswith(message_start)
    assert "unreachable (connection refused or no route)" in message
    assert "\n" not in message
    assert info.value.hint == "check repository.s3.endpoint_url and that the server is running"


def test_missing_credentials_are_unreachable(s3_server, s3_bucket, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    storage = S3Storage(s3_bucket, endpoint_url=s3_server.endpoint_url, region="us-east-1")
    with pytest.raises(StorageUnreachableError) as info:
        storage.check()
    assert str(info.value) == f"cannot access s3://{s3_bucket}: no usable s3 credentials"


# -- S3 only: object lock ------------------------------------------------------------------


def test_object_lock_retention_is_set_on_put(s3_server, s3_bucket):
    client = s3_server.client()
    client.create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
    storage = S3Storage(
        "locked", "repo", object_lock=("GOVERNANCE", 1), **s3_server.storage_options()
    )
    assert storage.capabilities.object_lock
    storage.put("k", io.BytesIO(b"data"))
    head = client.head_object(Bucket="locked", Key="repo/k")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    assert head["ObjectLockRetainUntilDate"].timestamp() > time.time() + 23 * 3600


# -- property: any size round-trips --------------------------------------------------------

SIZES = st.one_of(
    st.sampled_from([0, 1, PART - 1, PART, PART + 1, 2 * PART]),
    st.integers(min_value=0, max_value=2 * PART + 1),
)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(size=SIZES, seed=st.integers(0, 2**32), chunk=st.integers(1 << 12, 1 << 21))
def test_any_size_round_trips(storage, size, seed, chunk):
    data = data_of(size, seed)
    assert storage.put("prop/object", ShortReader(data, chunk=chunk)) == size
    assert storage.stat("prop/object").size == size
    assert storage.get("prop/object") == data
