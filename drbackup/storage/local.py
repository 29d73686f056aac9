"""Local directory storage: atomic writes by temp file, fsync, rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from drbackup.errors import ObjectNotFoundError, StorageError, StorageUnreachableError
from drbackup.storage.base import Capabilities, ObjectInfo, validate_key

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


class LocalStorage:
    """A directory as a flat key space; ``/`` in keys become subdirectories."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().absolute()
        self.url = str(self.root)
        self.capabilities = Capabilities()

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

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

    def put(self, key: str, reader: BinaryIO) -> int:
        path = self._path(key)
        self._require_root("write", key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        except OSError as exc:
            raise StorageError(f"cannot write {key}: {exc.strerror or exc}") from exc
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
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except BaseException as exc:
            with _suppress_oserror():
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write {key}: {exc.strerror or exc}") from exc
            raise
        return size

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")  # noqa: SIM115 - caller closes
        except (FileNotFoundError, NotADirectoryError):
            self._require_root("read", key)
            raise ObjectNotFoundError(key) from None
        except IsADirectoryError:
            raise ObjectNotFoundError(key) from None
        except OSError as exc:
            raise StorageError(f"cannot read {key}: {exc.strerror or exc}") from exc

    def get(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def stat(self, key: str) -> ObjectInfo:
        try:
            st = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            self._require_root("stat", key)
            raise ObjectNotFoundError(key) from None
        if not _is_file(st):
            raise ObjectNotFoundError(key)
        return ObjectInfo(key=key, size=st.st_size, mtime=st.st_mtime)

    def exists(self, key: str) -> bool:
        try:
            self.stat(key)
        except ObjectNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the deepest directory the prefix names; filter the rest by string prefix.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        if not start.is_dir():
            self._require_root("list", prefix or self.url)
            return
        yield from self._walk(start, prefix)

    def _walk(self, directory: Path, prefix: str) -> Iterator[ObjectInfo]:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except FileNotFoundError:
            return
        # Sort so that "a/b" (dir a) interleaves correctly with "a-b" (file): compare keys.
        items = []
        for entry in entries:
            if entry.name.startswith(_TMP_PREFIX):
                continue
            rel = os.path.relpath(entry.path, self.root).replace(os.sep, "/")
            items.append((rel + "/" if entry.is_dir() else rel, entry))
        items.sort(key=lambda t: t[0])
        for rel, entry in items:
            if entry.is_dir():
                if rel.startswith(prefix) or prefix.startswith(rel):
                    yield from self._walk(Path(entry.path), prefix)
            elif rel.startswith(prefix):
                st = entry.stat()
                yield ObjectInfo(key=rel, size=st.st_size, mtime=st.st_mtime)

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
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            self._require_root("delete", key)
            return
        except OSError as exc:
            raise StorageError(f"cannot delete {key}: {exc.strerror or exc}") from exc
        # Remove now-empty parent directories up to the root (best effort).
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def destroy(self) -> None:
        """Remove the whole directory (tests and scratch use only)."""
        shutil.rmtree(self.root, ignore_errors=True)


def _is_file(st: os.stat_result) -> bool:
    import stat as _stat

    return _stat.S_ISREG(st.st_mode)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _suppress_oserror:
    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        return exc_type is not None and issubclass(exc_type, OSError)
