"""A local repository's files belong to the owner of its directory, whoever writes them.

The daemon may run as root while the server's archive_command writes WAL into the same
repository as ``postgres``: what root creates there must stay usable by that user.
"""

from __future__ import annotations

import io
import os
import pwd

import pytest

from drbackup.storage.local import LocalStorage

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (as CI runs)")


def test_root_writes_files_and_directories_owned_by_the_repository_owner(tmp_path):
    owner = pwd.getpwnam("postgres")
    root = tmp_path / "repo"
    root.mkdir()
    os.chown(root, owner.pw_uid, owner.pw_gid)
    storage = LocalStorage(root)
    storage.put("wal/app/clusters/x", io.BytesIO(b"data"))
    for path in (
        root / "wal",
        root / "wal/app",
        root / "wal/app/clusters",
        root / "wal/app/clusters/x",
    ):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (owner.pw_uid, owner.pw_gid), path


def test_a_root_owned_repository_stays_root_owned(tmp_path):
    storage = LocalStorage(tmp_path)
    storage.put("a/b", io.BytesIO(b"data"))
    assert (tmp_path / "a" / "b").stat().st_uid == 0
