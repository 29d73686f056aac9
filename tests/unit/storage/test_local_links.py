"""Local storage never follows a symbolic link below its root (storage/local.py).

A link planted in a repository (by hand, by a restore of a directory tree, by another
tool) must not lead a listing, a read, a write or a delete out of the repository: listings
skip it and record it, everything else refuses it naming it, and what it points to is
never touched.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from drbackup.errors import ObjectNotFoundError, StorageError
from drbackup.storage.base import link_warnings
from drbackup.storage.local import LocalStorage


@pytest.fixture
def planted(tmp_path):
    """A repository with real objects, a linked directory and a linked file, both pointing
    outside it; returns ``(storage, outside)``."""
    storage = LocalStorage(tmp_path / "repo")
    storage.prepare()
    storage.put("data/app/b1/0000", io.BytesIO(b"mine"))
    storage.put("manifests/app/b1", io.BytesIO(b"manifest"))
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "dir" / "0000").write_bytes(b"precious")
    (outside / "file").write_bytes(b"precious too")
    root = Path(storage.url)
    (root / "data" / "app" / "b2").symlink_to(outside / "dir")
    (root / "manifests" / "app" / "b2").symlink_to(outside / "file")
    return storage, outside


def untouched(outside: Path) -> bool:
    return (outside / "dir" / "0000").read_bytes() == b"precious" and (
        outside / "file"
    ).read_bytes() == b"precious too"


def test_listings_skip_links_and_record_them(planted):
    storage, outside = planted
    assert [i.key for i in storage.list("")] == ["data/app/b1/0000", "manifests/app/b1"]
    assert [i.key for i in storage.list("data/app/b2/")] == []  # the prefix names the link
    assert storage.skipped_links == {"data/app/b2", "manifests/app/b2"}
    assert link_warnings(storage) == [
        f"{key} is a symbolic link in the repository: not followed, nothing removed through "
        "it (drbackup never follows links in a repository; remove the link)"
        for key in ("data/app/b2", "manifests/app/b2")
    ]
    assert link_warnings(storage) == []  # reported once
    assert untouched(outside)


@pytest.mark.parametrize(
    ("action", "key", "link"),
    [
        ("read", "data/app/b2/0000", "data/app/b2"),
        ("read", "manifests/app/b2", "manifests/app/b2"),
        ("stat", "data/app/b2/0000", "data/app/b2"),
        ("stat", "manifests/app/b2", "manifests/app/b2"),
        ("delete", "data/app/b2/0000", "data/app/b2"),
        ("delete", "manifests/app/b2", "manifests/app/b2"),
        ("write", "data/app/b2/0001", "data/app/b2"),
    ],
)
def test_nothing_is_read_written_or_deleted_through_a_link(planted, action, key, link):
    storage, outside = planted
    call = {
        "read": lambda: storage.get(key),
        "stat": lambda: storage.stat(key),
        "delete": lambda: storage.delete(key),
        "write": lambda: storage.put(key, io.BytesIO(b"leak")),
    }[action]
    with pytest.raises(StorageError) as info:
        call()
    assert not isinstance(info.value, ObjectNotFoundError)
    assert info.value.message == (
        f"cannot {action} {key}: {link} is a symbolic link, and drbackup never follows links "
        "in a repository"
    )
    assert info.value.hint.startswith("remove the link ")
    assert untouched(outside)
    assert sorted(p.name for p in (outside / "dir").iterdir()) == ["0000"]  # nothing written
    assert Path(storage.url, link).is_symlink()  # the link itself is left for the user


def test_objects_beside_links_work_as_before(planted):
    storage, _ = planted
    assert storage.get("data/app/b1/0000") == b"mine"
    storage.put("data/app/b3/0000", io.BytesIO(b"new"))
    storage.delete("data/app/b1/0000")
    assert not Path(storage.url, "data/app/b1").exists()  # its empty directory went too
    assert [i.key for i in storage.list("data/")] == ["data/app/b3/0000"]


def test_the_root_itself_may_be_a_link(tmp_path):
    # The configured location (e.g. /backups -> /mnt/disk1/backups) is the user's choice.
    real = tmp_path / "disk"
    real.mkdir()
    (tmp_path / "repo").symlink_to(real)
    storage = LocalStorage(tmp_path / "repo")
    storage.put("a/b", io.BytesIO(b"x"))
    assert [i.key for i in storage.list("")] == ["a/b"] and (real / "a" / "b").exists()
    storage.delete("a/b")
    assert list(real.iterdir()) == [] and storage.skipped_links == set()
