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
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from drbackup.errors import SourceError
from drbackup.sources.postgres import databases, processes
from drbackup.sources.postgres.environment import child_environ, server_env
from drbackup.sources.postgres.postmaster import (
    HOST,
    STOP_TIMEOUT,
    cleanup_stale,
    free_port,
    is_postmaster_of,
    read_postmaster_pid,
    stop_postmaster,
)
from drbackup.sources.postgres.run_as import (
    RunAs,
    build_run_prefix,
    chown_tree,
    find_unsearchable_parent,
    is_searchable,
    resolve_run_as,
)
from drbackup.sources.postgres.server_bin import (
    INSTALL_HINT,
    find_pg_bin_dir,
    has_server_binaries,
    parse_major_version,
    server_major_version,
)

__all__ = [  # the helpers of a cluster's life live in their own modules; found here too
    "RunAs",
    "build_run_prefix",
    "cleanup_stale",
    "find_pg_bin_dir",
    "find_unsearchable_parent",
    "free_port",
    "has_server_binaries",
    "is_postmaster_of",
    "is_searchable",
    "parse_major_version",
    "read_postmaster_pid",
    "resolve_run_as",
    "server_major_version",
    "stop_postmaster",
]

START_TIMEOUT = 60.0
# Durability off: for throwaway clusters only (fast=True).
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
SETTINGS_FILE = "drbackup.conf"
_SOCKET_PATH_MAX = 107  # sizeof(sun_path) - 1 on Linux
_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_.]*$")
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[\d+\] ")
_LOG_SEVERE = re.compile(r"^(?:ERROR|FATAL|PANIC):|could not|invalid|unrecognized|too long")


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


def _available_locales() -> list[str]:
    try:
        out = processes.run(["locale", "-a"], env=child_environ())
    except SourceError:
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
        self._proc: processes.Popen[bytes] | None = None
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
        except processes.TimeoutExpired:
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
        chown_tree(self.base_dir, self.run_as.uid, self.run_as.gid)

    def _initdb(self) -> None:
        argv = self._prefix(pdeathsig=False) + build_initdb_argv(
            self.bin_dir,
            self.data_dir,
            superuser=self.superuser,
            locale=choose_locale(_available_locales()),
            no_sync=self.fast,
        )
        result = processes.run(
            argv, cwd=self.base_dir, env=server_env(), name=f"initdb ({argv[0]})"
        )
        if result.returncode != 0:  # initdb removes what it created
            summary = summarize_log(result.stdout + "\n" + result.stderr)
            raise SourceError(
                f"initdb failed for {self.data_dir} (exit {result.returncode}): {summary}",
                hint=INSTALL_HINT if result.returncode == 127 else None,
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
            self._proc = processes.start(
                argv,
                cwd=self.base_dir,
                env=server_env(),
                stdout=log,
                stderr=processes.STDOUT,
                new_session=True,  # a terminal's Ctrl-C goes to us, not the server
                name=f"postgres ({argv[0]})",
            )
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
        """Create database ``name`` (from template1, no comment).  Raises SourceError."""
        with self.connect() as conn:
            databases.create_database(conn, name, template=None)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` if it exists, ending its sessions.  Raises SourceError."""
        with self.connect() as conn:
            databases.drop_database(conn, name)

    @property
    def server_version_num(self) -> int:
        """``server_version_num`` of the running server, e.g. 150018."""
        return int(self.execute("SHOW server_version_num")[0][0])
