"""The account that runs initdb and postgres when drbackup runs as root (PostgreSQL refuses
root), and the argv prefix (setpriv or runuser) that switches to it."""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from drbackup.errors import SourceError


@dataclass(frozen=True)
class RunAs:
    """The account that runs initdb and postgres when this process is root."""

    user: str
    uid: int
    gid: int
    gids: tuple[int, ...]  # primary and supplementary groups, for the traversal check


def resolve_run_as(euid: int | None = None) -> RunAs | None:
    """None unless running as root; then the ``postgres`` user, else ``nobody``.

    Raises SourceError if neither account exists.
    """
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        gids = tuple(os.getgrouplist(name, entry.pw_gid))
        return RunAs(name, entry.pw_uid, entry.pw_gid, gids)
    raise SourceError(
        "running as root, and neither a 'postgres' nor a 'nobody' user exists to run the server",
        hint="create a 'postgres' system user, or run as an ordinary user",
    )


def build_run_prefix(
    run_as: RunAs | None, *, setpriv: str | None, runuser: str | None, pdeathsig: bool
) -> list[str]:
    """Argv prefix that runs a command as ``run_as`` (None: as is) and, with ``pdeathsig``,
    has the kernel send it SIGINT (fast shutdown) when the starting thread dies.

    Without setpriv, the death signal is not available; as root, runuser is the fallback.
    Raises SourceError when root has neither tool.
    """
    if setpriv:
        prefix = [setpriv]
        if run_as:
            prefix += [f"--reuid={run_as.user}", f"--regid={run_as.gid}", "--init-groups"]
        if pdeathsig:
            prefix += ["--pdeathsig", "INT"]
        return [*prefix, "--"] if len(prefix) > 1 else []
    if run_as is None:
        return []
    if runuser:
        return [runuser, "-u", run_as.user, "--"]
    raise SourceError(
        "running as root needs setpriv or runuser to start postgresql as another user",
        hint="install util-linux",
    )


def is_searchable(mode: int, owner_uid: int, owner_gid: int, run_as: RunAs) -> bool:
    """True if ``run_as`` may search (traverse) a directory with this mode and ownership."""
    if owner_uid == run_as.uid:
        return bool(mode & stat.S_IXUSR)
    if owner_gid in run_as.gids:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)


def find_unsearchable_parent(path: Path, run_as: RunAs) -> Path | None:
    """The first parent of ``path`` (from /) that ``run_as`` cannot traverse, else None."""
    for parent in reversed(path.resolve().parents):
        info = parent.stat()
        if not is_searchable(info.st_mode, info.st_uid, info.st_gid, run_as):
            return parent
    return None


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """``chown -R uid:gid root``, touching only entries that differ."""
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.lchown(path, uid, gid)
