"""Damaged and tampered repositories, over every storage backend.

Every case must fail with one line that names the damaged object (or the key problem), and
must never hand out wrong plaintext: whatever a reader returned before the error is exactly
the authentic beginning of the stream, and nothing past the damaged point.  Objects are
rewritten through the storage API (``get`` / ``put``), as an attacker with write access to
the bucket would.
"""

from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drbackup.codec.aead import TAG_SIZE, read_header
from drbackup.codec.pipeline import CodecSettings
from drbackup.errors import (
    DrbackupError,
    EncryptionKeyError,
    IntegrityError,
    ObjectNotFoundError,
    RepositoryError,
    StorageUnreachableError,
)
from drbackup.repository.header import HEADER_KEY
from drbackup.repository.keyring import Secrets
from drbackup.repository.manifest import Manifest
from drbackup.repository.repo import Repository
from drbackup.storage.local import LocalStorage
from tests.fixtures.s3server import free_port

FAST = {"n": 1024, "r": 8, "p": 1}
BACKENDS = ["local", "s3"]
CHUNK = 4096
SEGMENT = 4 * CHUNK + 1000  # five chunks per full segment: four full, a final of 1000 bytes
SIZE = 2 * SEGMENT + 3 * CHUNK + 17  # three segments

MID = "(corrupted, tampered, moved from another key, or wrong key)"
FINAL = "(corrupted, truncated, or chunks reordered or spliced)"


@pytest.fixture(params=BACKENDS)
def storage(request):
    """Each backend in turn, empty and reachable."""
    return request.getfixturevalue(f"{request.param}_storage")


@dataclass
class Setup:
    repo: Repository
    manifest: Manifest
    data: bytes

    @property
    def storage(self):
        return self.repo._storage

    @property
    def item(self):
        return self.manifest.items[0]

    @property
    def keys(self) -> list[str]:
        return [o.key for o in self.item.objects]


def make_backup(repo: Repository, seed: int, compress: bool = False) -> tuple[Manifest, bytes]:
    repo.codec = CodecSettings(chunk_size=CHUNK, compress=compress)
    repo.segment_size = SEGMENT
    data = random.Random(seed).randbytes(SIZE)
    with repo.new_backup("app", "postgres") as writer:
        writer.add_stream("db", "pg_dump", (data[i : i + 10_000] for i in range(0, SIZE, 10_000)))
        return writer.commit(), data


@pytest.fixture
def setup(storage) -> Setup:
    """A repository with one uncompressed backup of three segment objects, five chunks each
    (uncompressed, so a chunk index maps to a plaintext offset)."""
    repo = Repository.init(storage, Secrets(passphrase="pw"), scrypt_params=FAST)
    manifest, data = make_backup(repo, seed=1)
    assert len(manifest.items[0].objects) == 3
    return Setup(repo, manifest, data)


# -- helpers -------------------------------------------------------------------------------


def rewrite(storage, key: str, change) -> bytes:
    """Replace object ``key`` with ``change(old bytes)``; return the old bytes."""
    old = storage.get(key)
    storage.put(key, io.BytesIO(change(old)))
    return old


def flip(data: bytes, pos: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[pos] ^= mask
    return bytes(out)


@dataclass(frozen=True)
class Layout:
    """Where the chunks of a stored object are."""

    header_len: int
    sealed: int  # bytes of a full sealed chunk
    chunks: int

    def span(self, index: int) -> slice:
        start = self.header_len + index * self.sealed
        return slice(start, start + self.sealed)


def layout_of(stored: bytes, key: str) -> Layout:
    header, raw = read_header(io.BytesIO(stored), key)
    sealed = header.chunk_size + TAG_SIZE
    return Layout(len(raw), sealed, -(-(len(stored) - len(raw)) // sealed))


def read_until_error(repo: Repository, item) -> tuple[bytes, DrbackupError]:
    """Everything the item reader returned before it raised, and what it raised."""
    got = bytearray()
    with pytest.raises(DrbackupError) as info, repo.open_item(item) as reader:
        for block in reader:
            got += block
    return bytes(got), info.value


def reopen(storage, **secrets) -> Repository:
    return Repository.open(storage, Secrets(**(secrets or {"passphrase": "pw"})))


def assert_one_line(message: str, *fragments: str) -> None:
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def assert_fails_at(s: Setup, segment: int, chunk: int, message: str) -> None:
    """Reading fails at ``chunk`` of ``segment`` with ``message``, and returns exactly the
    plaintext before that chunk; ``verify`` reports the same problem as one line."""
    repo = reopen(s.storage)
    got, err = read_until_error(repo, s.item)
    assert isinstance(err, IntegrityError)
    assert str(err) == message
    assert got == s.data[: segment * SEGMENT + chunk * CHUNK]
    assert repo.verify(s.manifest) == [f"db: {message}"]


# -- one flipped byte anywhere ---------------------------------------------------------------


def test_flip_one_byte_in_each_region_of_each_data_object(setup):
    repo = reopen(setup.storage)
    for segment, key in enumerate(setup.keys):
        original = setup.storage.get(key)
        lay = layout_of(original, key)
        data_key_failure = (
            f"{key}: its data key does not open with this repository's key "
            "(tampered, or copied from another repository)"
        )
        # position -> (the chunk that fails, its exact message or None for "names the key")
        regions = {
            0: (0, None),  # magic
            4: (0, None),  # version
            5: (0, f"{key}: chunk 0 failed authentication {MID}"),  # flags (associated data)
            6: (0, None),  # slot type
            7: (0, None),  # slot length
            9 + 20: (0, data_key_failure),  # the wrapped data key
            lay.header_len - 20: (0, f"{key}: chunk 0 failed authentication {MID}"),  # salt
            lay.header_len - 1: (0, f"{key}: chunk 0 failed authentication {MID}"),  # chunk size
        }
        for chunk in range(lay.chunks):
            message = f"{key}: chunk {chunk} failed authentication "
            message += FINAL if chunk == lay.chunks - 1 else MID
            span = lay.span(chunk)
            end = min(span.stop, len(original))
            regions[span.start + chunk * 7] = (chunk, message)  # ciphertext
            regions[end - 1 - chunk] = (chunk, message)  # tag
        for pos, (chunk, message) in regions.items():
            setup.storage.put(key, io.BytesIO(flip(original, pos)))
            got, err = read_until_error(repo, setup.item)
            assert isinstance(err, IntegrityError)
            assert_one_line(str(err), key)
            if message is not None:
                assert str(err) == message
            assert got == setup.data[: segment * SEGMENT + chunk * CHUNK], f"flip at {pos}"
            assert repo.verify(setup.manifest) == [f"db: {err}"]
        setup.storage.put(key, io.BytesIO(original))
    assert reopen(setup.storage).verify(setup.manifest) == []


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(which=st.integers(0, 3), where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_flip_any_byte_of_any_object(setup, which, where, mask):
    """Data objects and the manifest (the header has its own test)."""
    key = [*setup.keys, setup.manifest.ref.manifest_key][which]
    original = setup.storage.get(key)
    pos = int(where * len(original))
    setup.storage.put(key, io.BytesIO(flip(original, pos, mask)))
    try:
        repo = reopen(setup.storage)
        if which == 3:
            with pytest.raises(IntegrityError) as info:
                repo.load_manifest(setup.manifest.ref)
            assert_one_line(str(info.value), key)
        else:
            got, err = read_until_error(repo, setup.item)
            assert isinstance(err, IntegrityError)
            assert_one_line(str(err), key)
            assert got == setup.data[: len(got)]
            assert len(got) <= which * SEGMENT + pos // (CHUNK + TAG_SIZE) * CHUNK
            assert repo.verify(setup.manifest) == [f"db: {err}"]
    finally:
        setup.storage.put(key, io.BytesIO(original))


def test_flip_in_a_compressed_object_never_yields_wrong_plaintext(storage):
    repo = Repository.init(storage, Secrets(passphrase="pw"), scrypt_params=FAST)
    manifest, data = make_backup(repo, seed=2, compress=True)
    key = manifest.items[0].objects[1].key
    stored = storage.get(key)
    for pos in range(0, len(stored), max(1, len(stored) // 20)):
        storage.put(key, io.BytesIO(flip(stored, pos)))
        got, err = read_until_error(repo, manifest.items[0])
        assert isinstance(err, IntegrityError)
        assert_one_line(str(err), key)
        assert got == data[: len(got)] and len(got) < 2 * SEGMENT


# The repository header is clear JSON (its key slots are authenticated, its other fields
# are not): a flipped byte must either fail to open cleanly, or change nothing that matters
# (then the backup still reads back exactly).  These fields may change without effect:
INERT_FIELDS = ('"chunk_size"', '"created_at"', '"id"', '"name"', '"cipher"', '"public_key": null',
                '"version"')  # fmt: skip


def header_positions(header: bytes) -> list[int]:
    """Positions to flip: in every line, the field name, its first and last bytes, and up to
    four bytes spread over its value (the repository_id line has its own test)."""
    positions, start = [], 0
    for line in header.split(b"\n"):
        end = start + len(line)
        if b'"repository_id"' not in line:
            value = start + max(line.find(b": ") + 2, 0)
            step = max(1, (end - value) // 4)
            positions += [start, end, start + len(line) - len(line.lstrip()) + 1]
            positions += range(value, end, step)
        start = end + 1
    return sorted({p for p in positions if p < len(header)})


def test_flip_any_byte_of_the_header(setup):
    header = setup.storage.get(HEADER_KEY)
    lines = header.decode().split("\n")
    for pos in header_positions(header):
        setup.storage.put(HEADER_KEY, io.BytesIO(flip(header, pos)))
        line = lines[header[:pos].count(b"\n")].strip()
        try:
            repo = reopen(setup.storage)
        except (RepositoryError, EncryptionKeyError) as exc:
            assert_one_line(str(exc))
            continue
        assert line.startswith(INERT_FIELDS), f"flip at {pos} in {line!r} went unnoticed"
        with repo.open_item(setup.item) as reader:
            assert b"".join(reader) == setup.data
    setup.storage.put(HEADER_KEY, io.BytesIO(header))


@pytest.mark.parametrize("damage", ["key-renamed", "not-hex"])
def test_damaged_repository_id_fails_cleanly(setup, damage):
    def change(raw: bytes) -> bytes:
        doc = json.loads(raw)
        if damage == "key-renamed":
            doc["repository_iD"] = doc.pop("repository_id")
        else:
            doc["repository_id"] = "zz" + doc["repository_id"][2:]
        return json.dumps(doc).encode()

    rewrite(setup.storage, HEADER_KEY, change)
    with pytest.raises((RepositoryError, EncryptionKeyError)):
        reopen(setup.storage)


@pytest.mark.parametrize("value", ["abc", 0, -1, 1 << 40, True, None])
def test_damaged_chunk_size_still_restores_and_refuses_writes(setup, value):
    """chunk_size is the one header field used only for writing (every object names its
    own): a damaged one must not stand between the operator and a restore, and must not
    reach the writer as a traceback."""
    rewrite(setup.storage, HEADER_KEY, lambda raw: json.dumps(
        json.loads(raw) | {"chunk_size": value}).encode())  # fmt: skip
    repo = reopen(setup.storage)
    with repo.open_item(setup.item) as reader:
        assert b"".join(reader) == setup.data
    with pytest.raises(RepositoryError, match="invalid chunk_size") as raised:
        repo.new_backup("app", "postgres")
    assert_one_line(str(raised.value), "damaged header")
    with pytest.raises(RepositoryError, match="invalid chunk_size"):
        repo.put_document("reports/app/x", {"ok": True})
    assert not setup.storage.exists("reports/app/x")


@pytest.mark.parametrize("damage", ["missing", "not-base64"])
def test_damaged_public_key_fails_cleanly(storage, damage):
    repo = Repository.init(
        storage, Secrets(passphrase="pw"), public_key_mode=True, scrypt_params=FAST
    )

    def change(raw: bytes) -> bytes:
        doc = json.loads(raw)
        if damage == "missing":
            doc["encryption"]["public_kez"] = doc["encryption"].pop("public_key")
        else:
            doc["encryption"]["public_key"] = "@" + doc["encryption"]["public_key"][1:]
        return json.dumps(doc).encode()

    rewrite(storage, HEADER_KEY, change)
    with pytest.raises((RepositoryError, EncryptionKeyError)):
        reopen(storage, public_key=repo.keyring.public_key)


# -- truncation, splicing, swapping, deleting ------------------------------------------------


def test_drop_the_last_chunk_of_a_data_object(setup):
    key = setup.keys[1]
    lay = layout_of(setup.storage.get(key), key)
    rewrite(setup.storage, key, lambda b: b[: lay.span(lay.chunks - 1).start])
    assert_fails_at(
        setup, 1, lay.chunks - 2, f"{key}: chunk {lay.chunks - 2} failed authentication {FINAL}"
    )


def test_truncate_a_data_object_mid_chunk(setup):
    key = setup.keys[0]
    rewrite(setup.storage, key, lambda b: b[: layout_of(b, key).span(2).start + 1000])
    assert_fails_at(setup, 0, 2, f"{key}: chunk 2 failed authentication {FINAL}")


def test_truncate_a_data_object_to_its_header(setup):
    key = setup.keys[2]
    rewrite(setup.storage, key, lambda b: b[: layout_of(b, key).header_len])
    repo = reopen(setup.storage)
    got, err = read_until_error(repo, setup.item)
    assert str(err) == f"{key}: truncated at chunk 0 (no final chunk)"
    assert got == setup.data[: 2 * SEGMENT]
    assert repo.verify(setup.manifest) == [f"db: {err}"]


def test_swap_chunks_between_objects_of_two_backups(setup):
    other, _ = make_backup(setup.repo, seed=3)
    key, other_key = setup.keys[0], other.items[0].objects[0].key
    donor = setup.storage.get(other_key)
    span = layout_of(donor, other_key).span(1)
    rewrite(setup.storage, key, lambda b: b[: span.start] + donor[span] + b[span.stop :])
    assert_fails_at(setup, 0, 1, f"{key}: chunk 1 failed authentication {MID}")
    assert reopen(setup.storage).verify(other) == []


def test_swap_whole_objects_between_two_backups(setup):
    other, _ = make_backup(setup.repo, seed=4)
    key, other_key = setup.keys[1], other.items[0].objects[1].key
    donor = setup.storage.get(other_key)
    rewrite(setup.storage, key, lambda _: donor)
    assert_fails_at(setup, 1, 0, f"{key}: chunk 0 failed authentication {MID}")


def test_swap_two_segment_objects_within_one_item(setup):
    first, second = setup.keys[0], setup.keys[1]
    a, b = setup.storage.get(first), setup.storage.get(second)
    setup.storage.put(first, io.BytesIO(b))
    setup.storage.put(second, io.BytesIO(a))
    assert_fails_at(setup, 0, 0, f"{first}: chunk 0 failed authentication {MID}")


def test_copy_one_manifest_over_another(setup):
    other, _ = make_backup(setup.repo, seed=5)
    source, target = setup.manifest.ref.manifest_key, other.ref.manifest_key
    setup.storage.put(target, io.BytesIO(setup.storage.get(source)))
    repo = reopen(setup.storage)
    with pytest.raises(IntegrityError) as info:
        repo.load_manifest(other.ref)
    assert str(info.value) == f"{target}: chunk 0 failed authentication {MID}"
    assert repo.load_manifest(setup.manifest.ref).to_dict() == setup.manifest.to_dict()


def test_delete_a_data_object(setup):
    key = setup.keys[1]
    setup.storage.delete(key)
    repo = reopen(setup.storage)
    got, err = read_until_error(repo, setup.item)
    assert isinstance(err, ObjectNotFoundError)
    assert err.key == key
    assert str(err) == f"object not found: {key}"
    assert got == setup.data[:SEGMENT]
    assert repo.verify(setup.manifest) == [f"db: object not found: {key}"]


def test_verify_lists_every_damaged_item(setup):
    """verify collects every problem instead of stopping at the first."""
    with setup.repo.new_backup("app", "postgres") as writer:
        for name in ("a", "b", "c"):
            writer.add_stream(name, "sql", iter([name.encode() * 5000]))
        manifest = writer.commit()
    a_key, c_key = manifest.items[0].objects[0].key, manifest.items[2].objects[0].key
    rewrite(setup.storage, a_key, lambda b: flip(b, layout_of(b, a_key).header_len))
    setup.storage.delete(c_key)
    problems = reopen(setup.storage).verify(manifest)
    assert problems == [
        f"a: {a_key}: chunk 0 failed authentication {MID}",
        f"c: object not found: {c_key}",
    ]


def test_verify_with_the_storage_gone_is_unreachable_not_damage(setup, tmp_path):
    """A server or disk that goes away mid-verify says nothing about the backup: verify
    must fail as unreachable (exit 4), not report the backup damaged (exit 3, and marked
    so in the catalog)."""
    repo = reopen(setup.storage)
    if isinstance(setup.storage, LocalStorage):
        repo._storage = LocalStorage(tmp_path / "unmounted")
    else:  # the same bucket, through an endpoint nothing listens on
        from drbackup.storage.s3 import S3Storage

        s3 = setup.storage
        dead = f"http://127.0.0.1:{free_port()}"
        options = {"access_key_id": "k", "secret_access_key": "s", "max_attempts": 1}
        repo._storage = S3Storage(s3.bucket, s3.prefix, endpoint_url=dead, **options)
    with pytest.raises(StorageUnreachableError):
        repo.verify(setup.manifest)


# -- keys and the header ---------------------------------------------------------------------


def test_wrong_passphrase(setup):
    with pytest.raises(EncryptionKeyError) as info:
        reopen(setup.storage, passphrase="not-pw")
    assert str(info.value) == "wrong passphrase: it opens none of the repository's access slots"
    assert info.value.hint == "check repository.encryption in the config (or DRBACKUP_PASSPHRASE)"


def test_public_key_only_config_cannot_read(storage):
    repo = Repository.init(
        storage, Secrets(passphrase="pw"), public_key_mode=True, scrypt_params=FAST
    )
    writer = reopen(storage, public_key=repo.keyring.public_key)
    manifest, _ = make_backup(writer, seed=6)
    message = "cannot read: this configuration holds only the repository public key"
    hint = ("reading needs the private key: set the passphrase, key_file or "
            "repository.encryption.private_key_file")  # fmt: skip
    for attempt in (
        lambda: writer.open_item(manifest.items[0]),
        lambda: writer.load_manifest(manifest.ref),
        lambda: writer.verify(manifest),
    ):
        with pytest.raises(EncryptionKeyError) as info:
            attempt()
        assert str(info.value) == message
        assert info.value.hint == hint
    assert reopen(storage).verify(manifest) == []


def test_header_of_a_newer_format_version(setup):
    rewrite(setup.storage, HEADER_KEY, lambda b: b.replace(b'"version": 1', b'"version": 2'))
    with pytest.raises(RepositoryError) as info:
        reopen(setup.storage)
    assert str(info.value) == (
        f"{setup.storage.url}: repository format version 2 is newer than this drbackup supports (1)"
    )
    assert info.value.hint == "upgrade drbackup to read this repository"


def test_missing_header(setup):
    setup.storage.delete(HEADER_KEY)
    with pytest.raises(RepositoryError) as info:
        reopen(setup.storage)
    assert str(info.value) == f"no repository at {setup.storage.url}"


def test_header_from_another_repository(setup, tmp_path):
    """Access slots are bound to the repository id; a foreign header opens nothing here."""
    (tmp_path / "other").mkdir()
    other = Repository.init(
        LocalStorage(tmp_path / "other"), Secrets(passphrase="pw"), scrypt_params=FAST
    )
    setup.storage.put(HEADER_KEY, io.BytesIO(other._storage.get(HEADER_KEY)))
    repo = reopen(setup.storage)  # the passphrase opens the other repository's master key
    got, err = read_until_error(repo, setup.item)
    assert got == b""
    assert str(err) == (
        f"{setup.keys[0]}: its data key does not open with this repository's key "
        "(tampered, or copied from another repository)"
    )
