"""Throwaway PostgreSQL clusters: initdb into a private directory, serve, remove.

Used by the test suite, by ``drbackup demo`` and by drills that need a scratch server.

Layout of a cluster directory (``base_dir``, a fresh ``/tmp/drbackup-pg-*`` by default)::

    base_dir/
      data/         PGDATA, made by initdb; settings in data/drbackup.conf (rewritten on start)
      socket/       unix_socket_directories
      server.log    the postmaster's stdout and stderr

Lifetime.  The postmaster is a direct child of this process.  With ``setpriv`` (util-linux)
it is started with ``--pdeathsig INT``, so the kernel asks it for a fast shutdown when the
thread that started it dies -- even on SIGKILL.  Start clusters from a long-lived thread.
``detach=True`` skips that tie, for a server meant to outlive this process.  A directory left
by a killed run may still hold a running server; ``EphemeralCluster(base_dir=that).destroy()``
or ``cleanup_stale(parent)`` stops it through its ``postmaster.pid``.

Root.  PostgreSQL refuses to run as root.  When this process is root, initdb and postgres run
as the ``postgres`` system user (else ``nobody``) via ``setpriv`` (else ``runuser``); the
cluster directory is chowned to that user, and each of its parents must be searchable by it.
Clients (psycopg here, psql and pg_dump elsewhere) connect from this process over TCP to
127.0.0.1 with trust authentication, so they work as root.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from drbackup.errors import SourceError
from drbackup.sources.postgres.environment import child_environ

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
# Durability off: for throwaway clusters only (fast=True).
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
SETTINGS_FILE = "drbackup.conf"
_SOCKET_PATH_MAX = 107  # sizeof(sun_path) - 1 on Linux
_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_.]*$")
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[\d+\] ")
_LOG_SEVERE = re.compile(r"^(?:ERROR|FATAL|PANIC):|could not|invalid|unrecognized|too long")
_INSTALL_HINT = (
    "install postgresql (apt-get install postgresql) "
    "or set DRBACKUP_PG_BIN to the directory holding initdb and postgres"
)


# --- finding the server binaries ----------------------------------------------------------


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
    try:
        out = subprocess.run(
            [str(bin_dir / "postgres"), "--version"],
            env=child_environ(),
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise SourceError(f"cannot run {bin_dir / 'postgres'}: {exc.strerror}") from exc
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
        out = subprocess.run(
            [pg_config, "--bindir"],
            env=child_environ(),
            capture_output=True,
            text=True,
            check=False,
        )
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
            hint=_INSTALL_HINT,
        )
    raise SourceError(f"postgresql server binaries not found in {where}", hint=_INSTALL_HINT)


# --- running as an unprivileged user --------------------------------------------------------


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


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """``chown -R uid:gid root``, touching only entries that differ."""
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        if (info.st_uid, info.st_gid) != (uid, gid):
            os.lchown(path, uid, gid)


# --- argv, settings and log builders (pure) -------------------------------------------------


def choose_locale(available: Iterable[str]) -> str:
    """``C.UTF-8`` if the C library has it (``locale -a`` says ``C.utf8``), else ``C``."""
    names = {name.lower().replace("-", "") for name in available}
    return "C.UTF-8" if "c.utf8" in names else "C"


def build_initdb_argv(
    bin_dir: Path, data_dir: Path, *, superuser: str, locale: str, no_sync: bool
) -> list[str]:
    """Argv for initdb: UTF8, the given locale, trust authentication for local connections."""
    argv = [str(bin_dir / "initdb"), "-D", str(data_dir), "-U", superuser, "--auth=trust"]
    argv += ["--encoding=UTF8", f"--locale={locale}"]
    return [*argv, "--no-sync"] if no_sync else argv


def build_postgres_argv(bin_dir: Path, data_dir: Path) -> list[str]:
    """Argv for the postmaster; its settings are in the data directory."""
    return [str(bin_dir / "postgres"), "-D", str(data_dir)]


def build_server_settings(
    port: int, socket_dir: Path, *, fast: bool, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Settings for data/drbackup.conf: loopback only, ``port``, the private socket directory,
    durability off when ``fast``, then ``extra`` (which wins)."""
    settings = {"listen_addresses": HOST, "port": str(port)}
    settings["unix_socket_directories"] = str(socket_dir)
    if fast:
        settings.update(FAST_SETTINGS)
    return settings | dict(extra or {})


def check_setting_names(settings: Mapping[str, str]) -> None:
    """Raise SourceError for a name that cannot be a postgresql setting."""
    for name in settings:
        if not _SETTING_NAME.match(name):
            raise SourceError(f"invalid postgresql setting name: {name!r}")


def render_settings(settings: Mapping[str, str]) -> str:
    """postgresql.conf text, every value quoted (backslash and quote escaped)."""
    check_setting_names(settings)
    lines = ["# written by drbackup on every start; edits here are lost"]
    for name, value in settings.items():
        quoted = str(value).replace("\\", "\\\\").replace("'", "''")
        lines.append(f"{name} = '{quoted}'")
    return "\n".join(lines) + "\n"


def summarize_log(text: str, max_lines: int = 3) -> str:
    """One line from initdb or server output: its last error-looking lines, else its last
    lines, without timestamps, joined by ``"; "``."""
    lines = [_LOG_PREFIX.sub("", line).strip() for line in text.splitlines()]
    lines = [re.sub(r"\s+", " ", line) for line in lines if line]
    severe = [line for line in lines if _LOG_SEVERE.search(line)]
    chosen = (severe or lines)[-max_lines:]
    return "; ".join(chosen) if chosen else "no output"


# --- processes ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def read_postmaster_pid(data_dir: Path) -> int | None:
    """The pid in ``data_dir/postmaster.pid``, or None if the file is missing or unreadable."""
    try:
        first = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
    except OSError:
        return None
    return int(first) if first.strip().isdigit() else None


def is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is a live process serving ``data_dir``.

    On Linux the postmaster's working directory is its data directory, which guards against
    a reused pid; zombies count as gone.  Elsewhere, any live pid counts.
    """
    if not Path("/proc/self").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except FileNotFoundError:
        return False
    except PermissionError:
        return True  # not ours to inspect; trust postmaster.pid
    return os.path.realpath(cwd) == os.path.realpath(data_dir)


def stop_postmaster(data_dir: Path, timeout: float = STOP_TIMEOUT) -> bool:
    """Fast shutdown (SIGINT, as ``pg_ctl stop -m fast``) of the server in ``data_dir``,
    whoever started it; waits until it is gone.

    Returns True if a server was running, False if none was.  Raises SourceError if it
    cannot be signalled or is still running after ``timeout`` seconds.
    """
    pid = read_postmaster_pid(data_dir)
    if pid is None or not is_postmaster_of(pid, data_dir):
        return False
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    except PermissionError as exc:
        raise SourceError(
            f"cannot stop the postgresql server (pid {pid}) in {data_dir}: permission denied",
            hint="run as root or as the user that owns it",
        ) from exc
    deadline = time.monotonic() + timeout
    delay = 0.01
    while is_postmaster_of(pid, data_dir):
        if time.monotonic() > deadline:
            raise SourceError(f"postgresql server (pid {pid}) in {data_dir} did not stop in time")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    return True


def cleanup_stale(base_dir: Path) -> list[Path]:
    """Stop every server whose data directory (one holding postmaster.pid) is under ``base_dir``.

    For leftovers of killed runs.  Deletes nothing.  Returns the data directories whose
    server was stopped.  Raises SourceError as :func:`stop_postmaster`.
    """
    stopped = []
    for pid_file in sorted(Path(base_dir).glob("**/postmaster.pid")):
        if stop_postmaster(pid_file.parent):
            stopped.append(pid_file.parent)
    return stopped


def _server_env() -> dict[str, str]:
    """Environment for initdb and postgres: a child's (no secrets of ours), minus PG*
    variables, English messages."""
    env = {key: value for key, value in child_environ().items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _available_locales() -> list[str]:
    try:
        out = subprocess.run(
            ["locale", "-a"], env=child_environ(), capture_output=True, text=True, check=False
        )
    except OSError:
        return []
    return out.stdout.split()


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            return log.read().decode("utf-8", "replace")
    except OSError:
        return ""


# --- the cluster ---------------------------------------------------------------------------


class EphemeralCluster:
    """A private PostgreSQL server in ``base_dir`` on 127.0.0.1; see the module docstring.

    ``port`` None picks a free one (and another if it is taken at start).  ``settings`` are
    extra postgresql.conf settings, applied last.  ``fast`` turns durability off (fsync,
    synchronous_commit, full_page_writes; initdb --no-sync): for throwaway data only.
    ``detach`` lets the server outlive this process.  Raises SourceError if the binaries
    cannot be found or a setting name is invalid.
    """

    host = HOST

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        port: int | None = None,
        bin_dir: Path | None = None,
        superuser: str = "postgres",
        settings: dict[str, str] | None = None,
        fast: bool = False,
        detach: bool = False,
        start_timeout: float = START_TIMEOUT,
    ):
        self.bin_dir = Path(bin_dir) if bin_dir else find_pg_bin_dir()
        self.settings = dict(settings or {})
        check_setting_names(self.settings)
        if base_dir is None:
            base_dir = Path(tempfile.mkdtemp(prefix="drbackup-pg-"))
        self.base_dir = Path(base_dir).absolute()
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "socket"
        self.log_path = self.base_dir / "server.log"
        self._auto_port = port is None
        self.port = free_port() if port is None else port
        self.superuser = superuser
        self.fast = fast
        self.detach = detach
        self.start_timeout = start_timeout
        self.run_as = resolve_run_as()
        self._proc: subprocess.Popen[bytes] | None = None
        if len(str(self.socket_dir)) + len("/.s.PGSQL.65535") > _SOCKET_PATH_MAX:
            raise SourceError(
                f"cluster directory path is too long for a unix socket: {self.base_dir}",
                hint="use a shorter base_dir",
            )

    def __repr__(self) -> str:
        return f"EphemeralCluster({str(self.base_dir)!r}, port={self.port})"

    def __enter__(self) -> EphemeralCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.destroy()

    # lifecycle

    def start(self) -> EphemeralCluster:
        """Create the cluster if ``data_dir`` is empty, start the server, and wait until it
        accepts connections (polling, up to ``start_timeout``).  Returns self.

        Raises SourceError, with the server's last log lines, if initdb or the start fails.
        """
        if self._proc is not None and self._proc.poll() is None:
            return self
        self._prepare_base_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        for attempt in range(3):
            try:
                self._launch()
                return self
            except SourceError as exc:
                retry = self._auto_port and attempt < 2 and "already in use" in str(exc)
                if not retry:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Fast shutdown of the server in ``data_dir``, whoever started it.  Idempotent.

        Raises SourceError if it does not stop within STOP_TIMEOUT.
        """
        stop_postmaster(self.data_dir)
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # a postmaster that had not written its pid file yet
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def destroy(self) -> None:
        """Stop the server and remove ``base_dir``.  Idempotent.  Raises SourceError."""
        if not self.base_dir.exists():
            return
        self.stop()
        try:
            shutil.rmtree(self.base_dir)
        except OSError as exc:
            raise SourceError(f"cannot remove cluster directory {self.base_dir}: {exc}") from exc

    @property
    def is_running(self) -> bool:
        """True if a server is serving ``data_dir`` now."""
        pid = read_postmaster_pid(self.data_dir)
        return pid is not None and is_postmaster_of(pid, self.data_dir)

    def _prefix(self, *, pdeathsig: bool) -> list[str]:
        return build_run_prefix(
            self.run_as,
            setpriv=shutil.which("setpriv"),
            runuser=shutil.which("runuser"),
            pdeathsig=pdeathsig,
        )

    def _prepare_base_dir(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self.run_as is None:
            return
        blocked = find_unsearchable_parent(self.base_dir, self.run_as)
        if blocked is not None:
            raise SourceError(
                f"directory {blocked} is not searchable by user {self.run_as.user}, "
                "who runs the postgresql server",
                hint=f"put the cluster under {tempfile.gettempdir()} or run 'chmod o+x {blocked}'",
            )
        _chown_tree(self.base_dir, self.run_as.uid, self.run_as.gid)

    def _initdb(self) -> None:
        argv = self._prefix(pdeathsig=False) + build_initdb_argv(
            self.bin_dir,
            self.data_dir,
            superuser=self.superuser,
            locale=choose_locale(_available_locales()),
            no_sync=self.fast,
        )
        try:
            result = subprocess.run(
                argv, cwd=self.base_dir, env=_server_env(), capture_output=True, text=True
            )
        except OSError as exc:
            raise SourceError(f"cannot run initdb ({argv[0]}): {exc.strerror}") from exc
        if result.returncode != 0:  # initdb removes what it created
            summary = summarize_log(result.stdout + "\n" + result.stderr)
            raise SourceError(
                f"initdb failed for {self.data_dir} (exit {result.returncode}): {summary}",
                hint=_INSTALL_HINT if result.returncode == 127 else None,
            )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(f"\ninclude = '{SETTINGS_FILE}'\n")

    def _launch(self) -> None:
        """Write the settings, start the postmaster, wait until it is ready."""
        settings = build_server_settings(
            self.port, self.socket_dir, fast=self.fast, extra=self.settings
        )
        self._write_owned(self.log_path, "", append=True)
        offset = self.log_path.stat().st_size
        argv = self._prefix(pdeathsig=not self.detach) + self._postgres_argv(settings)
        with self.log_path.open("ab") as log:
            try:
                self._proc = subprocess.Popen(
                    argv,
                    cwd=self.base_dir,
                    env=_server_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a terminal's Ctrl-C goes to us, not the server
                )
            except OSError as exc:
                raise SourceError(f"cannot run postgres ({argv[0]}): {exc.strerror}") from exc
        self._wait_until_ready(offset)

    def _postgres_argv(self, settings: dict[str, str]) -> list[str]:
        """The postmaster's argv, its settings written to data/drbackup.conf (a subclass
        serving a data directory it did not create passes them otherwise)."""
        self._write_owned(self.data_dir / SETTINGS_FILE, render_settings(settings))
        return build_postgres_argv(self.bin_dir, self.data_dir)

    def _write_owned(self, path: Path, text: str, *, append: bool = False) -> None:
        with path.open("a" if append else "w") as out:
            out.write(text)
        if self.run_as is not None:
            os.chown(path, self.run_as.uid, self.run_as.gid)

    def _wait_until_ready(self, log_offset: int) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        delay = 0.02
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise self._start_error(log_offset, f"exit {code}")
            if self._accepts_connections():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise self._start_error(log_offset, f"not ready after {self.start_timeout:g}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _accepts_connections(self) -> bool:
        """True once our server answers; raises SourceError if another server has the port."""
        try:
            with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=5) as conn:
                row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        except psycopg.OperationalError:
            return False
        served = row[0] if row else ""
        if os.path.realpath(served) != os.path.realpath(self.data_dir):
            self.stop()
            raise SourceError(
                f"port {self.port} is already in use by another postgresql server ({served})",
                hint="choose another port, or leave port unset to pick a free one",
            )
        return True

    def _start_error(self, log_offset: int, reason: str) -> SourceError:
        summary = summarize_log(_read_from(self.log_path, log_offset))
        return SourceError(
            f"postgresql server in {self.data_dir} failed to start on {HOST}:{self.port} "
            f"({reason}): {summary}",
            hint=f"see the server log {self.log_path}",
        )

    # clients

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        """``postgresql://USER@127.0.0.1:PORT/DBNAME`` (trust authentication, no password)."""
        user_part = quote(user or self.superuser, safe="")
        return f"postgresql://{user_part}@{HOST}:{self.port}/{quote(dbname, safe='')}"

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> psycopg.Connection:
        """A new connection as the superuser; the caller closes it.  Raises psycopg errors."""
        return psycopg.connect(self.dsn(dbname), autocommit=autocommit)

    def execute(self, sql: str, dbname: str = "postgres", params: Any = None) -> list[tuple]:
        """Run ``sql`` (several statements allowed without ``params``) in autocommit mode.

        Returns the rows of the last statement, or [] if it returns none.  Raises psycopg
        errors as they come.
        """
        with self.connect(dbname) as conn:
            cursor = conn.execute(sql, params)  # type: ignore[arg-type]
            while cursor.nextset():  # on to the last statement's result
                pass
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str) -> None:
        """CREATE DATABASE ``name`` (quoted as an identifier).  Raises psycopg errors."""
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS ``name`` WITH (FORCE), ending its sessions."""
        with self.connect() as conn:
            query = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(query.format(sql.Identifier(name)))

    @property
    def server_version_num(self) -> int:
        """``server_version_num`` of the running server, e.g. 150018."""
        return int(self.execute("SHOW server_version_num")[0][0])
