"""Atomic file writes outside the repository: reports, exports, fetched WAL files.

A file written here is either absent or complete under its name, even after a crash: the
data goes to a temporary file in the same directory (created exclusively, with the final
mode from the start), is flushed and fsynced, renamed over the name, and the directory is
fsynced so that the rename itself survives a power loss.  (The repository's local storage
does the same through directory descriptors, without following links: storage/local.py.)

Imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, *, mode: int = 0o600, owner: tuple[int, int] | None = None
) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: renamed into place when the block ends
    without an exception, removed otherwise.  ``mode``: the file's permissions (set before
    any byte is written); ``owner``: ``(uid, gid)`` to give it to.  The file object's
    ``name`` is the temporary path (to check the data before it is renamed).

    Raises OSError as the file system does.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb", opener=lambda p, flags: os.open(p, flags, mode)) as out:
            os.fchmod(out.fileno(), mode)  # whatever the umask
            if owner is not None:
                os.fchown(out.fileno(), *owner)
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def write_atomic(path: str | os.PathLike, data: bytes | str, *, mode: int = 0o600) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically, making its directory if
    needed; the path.  Raises OSError."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target, mode=mode) as out:
        out.write(data.encode("utf-8") if isinstance(data, str) else data)
    return target


def fsync_directory(path: str | os.PathLike) -> None:
    """Make a rename in directory ``path`` durable; a file system that cannot fsync a
    directory (some network mounts) is left as it is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # EINVAL where directories cannot be synced
            os.fsync(fd)
    finally:
        os.close(fd)
