"""Pure builders for the PostgreSQL client commands drbackup runs (version rules: versions.py).

Nothing here runs a process: argv lists are built from settings so they can be tested
without a server.  Passwords never go into argv: every builder strips a password from the
connection string it is given; it travels in ``PGPASSWORD`` (``environment.client_env``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from drbackup.errors import ConfigError, SourceError
from drbackup.sources.postgres.dump_options import find_problem
from drbackup.sources.postgres.environment import dsn_without_password, mask_dsn

__all__ = ["mask_dsn"]  # where callers have always found it; it lives with the secrets

_VERSION_RE = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
CLIENT_BIN_ENV = "DRBACKUP_PG_CLIENT_BIN"  # directory of pg_dump/pg_restore to use


def parse_tool_version(text: str) -> tuple[int, int]:
    """``pg_dump (PostgreSQL) 15.18 (Debian ...)`` → ``(15, 18)``."""
    m = _VERSION_RE.search(text)
    if not m:
        raise SourceError(f"cannot parse a PostgreSQL version from {text.strip()!r}")
    return int(m.group(1)), int(m.group(2) or 0)


PG_LIB = Path("/usr/lib/postgresql")  # Debian and Ubuntu: <major>/bin per installed major


def major_of_bin_dir(bin_dir: Path) -> int | None:
    """The major of a Debian ``/usr/lib/postgresql/<major>/bin`` directory (its name says
    it: nothing is run), None for any other directory."""
    name = Path(bin_dir).parent.name
    return int(name) if Path(bin_dir).name == "bin" and name.isdigit() else None


def installed_bin_dirs(tool: str, root: Path = PG_LIB) -> dict[int, Path]:
    """Debian's ``<root>/<major>/bin`` directories holding ``tool``, by major, oldest first."""
    found = {}
    for bin_dir in root.glob("*/bin"):
        major = major_of_bin_dir(bin_dir)
        if major is not None and os.access(bin_dir / tool, os.X_OK):
            found[major] = bin_dir
    return dict(sorted(found.items()))


def find_client_bin_dir(
    server_version_num: int | None, configured: str | Path | None = None, root: Path = PG_LIB
) -> Path:
    """The directory of pg_dump/pg_restore to use: configured (a target's ``pg_bin_dir``),
    else ``$DRBACKUP_PG_CLIENT_BIN``, else the newest installed, else the one on PATH.

    Debian installs each major under /usr/lib/postgresql/N/bin; the newest dumps and
    restores every older server, so it is preferred over the one on PATH whatever the
    server's major (``versions.require_client_for_server`` then checks it is new enough).
    """
    if configured:
        return Path(configured)
    if os.environ.get(CLIENT_BIN_ENV):
        return Path(os.environ[CLIENT_BIN_ENV])
    installed = installed_bin_dirs("pg_dump", root)
    if installed:
        return installed[max(installed)]
    found = shutil.which("pg_dump")
    if not found:
        raise SourceError(
            "pg_dump not found", hint="install the PostgreSQL client (postgresql-client)"
        )
    return Path(found).parent


def pg_dump_argv(
    bin_dir: Path,
    dsn: str,
    *,
    snapshot: str | None,
    include_schemas=(),
    exclude_schemas=(),
    include_tables=(),
    exclude_tables=(),
    extra=(),
) -> list[str]:
    """Custom-format dump to stdout, pg_dump's own compression off (zstd is ours).

    ``extra`` (a target's ``pg_dump_options``) is checked again here, as config loading
    does: raises ConfigError for an option that could change where the dump goes.
    """
    problem = find_problem(list(extra))
    if problem is not None:
        raise ConfigError(problem[1], hint="see pg_dump_options in docs/configuration.md")
    argv = [str(bin_dir / "pg_dump"), "--format=custom", "--compress=0", "--no-password"]
    if snapshot:
        argv.append(f"--snapshot={snapshot}")
    argv += [f"--schema={s}" for s in include_schemas]
    argv += [f"--exclude-schema={s}" for s in exclude_schemas]
    argv += [f"--table={t}" for t in include_tables]
    argv += [f"--exclude-table={t}" for t in exclude_tables]
    argv += list(extra)
    argv += [f"--dbname={dsn_without_password(dsn)}"]
    return argv


def pg_dumpall_globals_argv(
    bin_dir: Path, dsn: str, *, no_role_passwords: bool = False
) -> list[str]:
    argv = [
        str(bin_dir / "pg_dumpall"),
        "--globals-only",
        "--no-password",
        f"--dbname={dsn_without_password(dsn)}",
    ]
    if no_role_passwords:
        argv.insert(2, "--no-role-passwords")
    return argv


def pg_restore_argv(
    bin_dir: Path,
    dsn: str,
    *,
    jobs: int = 1,
    archive: str | None = None,
    clean: bool = False,
    no_owner: bool = False,
    extra=(),
) -> list[str]:
    """Restore into ``dsn``; from stdin unless ``archive`` (a file, needed for ``jobs > 1``)."""
    argv = [
        str(bin_dir / "pg_restore"),
        "--verbose",
        "--no-password",
        f"--dbname={dsn_without_password(dsn)}",
    ]
    if jobs > 1:
        if not archive:
            raise ValueError("parallel pg_restore needs an archive file")
        argv.append(f"--jobs={jobs}")
    if clean:
        argv += ["--clean", "--if-exists"]
    if no_owner:
        argv.append("--no-owner")
    argv += list(extra)
    if archive:
        argv.append(archive)
    return argv
