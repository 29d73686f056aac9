"""Which PostgreSQL majors work together, and which installed binaries serve which major.

Checked before anything is started or written; a missing major is a configuration error
(exit 2: the machine or image lacks the right binaries, retrying will not help) whose one
line names the Debian package to install:

* pg_dump refuses a server of a newer major than itself, so a backup needs a client at least
  as new as the source server.  The newest installed client is used: it dumps every older
  server (``postgresql-client-N``).
* pg_restore cannot read an archive written by a newer pg_dump, so a restore needs a client
  at least as new as the backup's pg_dump (``postgresql-client-N``).
* A physical restore runs the server of exactly the base backup's major (``postgresql-N``):
  a data directory or WAL of one major is never given to another.
* A drill restores into an ephemeral cluster of the backup's own major when its server
  binaries are installed, else of the nearest newer one (a restore into a newer major is the
  supported "restore to migrate" path, and the drill then compares across majors); with
  ``into_major`` (``drill run --into-major``), exactly that major: an upgrade rehearsal.
  pg_restore into an older major fails on newer syntax and catalog features, so a cluster
  older than the backup's server is refused.

Installed majors are found in Debian's layout, ``/usr/lib/postgresql/<major>/bin`` (Debian
and Ubuntu carry one major per release; the PostgreSQL project's apt repository,
apt.postgresql.org, carries every supported one), or where the environment overrides say.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from drbackup.errors import ConfigError
from drbackup.sources.postgres.commands import (
    CLIENT_BIN_ENV,
    PG_LIB,
    installed_bin_dirs,
    major_of_bin_dir,
)
from drbackup.sources.postgres.server_bin import (
    find_pg_bin_dir,
    has_server_binaries,
    server_major_version,
)

SERVER_BIN_ENV = "DRBACKUP_PG_BIN"  # directory of initdb/postgres for ephemeral clusters
APT_HINT = "apt.postgresql.org carries every major"


def major_of(server_version_num: int) -> int:
    """``170002`` -> 17 (``server_version_num`` of PostgreSQL 10 and later)."""
    return server_version_num // 10000


def client_package(major: int) -> str:
    """The Debian/Ubuntu package holding pg_dump, pg_restore and psql of ``major``."""
    return f"postgresql-client-{major}"


def server_package(major: int) -> str:
    """The Debian/Ubuntu package holding initdb and postgres of ``major``."""
    return f"postgresql-{major}"


# -- clients ----------------------------------------------------------------------------------


def require_client_for_server(
    tool: str, tool_version: tuple[int, int], server_version_num: int
) -> None:
    """Raise ConfigError when ``tool`` (pg_dump) is of an older major than the server."""
    server = major_of(server_version_num)
    if tool_version[0] >= server:
        return
    raise ConfigError(
        f"{tool} {tool_version[0]}.{tool_version[1]} is older than the server "
        f"(PostgreSQL {server}): install {client_package(server)}",
        hint=f"a newer {tool} works with every older server ({APT_HINT}); or set the "
        f"target's pg_bin_dir (or {CLIENT_BIN_ENV}) to a directory holding {tool} {server} "
        "or newer",
    )


def require_restore_client(pg_restore_major: int, pg_dump_version: str | None) -> None:
    """Raise ConfigError when pg_restore is older than the pg_dump that wrote the archive
    (``pg_dump_version`` as the manifest records it, e.g. ``"17.2"``; None: unknown)."""
    dump_major = int(pg_dump_version.split(".")[0]) if pg_dump_version else None
    if dump_major is None or pg_restore_major >= dump_major:
        return
    raise ConfigError(
        f"the backup was written by pg_dump {pg_dump_version} and pg_restore here is "
        f"{pg_restore_major}: install {client_package(dump_major)}",
        hint=f"pg_restore reads archives of its own and older majors ({APT_HINT}); or set "
        f"{CLIENT_BIN_ENV} to a directory holding pg_restore {dump_major} or newer",
    )


def client_bin_dir_for_major(major: int, tool: str, root: Path = PG_LIB) -> Path:
    """The directory of ``tool`` of exactly ``major`` (tools that must match the server,
    such as pg_receivewal): ``$DRBACKUP_PG_CLIENT_BIN`` if set (used as is), else Debian's
    directory of that major.  Raises ConfigError naming the package when it is missing."""
    if os.environ.get(CLIENT_BIN_ENV):
        return Path(os.environ[CLIENT_BIN_ENV])
    installed = installed_bin_dirs(tool, root)
    if major in installed:
        return installed[major]
    have = ", ".join(map(str, installed)) or "none"
    raise ConfigError(
        f"{tool} of PostgreSQL {major} is not installed (installed: {have}): "
        f"install {client_package(major)}",
        hint=f"{tool} must be of the server's own major ({APT_HINT})",
    )


# -- servers ----------------------------------------------------------------------------------


def installed_servers(root: Path = PG_LIB) -> dict[int, Path]:
    """Server binaries (initdb, postgres) by major, oldest first: only ``$DRBACKUP_PG_BIN``
    when it is set; else Debian's directories, then the ``initdb`` on PATH."""
    from_env = os.environ.get(SERVER_BIN_ENV)
    candidates = (
        [Path(from_env)] if from_env else list(installed_bin_dirs("postgres", root).values())
    )
    on_path = shutil.which("initdb")
    if not from_env and on_path:
        candidates.append(Path(on_path).resolve().parent)
    found: dict[int, Path] = {}
    for bin_dir in candidates:
        if has_server_binaries(bin_dir):
            major = major_of_bin_dir(bin_dir) or server_major_version(bin_dir)
            found.setdefault(major, bin_dir)
    return dict(sorted(found.items()))


def server_bin_dir_for_major(major: int, root: Path = PG_LIB) -> Path:
    """initdb and postgres of exactly ``major``; ConfigError naming the package if missing."""
    installed = installed_servers(root)
    if major in installed:
        return installed[major]
    raise missing_server_error(major, installed)


def missing_server_error(major: int, installed: dict[int, Path]) -> ConfigError:
    have = ", ".join(map(str, installed)) or "none"
    where = f" in {SERVER_BIN_ENV}" if os.environ.get(SERVER_BIN_ENV) else ""
    return ConfigError(
        f"the PostgreSQL {major} server is not installed{where} (installed: {have}): "
        f"install {server_package(major)}",
        hint=f"{APT_HINT}; or set {SERVER_BIN_ENV} to the bin directory of PostgreSQL {major}",
    )


def server_bin_dir_for_backup(
    backup_server_version_num: int | None, into_major: int | None = None, root: Path = PG_LIB
) -> tuple[int, Path]:
    """``(major, bin dir)`` of the server an ephemeral drill cluster should run for a backup.

    ``into_major``: exactly that major (an upgrade rehearsal; refused when older than the
    backup's).  Else the backup's own major when installed, else the nearest newer one;
    the newest when the backup does not record its server version.  Raises ConfigError
    naming the package to install when nothing fits, and SourceError when no server
    binaries are installed at all.
    """
    backup = major_of(backup_server_version_num) if backup_server_version_num else None
    if into_major is not None:
        if backup is not None and into_major < backup:
            raise ConfigError(
                f"cannot drill a backup of PostgreSQL {backup} into PostgreSQL {into_major}: "
                "a restore goes into the same or a newer major",
                hint=f"use into_major {backup} or newer",
            )
        return into_major, server_bin_dir_for_major(into_major, root)
    installed = installed_servers(root)
    if not installed:
        found = find_pg_bin_dir()  # pg_config's; or none at all: its error says what to install
        installed = {server_major_version(found): found}
    fitting = [major for major in installed if backup is None or major >= backup]
    if not fitting:
        raise older_cluster_error(max(installed), backup)
    chosen = max(fitting) if backup is None else min(fitting)
    return chosen, installed[chosen]


def require_cluster_for_backup(cluster_major: int, backup_server_version_num: int | None) -> None:
    """Raise ConfigError when a running cluster of ``cluster_major`` is older than the backup."""
    if backup_server_version_num is None or cluster_major >= major_of(backup_server_version_num):
        return
    raise older_cluster_error(cluster_major, major_of(backup_server_version_num))


def older_cluster_error(cluster_major: int, backup_major: int) -> ConfigError:
    return ConfigError(
        f"the ephemeral drill cluster would be PostgreSQL {cluster_major}, older than the "
        f"backup's server (PostgreSQL {backup_major}): install {server_package(backup_major)}",
        hint=f"{APT_HINT}; or set {SERVER_BIN_ENV} to its bin directory, or drill on a "
        "server (scratch.server)",
    )


def data_directory_major(data_dir: Path) -> int | None:
    """The major a data directory belongs to (its ``PG_VERSION``), None without one."""
    try:
        text = (Path(data_dir) / "PG_VERSION").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# pg_restore 17 and later start every session with ``SET transaction_timeout = 0`` (its own
# fixed preamble, not the archive's), which servers before 17 reject.  Nothing else of the
# restore depends on it: the setting does not exist there.  Exactly this error, as the
# collector in restore.py joins it, is harmless on such a target.
_TRANSACTION_TIMEOUT_ERROR = (
    'could not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"'
    " | Command was: SET transaction_timeout = 0;"
)


def harmless_restore_errors(pg_restore_major: int, target_major: int) -> frozenset[str]:
    """pg_restore error messages that a restore by ``pg_restore_major`` into a server of
    ``target_major`` may ignore, because the client made them and they change nothing."""
    if pg_restore_major >= 17 > target_major:
        return frozenset({_TRANSACTION_TIMEOUT_ERROR})
    return frozenset()
