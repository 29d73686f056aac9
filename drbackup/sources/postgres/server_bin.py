"""Where PostgreSQL's server programs (initdb, postgres) are, and which major they are."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from drbackup.errors import SourceError
from drbackup.sources.postgres import processes
from drbackup.sources.postgres.environment import child_environ

INSTALL_HINT = (
    "install postgresql (apt-get install postgresql) "
    "or set DRBACKUP_PG_BIN to the directory holding initdb and postgres"
)


def parse_major_version(text: str) -> int:
    """Major version from ``postgres --version`` or ``pg_config --version`` output.

    ``"postgres (PostgreSQL) 15.18 (Debian ...)"`` -> 15.  Raises SourceError if none is found.
    """
    match = re.search(r"PostgreSQL\)?\s+(\d+)", text)
    if not match:
        raise SourceError(f"cannot read a postgresql version from {text.strip()!r}")
    return int(match.group(1))


def has_server_binaries(bin_dir: Path) -> bool:
    """True if ``bin_dir`` holds executable ``initdb`` and ``postgres``."""
    return all(os.access(bin_dir / name, os.X_OK) for name in ("initdb", "postgres"))


def server_major_version(bin_dir: Path) -> int:
    """Major version of ``bin_dir/postgres``; raises SourceError if it cannot be run."""
    out = processes.run([str(bin_dir / "postgres"), "--version"], env=child_environ())
    return parse_major_version(out.stdout)


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key for Debian's ``/usr/lib/postgresql/<version>/bin`` directories."""
    parts = path.parent.name.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else (-1,)


def _candidate_bin_dirs() -> list[Path]:
    """Where server binaries may be, best first: pg_config, Debian's dirs newest first, PATH."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = processes.run([pg_config, "--bindir"], env=child_environ())
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    candidates.extend(debian)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    return list(dict.fromkeys(candidates))


def find_pg_bin_dir(min_major: int | None = None) -> Path:
    """Directory holding ``initdb`` and ``postgres``, at least ``min_major`` if given.

    Order: env DRBACKUP_PG_BIN (used as is, or an error), ``pg_config --bindir``, the highest
    ``/usr/lib/postgresql/*/bin``, then ``initdb`` on PATH.  Raises SourceError with an
    install hint when nothing fits.
    """
    from_env = os.environ.get("DRBACKUP_PG_BIN")
    candidates = [Path(from_env)] if from_env else _candidate_bin_dirs()
    found: list[str] = []
    for bin_dir in candidates:
        if not has_server_binaries(bin_dir):
            continue
        if min_major is None:
            return bin_dir
        major = server_major_version(bin_dir)
        if major >= min_major:
            return bin_dir
        found.append(f"{major} in {bin_dir}")
    where = f"DRBACKUP_PG_BIN={from_env}" if from_env else "pg_config, /usr/lib/postgresql, PATH"
    if found:
        raise SourceError(
            f"postgresql server binaries >= {min_major} not found (found {', '.join(found)})",
            hint=INSTALL_HINT,
        )
    raise SourceError(f"postgresql server binaries not found in {where}", hint=INSTALL_HINT)
