"""Which PostgreSQL majors may work together, checked before anything is started or written.

Two rules, both refused as configuration errors (exit 2: the machine or image lacks the
right binaries; retrying will not help):

* pg_dump refuses a server of a newer major than itself, so a backup needs a client at least
  as new as the source server.  A newer client dumps every older server.
* A drill restores into an ephemeral cluster started from the local server binaries;
  pg_restore into an older major fails on newer syntax and catalog features, so the cluster
  must be at least as new as the server the backup was taken from.

The hints name the Debian package to install (Debian and Ubuntu carry one major per release;
the PostgreSQL project's apt repository, apt.postgresql.org, carries every supported one).
"""

from __future__ import annotations

from pathlib import Path

from drbackup.errors import ConfigError, SourceError
from drbackup.sources.postgres.commands import CLIENT_BIN_ENV
from drbackup.sources.postgres.server_bin import find_pg_bin_dir, server_major_version

SERVER_BIN_ENV = "DRBACKUP_PG_BIN"  # directory of initdb/postgres for ephemeral clusters


def major_of(server_version_num: int) -> int:
    """``170002`` -> 17 (``server_version_num`` of PostgreSQL 10 and later)."""
    return server_version_num // 10000


def client_package(major: int) -> str:
    """The Debian/Ubuntu package holding pg_dump, pg_restore and psql of ``major``."""
    return f"postgresql-client-{major}"


def server_package(major: int) -> str:
    """The Debian/Ubuntu package holding initdb and postgres of ``major``."""
    return f"postgresql-{major}"


def require_client_for_server(
    tool: str, tool_version: tuple[int, int], server_version_num: int
) -> None:
    """Raise ConfigError when ``tool`` (pg_dump) is of an older major than the server."""
    server = major_of(server_version_num)
    if tool_version[0] >= server:
        return
    raise ConfigError(
        f"{tool} {tool_version[0]}.{tool_version[1]} is older than the server "
        f"(PostgreSQL {server})",
        hint=f"install {client_package(server)} (or newer; apt.postgresql.org has every "
        f"major), or set {CLIENT_BIN_ENV} to the directory holding it",
    )


def server_bin_dir_for_backup(backup_server_version_num: int | None) -> Path:
    """The server binaries an ephemeral drill cluster should use for this backup.

    The first of the usual places (see ``cluster.find_pg_bin_dir``) holding a major at least
    the backup's; any when the backup does not record its server version.  Raises
    ConfigError naming the package to install when only older majors are installed, and
    SourceError when no server binaries are installed at all.
    """
    if backup_server_version_num is None:
        return find_pg_bin_dir()
    needed = major_of(backup_server_version_num)
    try:
        return find_pg_bin_dir(min_major=needed)
    except SourceError:
        newest = find_pg_bin_dir()  # none at all: its own error says what to install
    raise older_cluster_error(server_major_version(newest), needed)


def require_cluster_for_backup(cluster_major: int, backup_server_version_num: int | None) -> None:
    """Raise ConfigError when a running cluster of ``cluster_major`` is older than the backup."""
    if backup_server_version_num is None or cluster_major >= major_of(backup_server_version_num):
        return
    raise older_cluster_error(cluster_major, major_of(backup_server_version_num))


def older_cluster_error(cluster_major: int, backup_major: int) -> ConfigError:
    return ConfigError(
        f"the ephemeral drill cluster would be PostgreSQL {cluster_major}, older than the "
        f"backup's server (PostgreSQL {backup_major})",
        hint=f"install {server_package(backup_major)} (or newer; apt.postgresql.org has every "
        f"major), set {SERVER_BIN_ENV} to its bin directory, or drill on a server "
        "(scratch.server)",
    )


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
