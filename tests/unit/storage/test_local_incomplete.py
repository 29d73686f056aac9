"""``LocalStorage.list_incomplete``: temporaries of killed writes, never through symlinks."""

from __future__ import annotations

import io
import os

from drbackup.storage.local import LocalStorage


def test_temporaries_are_listed_by_prefix_and_deleted_like_objects(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.put("data/app/x/0000-00000", io.BytesIO(b"whole"))
    for rel in ("data/app/x/.tmp-a1", "blobs/ab/.tmp-b2", ".tmp-c3"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"part")
    assert [i.key for i in storage.list_incomplete()] == [
        ".tmp-c3",
        "blobs/ab/.tmp-b2",
        "data/app/x/.tmp-a1",
    ]
    assert [i.key for i in storage.list_incomplete("data/app/")] == ["data/app/x/.tmp-a1"]
    assert [i.key for i in storage.list("")] == ["data/app/x/0000-00000"]  # never listed
    storage.delete("blobs/ab/.tmp-b2")
    assert not (tmp_path / "blobs").exists()  # empty directories go with it


def test_symlinked_directories_are_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".tmp-victim").write_bytes(b"not ours")
    root = tmp_path / "repo"
    root.mkdir()
    os.symlink(outside, root / "data")
    assert list(LocalStorage(root).list_incomplete()) == []
