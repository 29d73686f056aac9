"""Local directory storage: atomic writes by temp file, fsync, rename; links never followed."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from drbackup.errors import ObjectNotFoundError, StorageError, StorageUnreachableError
from drbackup.storage.base import Capabilities, ObjectInfo, StatBacked, validate_key

_TMP_PREFIX = ".tmp-"
_COPY_BUFSIZE = 1 << 20
_MISSING_ROOT_HINT = (
    "check repository.url in the config you meant (-c FILE or DRBACKUP_CONFIG; without one "
    "the built-in default is used) and that its disk is mounted; 'drbackup init' makes a new one"
)


# Written data is handed to the disk every this many bytes, so that the fsync that makes an
# object durable waits for the last few MiB instead of the whole object (a 270 MiB dump
# waited ~0.3 s at its end).
_WRITEBACK_EVERY = 16 << 20


def _start_writeback(fd: int, start: int, end: int) -> None:
    """Start writing ``[start - _WRITEBACK_EVERY, end)`` of ``fd`` to disk without waiting.

    POSIX_FADV_DONTNEED on Linux starts the writeback of dirty pages and drops the clean ones
    from the page cache (a backup is not read back soon; it need not push out what is).  The
    range reaches one step back to drop the pages that were still being written last time.
    """
    if hasattr(os, "posix_fadvise"):
        with _suppress_oserror():  # advice only: fsync still makes the object durable
            lo = max(0, start - _WRITEBACK_EVERY)
            os.posix_fadvise(fd, lo, end - lo, os.POSIX_FADV_DONTNEED)


class LocalStorage(StatBacked):
    """A directory as a flat key space; ``/`` in keys become subdirectories.

    Symbolic links are never followed below the root (the root itself may be one: it is
    the configured location).  Every path is reached one directory at a time through file
    descriptors opened with ``O_NOFOLLOW``, so no read, write or delete goes through a link
    planted in the repository; a listing skips links and records their keys in
    :attr:`skipped_links` for the caller to report.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().absolute()
        self.url = str(self.root)
        self.capabilities = Capabilities()
        self.skipped_links: set[str] = set()  # links listings met and did not follow
        self._owner: tuple[int, int] | None | bool = False  # False: not looked up yet

    def _foreign_owner(self) -> tuple[int, int] | None:
        """When this process is root and the repository directory belongs to another user:
        that user.  What root writes is given to them, so that a repository shared with the
        ``postgres`` user (who runs archive_command) stays writable and readable by it."""
        if self._owner is False:
            self._owner = None
            if os.geteuid() == 0:
                with _suppress_oserror():
                    st = self.root.stat()
                    if st.st_uid != 0:
                        self._owner = (st.st_uid, st.st_gid)
        return self._owner  # type: ignore[return-value]

    def _require_root(self, action: str, key: str) -> None:
        """Raise ``StorageUnreachableError`` if the repository directory is missing.

        Without this, a write to an unmounted backup disk would silently recreate the
        directory on the root file system, and a listing would report an empty repository.
        """
        if not self.root.is_dir():
            raise StorageUnreachableError(
                f"cannot {action} {key}: repository directory does not exist: {self.root}",
                hint=_MISSING_ROOT_HINT,
            )

    def prepare(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnreachableError(
                f"cannot create repository directory {self.root}: {exc.strerror or exc}"
            ) from exc

    def check(self) -> None:
        if not self.root.is_dir():
            what = "path is not a directory" if self.root.exists() else "directory does not exist"
            raise StorageUnreachableError(
                f"repository {what}: {self.root}", hint=_MISSING_ROOT_HINT
            )
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnreachableError(f"repository directory is not writable: {self.root}")

    # -- walking without following links ----------------------------------------------------

    @contextlib.contextmanager
    def _dirs(
        self, parts: list[str], *, create: bool = False, owner: tuple[int, int] | None = None
    ) -> Iterator[list[int]]:
        """File descriptors of the root and of each directory ``parts`` names below it.

        Raises FileNotFoundError / NotADirectoryError if one is missing (``create`` makes
        them, given to ``owner`` when set), and :class:`_LinkError` if one is a symbolic link.
        """
        chain = [os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
        try:
            for depth, name in enumerate(parts):
                rel = "/".join(parts[: depth + 1])
                chain.append(_open_dir(chain[-1], name, create, rel, owner))
            yield chain
        finally:
            for fd in chain:
                os.close(fd)

    def _split(self, key: str) -> tuple[list[str], str]:
        *parents, name = validate_key(key).split("/")
        return parents, name

    def _link_error(self, action: str, key: str, link: str) -> StorageError:
        return StorageError(
            f"cannot {action} {key}: {link} is a symbolic link, and drbackup never follows "
            "links in a repository",
            hint=f"remove the link {self.root / link} (what it points to is left alone)",
        )

    # -- the contract ---------------------------------------------------------------------

    def put(self, key: str, reader: BinaryIO) -> int:
        parents, name = self._split(key)
        self._require_root("write", key)
        try:
            owner = self._foreign_owner()
            with self._dirs(parents, create=True, owner=owner) as chain:
                return _write_atomically(chain[-1], name, reader, owner)
        except _LinkError as exc:
            raise self._link_error("write", key, exc.path) from None
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc.strerror or exc}") from exc

    def open(self, key: str) -> BinaryIO:
        parents, name = self._split(key)
        try:
            with self._dirs(parents) as chain:
                fd = _open_file(chain[-1], name, key)
        except (FileNotFoundError, NotADirectoryError):
            self._require_root("read", key)
            raise ObjectNotFoundError(key) from None
        except _LinkError as exc:
            raise self._link_error("read", key, exc.path) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from exc
        if fd is None:
            raise ObjectNotFoundError(key)
        return os.fdopen(fd, "rb")

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def stat(self, key: str) -> ObjectInfo:
        parents, name = self._split(key)
        try:
            with self._dirs(parents) as chain:
                st = os.stat(name, dir_fd=chain[-1], follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            self._require_root("stat", key)
            raise ObjectNotFoundError(key) from None
        except _LinkError as exc:
            raise self._link_error("stat", key, exc.path) from None
        if stat.S_ISLNK(st.st_mode):
            raise self._link_error("stat", key, key)
        if not stat.S_ISREG(st.st_mode):
            raise ObjectNotFoundError(key)
        return ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the deepest directory the prefix names; filter the rest by string prefix.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        parts = base.split("/") if base else []
        if not self.root.is_dir():
            self._require_root("list", prefix or self.url)
        try:
            with self._dirs(parts) as chain:
                yield from self._walk(chain[-1], base, prefix)
        except (FileNotFoundError, NotADirectoryError):
            return
        except _LinkError as exc:
            self.skipped_links.add(exc.path)

    def _walk(self, dir_fd: int, rel_dir: str, prefix: str) -> Iterator[ObjectInfo]:
        """Objects under the directory ``dir_fd`` (key ``rel_dir``), sorted by key."""
        items = []
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                if entry.name.startswith(_TMP_PREFIX):
                    continue
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                if entry.is_symlink():
                    if rel.startswith(prefix) or prefix.startswith(rel + "/"):
                        self.skipped_links.add(rel)
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
                # "a/b" (dir a) must sort against "a-b" (a file) as keys do: compare keys.
                items.append((rel + "/" if is_dir else rel, entry.name, is_dir))
        for sort_key, name, is_dir in sorted(items):
            if is_dir and (sort_key.startswith(prefix) or prefix.startswith(sort_key)):
                yield from self._walk_into(dir_fd, name, sort_key[:-1], prefix)
            elif not is_dir and sort_key.startswith(prefix):
                info = self._listed(dir_fd, name, sort_key)
                if info is not None:
                    yield info

    def _walk_into(self, dir_fd: int, name: str, rel: str, prefix: str) -> Iterator[ObjectInfo]:
        try:
            child = _open_dir(dir_fd, name, False, rel)
        except (FileNotFoundError, NotADirectoryError):
            return  # removed since the directory was read
        except _LinkError:
            self.skipped_links.add(rel)  # replaced by a link since: not followed
            return
        try:
            yield from self._walk(child, rel, prefix)
        finally:
            os.close(child)

    def _listed(self, dir_fd: int, name: str, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            self.skipped_links.add(key)  # became a link since the directory was read
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime)

    def list_incomplete(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Temporary files of writes not finished (``.tmp-*``) whose path starts with ``prefix``.

        A write killed outright leaves its temporary behind (``list`` never shows it); the
        key of each is its relative path, ``mtime`` its last write, and ``delete`` takes it.
        Optional method (storage.base): prune uses it to clean up after killed writers.
        Symbolic links are never followed.
        """
        import stat as _stat

        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        if not start.is_dir():
            self._require_root("list", prefix or self.url)
            return
        for directory, subdirs, files in os.walk(start):  # followlinks=False
            subdirs.sort()
            for name in sorted(n for n in files if n.startswith(_TMP_PREFIX)):
                path = os.path.join(directory, name)
                rel = os.path.relpath(path, self.root).replace(os.sep, "/")
                try:
                    st = os.lstat(path)
                except OSError:
                    continue  # renamed or removed since the walk saw it
                if rel.startswith(prefix) and _stat.S_ISREG(st.st_mode):  # never a link
                    yield ObjectInfo(key=rel, size=st.st_size, mtime=st.st_mtime)

    def delete(self, key: str) -> None:
        parents, name = self._split(key)
        try:
            with self._dirs(parents) as chain:
                _unlink_file(chain[-1], name, key)
                _remove_empty_parents(chain, parents)
        except (FileNotFoundError, NotADirectoryError):
            self._require_root("delete", key)
        except _LinkError as exc:
            raise self._link_error("delete", key, exc.path) from None
        except OSError as exc:
            raise StorageError(f"cannot delete {key}: {exc.strerror or exc}") from exc

    def destroy(self) -> None:
        """Remove the whole directory (tests and scratch use only)."""
        shutil.rmtree(self.root, ignore_errors=True)


class _LinkError(Exception):
    """A symbolic link where a directory or an object was expected; ``path`` is its key."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _open_dir(
    dir_fd: int, name: str, create: bool, rel: str, owner: tuple[int, int] | None = None
) -> int:
    """Open directory ``name`` in ``dir_fd`` without following a link (``rel``: its key);
    with ``create``, make it if missing (owned by ``owner`` when set)."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            raise
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(dir_fd, name):
            raise _LinkError(rel) from None
        raise
    try:
        os.mkdir(name, dir_fd=dir_fd)
        if owner is not None:
            os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        pass  # another writer made it meanwhile
    return _open_dir(dir_fd, name, False, rel)


def _open_file(dir_fd: int, name: str, key: str) -> int | None:
    """A read descriptor of regular file ``name``; None if it is something else."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP and _is_link(dir_fd, name):
            raise _LinkError(key) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _write_atomically(
    dir_fd: int, name: str, reader: BinaryIO, owner: tuple[int, int] | None = None
) -> int:
    """Stream ``reader`` into a temp file in ``dir_fd``, fsync, rename it to ``name``
    (given to ``owner`` when set)."""
    tmp = f"{_TMP_PREFIX}{secrets.token_hex(8)}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
    if owner is not None:
        os.fchown(fd, *owner)
    size = written_back = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := reader.read(_COPY_BUFSIZE):
                out.write(chunk)
                size += len(chunk)
                if size - written_back >= _WRITEBACK_EVERY:
                    out.flush()
                    _start_writeback(out.fileno(), written_back, size)
                    written_back = size
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        os.fsync(dir_fd)
    except BaseException:
        with _suppress_oserror():
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    return size


def _unlink_file(dir_fd: int, name: str, key: str) -> None:
    """Remove ``name`` from ``dir_fd``; a link is refused, never removed or followed."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if stat.S_ISLNK(st.st_mode):
        raise _LinkError(key)
    os.unlink(name, dir_fd=dir_fd)


def _remove_empty_parents(chain: list[int], parents: list[str]) -> None:
    """Remove now-empty directories of ``parents``, deepest first, up to the root (best effort)."""
    for depth in range(len(parents) - 1, -1, -1):
        try:
            os.rmdir(parents[depth], dir_fd=chain[depth])
        except OSError:
            return


class _suppress_oserror:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is not None and issubclass(exc_type, OSError)
