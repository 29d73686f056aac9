"""Bucket snapshot pieces without I/O: listing merge-join, index lines, verification, pool,
error translation, blob names, locks and the blob oracle (over in-memory fakes)."""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import urllib3
from minio.error import S3Error

from drbackup.actions.snapshot_minio import BucketStats, Transfer
from drbackup.drill.bucket import scratch_bucket_name, stale_scratch_buckets
from drbackup.errors import IntegrityError, SourceError, SourceUnreachableError
from drbackup.repository.blobs import BlobOracle
from drbackup.repository.locks import list_locks, lock_key
from drbackup.repository.manifest import blob_id_of, blob_key
from drbackup.sources.buckets.client import (
    BucketClient,
    ListedObject,
    ObjectChangedError,
    ObjectGoneError,
    UnsupportedKeyError,
    put_headers,
    retry_policy,
    split_headers,
    unsupported_key_reason,
)
from drbackup.sources.buckets.index import IndexEntry, encode_entries, iter_entries
from drbackup.sources.buckets.listing import (
    check_sorted,
    is_excluded,
    is_unchanged,
    listing_prefixes,
    merge_join,
)
from drbackup.sources.buckets.pool import ordered_map
from drbackup.sources.buckets.restore import VerifyingReader
from drbackup.storage.base import ObjectInfo

BLOB = "ab" + "0" * 62


def listed(key: str, size: int = 1, etag: str = "e", modified: str = "t") -> ListedObject:
    return ListedObject(key, size, etag, modified)


def entry(key: str, content: bytes = b"x", **kw) -> IndexEntry:
    defaults = {"blob": BLOB, "etag": "e", "last_modified": "t"}
    sha = hashlib.sha256(content).hexdigest()
    return IndexEntry(key=key, size=len(content), sha256=sha, **{**defaults, **kw})


# --- listing ----------------------------------------------------------------------------


def test_listing_prefixes_drop_nested_ones_and_default_to_everything():
    assert listing_prefixes([]) == [""]
    assert listing_prefixes(["b/", "a/", "a/x/", "a/"]) == ["a/", "b/"]
    assert listing_prefixes(["a", "a/b", "ab"]) == ["a"]


def test_is_excluded():
    assert is_excluded("tmp/x", ["tmp/", "cache/"])
    assert not is_excluded("tmpx", ["tmp/"])


def test_check_sorted_rejects_out_of_order_and_duplicate_keys():
    assert [o.key for o in check_sorted([listed("a"), listed("b")], "listing")] == ["a", "b"]
    with pytest.raises(SourceError) as exc:
        list(check_sorted([listed("b"), listed("a")], "listing of bucket p"))
    assert exc.value.message == "listing of bucket p is not sorted by key ('a' after 'b')"
    with pytest.raises(SourceError):
        list(check_sorted([listed("a"), listed("a")], "listing"))


def test_merge_join_pairs_equal_keys_skips_deleted_and_marks_new():
    current = [listed(k) for k in ("a", "c", "d", "f")]
    previous = [entry(k) for k in ("b", "c", "e", "f", "g")]
    pairs = [(c.key, p.key if p else None) for c, p in merge_join(current, previous)]
    assert pairs == [("a", None), ("c", "c"), ("d", None), ("f", "f")]


def test_merge_join_orders_like_s3_byte_order():
    keys = sorted(["a", "B", "é", "z", "a/b", "a-b", "\U0001f600"])
    assert keys == sorted(keys, key=lambda k: k.encode("utf-8"))
    pairs = list(merge_join([listed(k) for k in keys], [entry(k) for k in keys]))
    assert all(p is not None and p.key == c.key for c, p in pairs)


def test_is_unchanged_needs_size_etag_and_last_modified():
    prev = entry("k", b"abc", etag="e1", last_modified="t1")
    assert is_unchanged(listed("k", 3, "e1", "t1"), prev)
    assert not is_unchanged(listed("k", 3, "e2", "t1"), prev)
    assert not is_unchanged(listed("k", 3, "e1", "t2"), prev)
    assert not is_unchanged(listed("k", 4, "e1", "t1"), prev)
    assert not is_unchanged(listed("k", 3, "e1", "t1"), None)


# --- index lines ------------------------------------------------------------------------


def test_index_entry_line_round_trip_escapes_keys_and_omits_empty_optionals():
    e = entry(
        "dir/line\nbreak \u00e9\U0001f600",
        b"hello",
        content_type="text/plain",
        metadata={"owner": "alice"},
        tags={"k": "v"},
    )
    line = e.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert b'"headers"' not in line and b'"version_id"' not in line
    assert list(iter_entries(io.BytesIO(line))) == [e]


def test_index_entry_ignores_unknown_fields_and_defaults_content_type():
    line = (
        b'{"key":"k","size":1,"sha256":"s","blob":"b","etag":"e","last_modified":"t",'
        b'"content_type":"","future_field":1}\n'
    )
    parsed = next(iter_entries(io.BytesIO(line)))
    assert (parsed.key, parsed.content_type, parsed.metadata) == (
        "k",
        "application/octet-stream",
        {},
    )


class Dribble(io.RawIOBase):
    """Returns at most ``step`` bytes per read: lines cross block boundaries."""

    def __init__(self, data: bytes, step: int):
        self._data, self._pos, self._step = data, 0, step

    def read(self, n: int = -1) -> bytes:
        chunk = self._data[self._pos : self._pos + min(self._step, n if n > 0 else self._step)]
        self._pos += len(chunk)
        return chunk


def test_encode_and_iter_entries_across_block_boundaries():
    entries = [entry(f"key/{i:05d}", str(i).encode() * (i % 7)) for i in range(500)]
    blocks = list(encode_entries(entries, block_size=1000))
    assert len(blocks) > 10 and all(b.endswith(b"\n") for b in blocks)
    data = b"".join(blocks)
    for step in (1, 7, 4096):
        assert list(iter_entries(Dribble(data, step))) == entries


def test_iter_entries_names_the_bad_line():
    data = entry("a").to_line() + b"{not json}\n"
    with pytest.raises(IntegrityError) as exc:
        list(iter_entries(io.BytesIO(data), "files/x index:photos"))
    assert exc.value.message == "files/x index:photos: line 2 is not a valid index entry"


# --- verified restore reads -------------------------------------------------------------


class Uploader:
    """Reads exactly ``length`` bytes in parts, like minio's put_object."""

    @staticmethod
    def upload(reader, length: int, part: int = 5) -> bytes:
        out = b""
        while len(out) < length:
            data = reader.read(min(part, length - len(out)))
            if not data:
                break
            out += data
        return out


def test_verifying_reader_passes_matching_content():
    content = b"0123456789abcdef"
    reader = VerifyingReader(io.BytesIO(content), entry("k", content), "object k")
    assert Uploader.upload(reader, len(content)) == content


@pytest.mark.parametrize(
    "stored, message",
    [
        (b"0123456789abcdeX", "object k: content sha256 does not match the snapshot index"),
        (b"0123456789abcdef+", "object k: content is longer than 16 bytes"),
        (b"0123456789", "object k: content ends after 10 bytes, expected 16"),
    ],
)
def test_verifying_reader_raises_before_the_last_byte_is_handed_out(stored, message):
    handed_out = []

    class Spy:
        def read(self, n):
            data = reader.read(n)
            handed_out.append(data)
            return data

    reader = VerifyingReader(io.BytesIO(stored), entry("k", b"0123456789abcdef"), "object k")
    with pytest.raises(IntegrityError) as exc:
        Uploader.upload(Spy(), 16)
    assert exc.value.message == message
    assert sum(map(len, handed_out)) < 16  # the upload never received a complete object


def test_verifying_reader_checks_empty_objects():
    VerifyingReader(io.BytesIO(b""), entry("k", b""), "object k").verify_all()
    with pytest.raises(IntegrityError):
        VerifyingReader(io.BytesIO(b"x"), entry("k", b""), "object k").verify_all()


# --- ordered bounded pool ---------------------------------------------------------------


def test_ordered_map_keeps_order_and_bounds_work_in_flight():
    running, peak, submitted = 0, 0, []
    lock = threading.Lock()

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(random.random() / 500)
        with lock:
            running -= 1
        return i * i

    def items():
        for i in range(200):
            submitted.append(i)
            yield i

    consumed = 0
    for i, result in ordered_map(work, items(), workers=4, window=10):
        assert result == i * i and i == consumed
        assert len(submitted) - consumed <= 10  # never more than the window ahead
        consumed += 1
    assert consumed == 200 and peak <= 4


def test_ordered_map_runs_inline_items_in_the_caller_and_propagates_errors():
    caller = threading.current_thread()
    threads = {}

    def work(i: int) -> int:
        threads[i] = threading.current_thread()
        if i == 7:
            raise ValueError("seven")
        return i

    results = []
    with pytest.raises(ValueError, match="seven"):
        for _, r in ordered_map(work, range(20), workers=2, inline=lambda i: i % 2 == 0):
            results.append(r)
    assert results == list(range(7))
    assert all(threads[i] is caller for i in threads if i % 2 == 0)
    assert all(threads[i] is not caller for i in threads if i % 2 == 1)


def test_ordered_map_finalized_in_another_thread_does_not_wait_for_its_workers():
    # The garbage collector finalizes a forgotten generator in whatever thread allocates:
    # once it was an S3 transfer thread that a worker was waiting on, and waiting there
    # for the workers deadlocked a test run at exit.  Here the worker waits for the thread
    # that closes the generator.
    closed, running = threading.Event(), threading.Event()

    def work(i: int) -> int:
        if i == 0:
            running.wait(10)  # item 1 is in flight before the first result is handed out
        if i == 1:
            running.set()
            closed.wait(10)
        return i

    gen = ordered_map(work, range(4), workers=2, window=4)
    assert next(gen) == (0, 0)
    closer = threading.Thread(target=lambda: (gen.close(), closed.set()), daemon=True)
    closer.start()
    closer.join(5)
    assert not closer.is_alive(), "closing the generator from another thread waited on a worker"
    assert closed.is_set()


# --- headers ----------------------------------------------------------------------------


def test_split_and_put_headers():
    headers = {
        "Content-Type": "image/png",
        "x-amz-meta-Owner": "alice",
        "X-Amz-Meta-project": "dr",
        "Cache-Control": "no-cache",
        "ETag": '"abc"',
        "x-amz-request-id": "r",
    }
    content_type, metadata, kept = split_headers(headers)
    assert content_type == "image/png"
    assert metadata == {"owner": "alice", "project": "dr"}
    assert kept == {"cache-control": "no-cache"}
    assert put_headers(metadata, {**kept, "x-evil": "1"}) == {
        "x-amz-meta-owner": "alice",
        "x-amz-meta-project": "dr",
        "cache-control": "no-cache",
    }


# --- error translation ------------------------------------------------------------------


def client() -> BucketClient:
    return BucketClient("127.0.0.1:9", "k", "s", secure=False, label="files")


def s3_error(code: str, message: str = "message\nsecond line") -> S3Error:
    return S3Error(None, code, message, "/r", "req", "host")


@pytest.mark.parametrize(
    "code, kind, message, hint",
    [
        ("NoSuchKey", ObjectGoneError, "cannot read photos/a: object no longer exists", None),
        (
            "PreconditionFailed",
            ObjectChangedError,
            "cannot read photos/a: object changed while being read",
            None,
        ),
        (
            "NoSuchBucket",
            SourceError,
            "cannot read photos/a: bucket photos does not exist on http://127.0.0.1:9",
            "check minio.files.buckets",
        ),
        (
            "AccessDenied",
            SourceUnreachableError,
            "cannot read photos/a: access denied by http://127.0.0.1:9 (AccessDenied)",
            "check minio.files.access_key_file / secret_key_file and the policy",
        ),
        (
            "SlowDown",
            SourceUnreachableError,
            "cannot read photos/a: http://127.0.0.1:9 kept failing (SlowDown: message second line)",
            "the server is overloaded or failing: try again later "
            "(minio.files.max_attempts sets how often each request is tried)",
        ),
        (
            "InvalidArgument",
            SourceError,
            "cannot read photos/a: InvalidArgument: message second line",
            None,
        ),
    ],
)
def test_s3_errors_translate_to_one_line_source_errors(code, kind, message, hint):
    error = client().translate(s3_error(code), "read", "photos", "a")
    assert type(error) is kind
    assert (error.message, error.hint) == (message, hint)


def test_connection_and_tls_errors_mean_unreachable():
    refused = urllib3.exceptions.MaxRetryError(
        None, "/", urllib3.exceptions.NewConnectionError(None, "refused")
    )
    error = client().translate(refused, "list", "photos", None)
    assert isinstance(error, SourceUnreachableError)
    assert (
        error.message == "cannot list photos: http://127.0.0.1:9 unreachable (NewConnectionError)"
    )
    assert error.hint == "check minio.files.endpoint and that the server is running"
    tls = urllib3.exceptions.MaxRetryError(None, "/", urllib3.exceptions.SSLError("bad cert"))
    error = client().translate(tls, "list", "photos", None)
    assert error.message == "cannot list photos: tls error talking to http://127.0.0.1:9"


def test_retry_policy_matches_the_repository_side():
    policy = retry_policy(5)
    assert policy.total == 4  # five tries in all
    assert policy.allowed_methods is None  # every method: S3 requests are idempotent
    assert set(policy.status_forcelist) == {429, 500, 502, 503, 504}
    assert policy.raise_on_status is False  # minio reads the last answer's S3 error code
    assert policy.backoff_max == 20.0


@pytest.mark.parametrize("key", ["../x", "a/../../b", "./dot", "a/./c", "a/.", ""])
def test_keys_the_client_cannot_address_are_named_not_crashed_on(key):
    assert unsupported_key_reason(key)
    with pytest.raises(UnsupportedKeyError) as info:
        client().open_object("photos", key)
    assert info.value.message.startswith(f"cannot read photos/{key!r}: the key has ")


@pytest.mark.parametrize("key", ["a//b", "dir/", "..x", "x..", ".hidden", "k" * 1024, "ü ✓?#"])
def test_odd_but_addressable_keys_are_supported(key):
    assert unsupported_key_reason(key) is None


# --- names ------------------------------------------------------------------------------


def test_blob_keys_round_trip_and_reject_anything_else():
    blob = hashlib.sha256(b"x").hexdigest()
    assert blob_key(blob) == f"blobs/{blob[:2]}/{blob}"
    assert blob_id_of(blob_key(blob)) == blob
    for bad in (f"blobs/zz/{blob}", f"blobs/{blob}", f"data/{blob[:2]}/{blob}", "blobs/ab/short"):
        assert blob_id_of(bad) is None


def test_scratch_bucket_names_are_valid_and_stale_ones_found():
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    name = scratch_bucket_name(now)
    assert name.startswith("drbackup-drill-20261123120000-") and len(name) == 36
    old = scratch_bucket_name(datetime(2026, 11, 22, 23, 0, tzinfo=UTC))
    assert stale_scratch_buckets([name, old, "drbackup-drill-x", "photos"], now) == [old]


# --- locks and the blob oracle over fake storage ----------------------------------------


@dataclass
class FakeStorage:
    infos: list[ObjectInfo]
    heads: int = 0

    def list(self, prefix: str = ""):
        return iter(
            sorted((i for i in self.infos if i.key.startswith(prefix)), key=lambda i: i.key)
        )

    def exists(self, key: str) -> bool:
        self.heads += 1
        return any(i.key == key for i in self.infos)


def test_list_locks_measures_age_on_the_storage_clock():
    storage = FakeStorage(
        [
            ObjectInfo(lock_key("snapshot", "20261123T000000Z-aaaaaa"), 10, mtime=1000.0),
            ObjectInfo(lock_key("gc", "20261123T000000Z-bbbbbb"), 10, mtime=100.0),
            ObjectInfo("locks/junk", 1, mtime=0.0),
        ]
    )
    locks = list_locks(storage, now=1100.0, stale_after=900.0)
    assert [(lk.kind, lk.age_s, lk.stale) for lk in locks] == [
        ("gc", 1000.0, True),
        ("snapshot", 100.0, False),
    ]


def blob_ids(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def test_blob_oracle_lists_once_then_answers_from_memory():
    ids = blob_ids(4)
    storage = FakeStorage([ObjectInfo(blob_key(b), 1) for b in ids[:2]])
    oracle = BlobOracle(storage, limit=100)
    assert [oracle.claim(b) for b in ids[:2]] == [False, False]
    assert oracle.claim(ids[2]) is True
    oracle.done(ids[2], True)
    assert oracle.claim(ids[2]) is False  # stored in this run
    assert oracle.claim(ids[3]) is True
    oracle.done(ids[3], False)  # upload failed: the next one must try again
    assert oracle.claim(ids[3]) is True
    assert storage.heads == 0


def test_blob_oracle_falls_back_to_exists_above_its_limit():
    ids = blob_ids(5)
    storage = FakeStorage([ObjectInfo(blob_key(b), 1) for b in ids[:4]])
    oracle = BlobOracle(storage, limit=2)
    assert oracle.claim(ids[0]) is False
    assert oracle.claim(ids[4]) is True
    assert storage.heads == 2


def test_blob_oracle_lets_one_thread_upload_shared_content():
    storage = FakeStorage([])
    oracle = BlobOracle(storage)
    blob = blob_ids(1)[0]
    uploads = []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        if oracle.claim(blob):
            time.sleep(0.01)
            uploads.append(1)
            oracle.done(blob, True)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert uploads == [1]


def test_bucket_stats_count_events_and_keep_a_bounded_key_list():
    stats = BucketStats()
    e = entry("k", b"abc")
    stats.add("k", Transfer("uploaded", e, downloaded=3, stored=40))
    stats.add("r", Transfer("reused", e))
    for i in range(150):
        stats.add(f"v{i}", Transfer("vanished"))
    meta = stats.to_meta()
    assert (meta["objects"], meta["bytes"], meta["transferred"], meta["uploaded_bytes"]) == (
        2,
        6,
        1,
        40,
    )
    assert meta["vanished"]["count"] == 150 and len(meta["vanished"]["keys"]) == 100
