"""The key hierarchy (``drbackup/codec/keys.py``): access slots, data keys, X25519 wrapping.

Pure unit tests: slots are the JSON-able dicts the repository header stores; scrypt runs with
cheap parameters.
"""

from __future__ import annotations

import os

import pytest

from drbackup.codec import keys
from drbackup.errors import ConfigError, EncryptionKeyError, IntegrityError, RepositoryError

FAST = {"n": 1024, "r": 8, "p": 1}
REPO_ID = bytes.fromhex("00112233445566778899aabbccddeeff")
OTHER_REPO_ID = bytes.fromhex("ffeeddccbbaa99887766554433221100")
MASTER = bytes(range(32))
OBJ = "data/app/20240101T000000Z-abcdef/0000-00000"

WRONG_PASSPHRASE = "wrong passphrase: it opens none of the repository's access slots"
WRONG_KEY_FILE = "wrong key file: it opens none of the repository's access slots"
WRONG_HINT = "check repository.encryption in the config (or DRBACKUP_PASSPHRASE)"
FOREIGN_DATA_KEY = (
    f"{OBJ}: its data key does not open with this repository's key "
    "(tampered, or copied from another repository)"
)
PUBLIC_ONLY = "cannot read: this configuration holds only the repository public key"


def passphrase_slot(passphrase: str, master: bytes = MASTER, repo_id: bytes = REPO_ID) -> dict:
    return keys.new_access_slot(master, repo_id, passphrase=passphrase, scrypt_params=FAST)


def open_with(slots, *, passphrase=None, key_file=None, repo_id=REPO_ID) -> bytes:
    return keys.open_master_key(slots, repo_id, passphrase=passphrase, key_file=key_file)


# -- access slots: the master key ----------------------------------------------------------


def test_passphrase_slot_opens():
    slot = passphrase_slot("correct horse")
    assert slot["kind"] == "passphrase"
    assert slot["kdf"]["name"] == "scrypt"
    assert {k: slot["kdf"][k] for k in FAST} == FAST
    assert open_with([slot], passphrase="correct horse") == MASTER


def test_slot_never_holds_the_master_key_in_clear():
    slot = passphrase_slot("pw")
    assert keys.b64(MASTER) not in repr(slot)
    assert MASTER not in keys.unb64(slot["wrapped_key"], "wrapped key")


def test_wrong_passphrase():
    with pytest.raises(EncryptionKeyError) as info:
        open_with([passphrase_slot("pw")], passphrase="pw2")
    assert str(info.value) == WRONG_PASSPHRASE
    assert info.value.hint == WRONG_HINT


def test_wrong_passphrase_with_stray_white_space_says_so():
    """Passphrases are taken verbatim (spaces may be part of one), so a copied newline
    makes a wrong passphrase: the hint points at it."""
    with pytest.raises(EncryptionKeyError) as info:
        open_with([passphrase_slot("pw")], passphrase="pw\n")
    assert str(info.value) == WRONG_PASSPHRASE
    assert (
        info.value.hint
        == "the passphrase begins or ends with white space (a copied newline?); " + WRONG_HINT
    )


def test_key_file_slot_opens():
    key_file = os.urandom(32)
    slot = keys.new_access_slot(MASTER, REPO_ID, key_file=key_file)
    assert slot["kind"] == "key_file"
    assert slot["kdf"]["name"] == "hkdf-sha256"
    assert open_with([slot], key_file=key_file) == MASTER


def test_wrong_key_file():
    slot = keys.new_access_slot(MASTER, REPO_ID, key_file=os.urandom(32))
    with pytest.raises(EncryptionKeyError) as info:
        open_with([slot], key_file=os.urandom(32))
    assert str(info.value) == WRONG_KEY_FILE
    assert info.value.hint == WRONG_HINT


def test_no_slot_of_the_kind_given():
    slot = keys.new_access_slot(MASTER, REPO_ID, key_file=os.urandom(32))
    with pytest.raises(EncryptionKeyError) as info:
        open_with([slot], passphrase="pw")
    assert str(info.value) == "the repository has no passphrase access slot"
    assert info.value.hint == "use the passphrase or key file the repository was initialised with"
    with pytest.raises(EncryptionKeyError, match="^the repository has no key file access slot$"):
        open_with([passphrase_slot("pw")], key_file=os.urandom(32))


def test_new_access_slot_needs_a_secret():
    with pytest.raises(ValueError, match="needs a passphrase or a key file"):
        keys.new_access_slot(MASTER, REPO_ID)


def test_rotation_add_new_passphrase_then_remove_old():
    old = passphrase_slot("old")
    new = passphrase_slot("new")
    assert old["id"] != new["id"]
    both = [old, new]
    assert open_with(both, passphrase="old") == MASTER
    assert open_with(both, passphrase="new") == MASTER
    rotated = [s for s in both if s["id"] != old["id"]]
    assert open_with(rotated, passphrase="new") == MASTER
    with pytest.raises(EncryptionKeyError, match=f"^{WRONG_PASSPHRASE}$"):
        open_with(rotated, passphrase="old")


def test_passphrase_and_key_file_slots_side_by_side():
    key_file = os.urandom(32)
    slots = [passphrase_slot("pw"), keys.new_access_slot(MASTER, REPO_ID, key_file=key_file)]
    assert open_with(slots, passphrase="pw") == MASTER
    assert open_with(slots, key_file=key_file) == MASTER


def test_slot_from_another_repository_does_not_open():
    """The repository id is in the associated data: a slot cannot be spliced across."""
    foreign = passphrase_slot("pw", repo_id=OTHER_REPO_ID)
    with pytest.raises(EncryptionKeyError, match=f"^{WRONG_PASSPHRASE}$"):
        open_with([foreign], passphrase="pw")


# A header is clear JSON: a damaged slot must fail as a repository problem, not a crash.
@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s["kdf"].update(n=1025),  # not a power of two: scrypt refuses
        lambda s: s["kdf"].update(p=0),
        lambda s: s["kdf"].pop("salt"),
        lambda s: s["kdf"].update(salt="not base64!"),
        lambda s: s.pop("kdf"),
        lambda s: s.pop("wrapped_key"),
        lambda s: s.update(wrapped_key="@@@@"),
        lambda s: s.update(kdf=None),
    ],
)
def test_damaged_slot_is_a_repository_error(damage):
    slot = passphrase_slot("pw")
    damage(slot)
    with pytest.raises(RepositoryError) as info:
        open_with([slot], passphrase="pw")
    assert str(info.value) == (
        f"the repository header is damaged: passphrase access slot {slot['id']} has unreadable "
        "kdf parameters or wrapped key, and no other slot opens"
    )
    assert info.value.hint


def test_damaged_slot_does_not_hide_a_good_one():
    damaged = passphrase_slot("pw")
    damaged["kdf"]["n"] = 3
    assert open_with([damaged, passphrase_slot("pw")], passphrase="pw") == MASTER


def test_non_dict_slot_is_ignored():
    assert open_with(["garbage", None, passphrase_slot("pw")], passphrase="pw") == MASTER


# -- data keys -----------------------------------------------------------------------------


def test_symmetric_data_key_round_trip():
    dk = keys.wrap_data_key_symmetric(MASTER, REPO_ID)
    assert dk.slot_type == keys.SLOT_SYMMETRIC
    assert len(dk.key) == keys.KEY_SIZE
    assert dk.key not in dk.slot
    got = keys.unwrap_data_key(
        dk.slot_type, dk.slot, REPO_ID, master_key=MASTER, private_key=None, object_key=OBJ
    )
    assert got == dk.key


def test_every_backup_gets_a_fresh_data_key():
    assert (
        keys.wrap_data_key_symmetric(MASTER, REPO_ID).key
        != keys.wrap_data_key_symmetric(MASTER, REPO_ID).key
    )


@pytest.mark.parametrize(
    ("repo_id", "master"),
    [(OTHER_REPO_ID, MASTER), (REPO_ID, bytes(32))],
    ids=["other-repository", "other-master-key"],
)
def test_symmetric_data_key_from_elsewhere_fails(repo_id, master):
    dk = keys.wrap_data_key_symmetric(MASTER, REPO_ID)
    with pytest.raises(IntegrityError) as info:
        keys.unwrap_data_key(
            dk.slot_type, dk.slot, repo_id, master_key=master, private_key=None, object_key=OBJ
        )
    assert str(info.value) == FOREIGN_DATA_KEY


def test_x25519_wrap_unwrap():
    private, public = keys.generate_x25519()
    assert keys.public_from_private(private) == public
    dk = keys.wrap_data_key_public(public, REPO_ID)
    assert dk.slot_type == keys.SLOT_X25519
    assert len(dk.slot) == 32 + keys.NONCE_SIZE + keys.KEY_SIZE + 16
    got = keys.unwrap_data_key(
        dk.slot_type, dk.slot, REPO_ID, master_key=None, private_key=private, object_key=OBJ
    )
    assert got == dk.key


def test_x25519_each_wrap_uses_a_fresh_ephemeral_key():
    _, public = keys.generate_x25519()
    a, b = keys.wrap_data_key_public(public, REPO_ID), keys.wrap_data_key_public(public, REPO_ID)
    assert a.slot[:32] != b.slot[:32]


def test_public_key_only_holder_cannot_unwrap():
    _, public = keys.generate_x25519()
    dk = keys.wrap_data_key_public(public, REPO_ID)
    with pytest.raises(EncryptionKeyError) as info:
        keys.unwrap_data_key(
            dk.slot_type, dk.slot, REPO_ID, master_key=None, private_key=None, object_key=OBJ
        )
    assert str(info.value) == PUBLIC_ONLY
    assert "private key" in info.value.hint


@pytest.mark.parametrize("case", ["other-repository", "other-private-key", "tampered-slot"])
def test_x25519_data_key_from_elsewhere_fails(case):
    private, public = keys.generate_x25519()
    dk = keys.wrap_data_key_public(public, REPO_ID)
    repo_id, slot = REPO_ID, dk.slot
    if case == "other-repository":
        repo_id = OTHER_REPO_ID
    elif case == "other-private-key":
        private = keys.generate_x25519()[0]
    else:
        slot = slot[:40] + bytes([slot[40] ^ 1]) + slot[41:]
    with pytest.raises(IntegrityError) as info:
        keys.unwrap_data_key(
            dk.slot_type, slot, repo_id, master_key=None, private_key=private, object_key=OBJ
        )
    assert str(info.value) == FOREIGN_DATA_KEY


@pytest.mark.parametrize("slot", [b"", b"short", bytes(200)])
def test_malformed_slot_fails_as_integrity_error(slot):
    private, _ = keys.generate_x25519()
    with pytest.raises(IntegrityError, match=f"^{OBJ}: its data key does not open"):
        keys.unwrap_data_key(
            keys.SLOT_X25519, slot, REPO_ID, master_key=None, private_key=private, object_key=OBJ
        )
    with pytest.raises(IntegrityError, match=f"^{OBJ}: its data key does not open"):
        keys.unwrap_data_key(
            keys.SLOT_SYMMETRIC, slot, REPO_ID, master_key=MASTER, private_key=None, object_key=OBJ
        )


def test_unknown_slot_type():
    with pytest.raises(IntegrityError) as info:
        keys.unwrap_data_key(
            7, b"x" * 60, REPO_ID, master_key=MASTER, private_key=None, object_key=OBJ
        )
    assert str(info.value) == f"{OBJ}: unknown key slot type 7"


def test_x25519_slot_in_a_symmetric_repository_is_tampering():
    """A symmetric reader holds the master key and no private key: not a key problem."""
    _, public = keys.generate_x25519()
    dk = keys.wrap_data_key_public(public, REPO_ID)
    with pytest.raises(IntegrityError) as info:
        keys.unwrap_data_key(
            dk.slot_type, dk.slot, REPO_ID, master_key=MASTER, private_key=None, object_key=OBJ
        )
    assert str(info.value) == (
        f"{OBJ}: key slot type 2 does not belong in a symmetric repository (tampered)"
    )


def test_symmetric_slot_read_with_only_a_private_key_file_is_tampering():
    private, _ = keys.generate_x25519()
    dk = keys.wrap_data_key_symmetric(MASTER, REPO_ID)
    with pytest.raises(IntegrityError, match="does not belong in a public-key repository"):
        keys.unwrap_data_key(
            dk.slot_type, dk.slot, REPO_ID, master_key=None, private_key=private, object_key=OBJ
        )


# -- key files -----------------------------------------------------------------------------


def test_read_key_file(tmp_path):
    raw = os.urandom(32)
    path = tmp_path / "repo.key"
    path.write_text(keys.b64(raw) + "\n")
    assert keys.read_key_file(path) == raw


@pytest.mark.parametrize(
    ("content", "message"),
    [("not base64!", "is not valid base64"), (keys.b64(b"short"), "must hold 32 bytes")],
)
def test_read_key_file_rejects_bad_content(tmp_path, content, message):
    path = tmp_path / "repo.key"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        keys.read_key_file(path)


# -- the passphrase KDF and its background derivation --------------------------------------


def test_scrypt_is_the_function_earlier_slots_were_made_with():
    # Slots written before hashlib.scrypt replaced cryptography's Scrypt must still open.
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    salt = os.urandom(16)
    kdf = {"salt": keys.b64(salt), **keys.DEFAULT_SCRYPT}
    theirs = Scrypt(salt=salt, length=32, **keys.DEFAULT_SCRYPT).derive("pässwörd".encode())
    assert keys.derive_passphrase_kek("pässwörd", kdf) == theirs


def _keyring(passphrase: str, *, background: bool):
    from drbackup.repository.keyring import KeyRing, Secrets

    header = {
        "repository_id": REPO_ID.hex(),
        "encryption": {"mode": "symmetric", "access_slots": [passphrase_slot("right")]},
    }
    return KeyRing(header, Secrets(passphrase=passphrase), background=background)


def test_background_derivation_gives_the_same_key():
    ring = _keyring("right", background=True)
    assert ring.can_write and ring.can_read  # known without waiting
    assert ring.master_key == MASTER == _keyring("right", background=False).master_key


def test_background_wrong_passphrase_raises_at_every_use_not_at_open():
    with pytest.raises(EncryptionKeyError):
        _keyring("wrong", background=False)
    ring = _keyring("wrong", background=True)  # opens: the error waits for a key's use
    ring.wait()
    for use in (ring.new_data_key, lambda: ring.master_key):
        with pytest.raises(EncryptionKeyError) as info:
            use()
        assert str(info.value) == WRONG_PASSPHRASE


def test_background_key_resolved_by_several_threads_at_once():
    import threading

    for passphrase, expected in (("right", MASTER), ("wrong", EncryptionKeyError)):
        ring = _keyring(passphrase, background=True)
        results: list = []
        barrier = threading.Barrier(4)

        def use(ring=ring, results=results, barrier=barrier) -> None:
            barrier.wait()
            try:
                results.append(ring.master_key)
            except EncryptionKeyError as exc:
                results.append(exc)

        threads = [threading.Thread(target=use) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if expected is MASTER:
            assert results == [MASTER] * 4
        else:  # each thread gets its own error object, with the message and hint
            assert all(isinstance(r, EncryptionKeyError) for r in results)
            assert len({id(r) for r in results}) == 4
            assert {(str(r), r.hint) for r in results} == {(WRONG_PASSPHRASE, WRONG_HINT)}


# -- the scrypt bound and which slot opened --------------------------------------------------


@pytest.mark.parametrize(
    ("params", "over"),
    [
        (keys.DEFAULT_SCRYPT, False),
        ({"n": 1 << 20, "r": 8, "p": 1}, False),  # the bound itself
        ({"n": 1 << 21, "r": 8, "p": 1}, True),  # memory
        ({"n": 1 << 16, "r": 8, "p": 32}, True),  # work
        ({"n": 1 << 18, "r": 64, "p": 1}, True),  # memory through r
    ],
)
def test_scrypt_parameters_have_an_upper_bound(params, over):
    assert bool(keys.scrypt_over_limit(params)) is over


def test_new_slots_above_the_bound_are_refused():
    with pytest.raises(ConfigError, match="above the limit"):
        keys.new_access_slot(
            MASTER, REPO_ID, passphrase="pw", scrypt_params={"n": 1 << 21, "r": 8, "p": 1}
        )


def test_a_slot_above_the_bound_is_skipped_for_one_that_opens_and_the_opener_is_named():
    good = passphrase_slot("pw")
    planted = {**good, "id": "planted", "kdf": {**good["kdf"], "n": 1 << 22}}
    assert keys.find_master_key([planted, good], REPO_ID, passphrase="pw", key_file=None) == (
        MASTER,
        good["id"],
    )
    with pytest.raises(RepositoryError, match="^refusing passphrase access slot planted "):
        open_with([planted], passphrase="pw")


def test_cheaper_slots_are_tried_first():
    costly = keys.new_access_slot(
        MASTER, REPO_ID, passphrase="pw", scrypt_params={"n": 1 << 14, "r": 8, "p": 1}
    )
    cheap = passphrase_slot("pw")
    assert (
        keys.find_master_key([costly, cheap], REPO_ID, passphrase="pw", key_file=None)[1]
        == cheap["id"]
    )


def test_slots_record_their_creation_and_an_optional_label():
    slot = keys.new_access_slot(MASTER, REPO_ID, key_file=os.urandom(32), label="  safe  ")
    assert slot["label"] == "safe" and slot["created_at"].endswith("+00:00")
    assert "label" not in keys.new_access_slot(MASTER, REPO_ID, key_file=os.urandom(32))
    with pytest.raises(ConfigError):
        keys.new_access_slot(MASTER, REPO_ID, key_file=os.urandom(32), label="two\nlines")
