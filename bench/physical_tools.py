"""The two tools of bench/physical.py set up side by side on one server: pgBackRest (a stanza,
archive_command with archive-async, a local encrypted repository) and drbackup (a local
repository, ``drbackup wal stream`` running beside), plus the WAL lag sampler.

Everything lives under one run directory, removed at the end; the bench server's slot and
the pgbench database made here are dropped again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from drbackup.repository.wal import parse_wal_key
from drbackup.sources.postgres.cluster import (
    build_run_prefix,
    find_pg_bin_dir,
    free_port,
    resolve_run_as,
    stop_postmaster,
)
from drbackup.sources.postgres.wal import parse_lsn, parse_wal_file_name

PASSPHRASE = "bench passphrase, not a secret"
SEGMENT = 16 << 20
SLOT = "drbackup_bench"
DRBACKUP = str(Path(sys.executable).parent / "drbackup")


def as_server_user(argv: list[str]) -> list[str]:
    prefix = build_run_prefix(
        resolve_run_as(), setpriv=shutil.which("setpriv"), runuser=shutil.which("runuser"),
        pdeathsig=False,
    )  # fmt: skip
    return [*prefix, *argv]


def own(path: Path) -> Path:
    """``path`` (a directory, made if missing) owned by the server's user."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    run_as = resolve_run_as()
    if run_as is not None:
        os.chown(path, run_as.uid, run_as.gid)
    return path


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def stop_server(data_dir: Path) -> None:
    with contextlib.suppress(Exception):
        stop_postmaster(data_dir, timeout=60)


class Tools:
    """pgBackRest and drbackup configured for the bench server."""

    def __init__(self, run_dir: Path, cluster, zstd_level: int, processes: int):
        self.run_dir, self.cluster = run_dir, cluster
        self.level, self.processes = zstd_level, processes
        self.pgbr_conf = run_dir / "pgbackrest.conf"
        self.drb_conf = run_dir / "drbackup.yaml"
        self.drb_repo = run_dir / "drbackup-repo"
        self.streamer: subprocess.Popen | None = None

    def server_settings(self) -> dict[str, str]:
        command = f"pgbackrest --config={self.pgbr_conf} --stanza=bench archive-push %p"
        return {
            "wal_level": "replica",
            "max_wal_senders": "8",
            "max_replication_slots": "4",
            "archive_mode": "on",
            "archive_command": command,
        }

    # --- setup and teardown ---------------------------------------------------------------

    def setup(self) -> None:
        own(self.run_dir)
        os.chmod(self.run_dir, 0o755)
        self._setup_pgbackrest()
        self._setup_drbackup()

    def _setup_pgbackrest(self) -> None:
        dirs = {n: own(self.run_dir / f"pgbackrest-{n}") for n in ("repo", "spool", "lock", "log")}
        c = self.cluster
        self.pgbr_conf.write_text(
            "[global]\n"
            f"repo1-path={dirs['repo']}\nrepo1-retention-full=99\n"
            f"repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={PASSPHRASE}\n"
            f"compress-type=zst\ncompress-level={self.level}\nprocess-max={self.processes}\n"
            "start-fast=y\narchive-async=y\n"
            f"spool-path={dirs['spool']}\nlock-path={dirs['lock']}\nlog-path={dirs['log']}\n"
            "log-level-console=warn\nlog-level-file=off\n\n"
            f"[bench]\npg1-path={c.data_dir}\npg1-port={c.port}\n"
            f"pg1-socket-path={c.socket_dir}\npg1-user=postgres\n"
        )
        os.chmod(self.pgbr_conf, 0o644)
        self.run_as_server(self.pgbackrest("stanza-create"))

    def _setup_drbackup(self) -> None:
        self.drb_conf.write_text(
            f"repository:\n  url: {self.drb_repo}\n"
            f"  compression: {{level: {self.level}, threads: 0}}\n"
            f"catalog: sqlite:///{self.run_dir / 'catalog.db'}\n"
            f"postgres:\n  bench:\n    dsn: {self.cluster.dsn('postgres')}\n"
            "    databases: all\n    backup_kinds: [physical]\n"
            f"    wal: {{capture: stream, slot: {SLOT}, spool_dir: {self.run_dir / 'spool'}}}\n"
        )
        env = self.drbackup_env()
        subprocess.run(self.drbackup("init"), env=env, check=True, capture_output=True)
        log = (self.run_dir / "stream.log").open("ab")
        self.streamer = subprocess.Popen(
            self.drbackup("wal", "stream", "bench"), env=env, stdin=subprocess.DEVNULL,
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        self._wait(lambda: self.cluster.execute(
            f"SELECT 1 FROM pg_replication_slots WHERE slot_name = '{SLOT}' AND active"
        ), "drbackup wal stream to stream")  # fmt: skip

    def teardown(self) -> None:
        if self.streamer is not None and self.streamer.poll() is None:
            self.streamer.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.streamer.wait(60)
        with contextlib.suppress(Exception):
            self._wait(lambda: not self.cluster.execute(
                f"SELECT 1 FROM pg_replication_slots WHERE slot_name = '{SLOT}' AND active"
            ), "the slot to be free", 30)  # fmt: skip
            self.cluster.execute("SELECT pg_drop_replication_slot(%s)", params=(SLOT,))
        with contextlib.suppress(Exception):
            self.cluster.drop_database("pgbench")
        shutil.rmtree(self.run_dir, ignore_errors=True)

    # --- commands ---------------------------------------------------------------------------

    def pgbackrest(self, *args: str) -> list[str]:
        return as_server_user(["pgbackrest", f"--config={self.pgbr_conf}", "--stanza=bench", *args])

    def pg_basebackup(self, into: Path) -> list[str]:
        """A tar base backup into ``into``: zstd on the client at our level and threads."""
        compress = f"client-zstd:level={self.level},workers={self.processes}"
        return [str(self.cluster.bin_dir / "pg_basebackup"), "-d", self.cluster.dsn("postgres"),
                "-D", str(into), "-Ft", "-X", "none", "-c", "fast", f"--compress={compress}"]  # fmt: skip

    def drbackup(self, *args: str) -> list[str]:
        return [DRBACKUP, *args]

    def drbackup_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DRBACKUP_"))}
        return env | {"DRBACKUP_CONFIG": str(self.drb_conf), "DRBACKUP_PASSPHRASE": PASSPHRASE}

    @staticmethod
    def run_as_server(argv: list[str]) -> None:
        if argv[0] == "pgbackrest":
            argv = as_server_user(argv)
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {result.stdout[-500:]} {result.stderr[-500:]}")

    def restore_dir(self, kind: str) -> tuple[Path, int, Path]:
        """(data directory, port, socket directory) for a restore; the directory is made
        empty and owned by the server's user for pgBackRest, absent for drbackup."""
        base = own(self.run_dir / f"restore-{kind}")
        socket = own(base / "socket")
        into = base / "data"
        if kind == "pgbr":
            own(into)
        return into, free_port(), socket

    @staticmethod
    def start_recovering_server(into: Path, port: int, socket: Path, conf: str) -> None:
        """Start a server on ``into`` (archive_mode off: a restore adds nothing to the
        archive) and wait until recovery has ended and it promoted."""
        argv = as_server_user([
            str(find_pg_bin_dir() / "postgres"), "-D", str(into), "-c", f"port={port}",
            "-c", f"unix_socket_directories={socket}", "-c", "listen_addresses=",
            "-c", "archive_mode=off",
        ])  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        log = (into.parent / "server.log").open("ab")
        proc = subprocess.Popen(argv, env=env | {"PGBACKREST_CONFIG": conf}, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True)  # fmt: skip
        dsn = f"host={socket} port={port} user=postgres dbname=postgres"
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the restored server exited: see {into.parent / 'server.log'}")
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(dsn, connect_timeout=2) as conn,
            ):
                if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    return
            time.sleep(0.05)
        raise RuntimeError("recovery did not end in 900 s")

    # --- the archives -------------------------------------------------------------------------

    def pgbackrest_archived(self) -> int | None:
        """The newest segment number pgBackRest's archive_command stored."""
        row = self.cluster.execute("SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
        if row is None or not row[:24].isalnum() or len(row) < 24:
            return None
        return parse_wal_file_name(row[:24]).segno(SEGMENT)

    def drbackup_archived(self, after: int = 0) -> int | None:
        """The newest complete segment number in drbackup's archive (from the listing)."""
        newest = None
        for path in (self.drb_repo / "wal" / "bench").glob("pg*/*/*"):
            stored = parse_wal_key(path.name)
            if stored is not None and stored.is_segment:
                segno = parse_wal_file_name(stored.name).segno(SEGMENT)
                newest = segno if newest is None else max(newest, segno)
        return newest

    def current_segment(self) -> tuple[int, int]:
        lsn = parse_lsn(str(self.cluster.execute("SELECT pg_current_wal_lsn()")[0][0]))
        return lsn, lsn // SEGMENT

    def wait_archived(self, cluster) -> None:
        """Complete the current segment and wait until both archives hold it."""
        name = cluster.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
        segno = parse_wal_file_name(name).segno(SEGMENT)
        self._wait(lambda: (self.pgbackrest_archived() or -1) >= segno
                   and (self.drbackup_archived() or -1) >= segno, f"{name} in both archives")  # fmt: skip

    def repository_sizes(self) -> dict[str, int]:
        pgbr = self.run_dir / "pgbackrest-repo"
        return {
            "drbackup base backups": dir_size(self.drb_repo / "data")
            + dir_size(self.drb_repo / "manifests"),
            "pgBackRest base backups": dir_size(pgbr / "backup"),
            "drbackup WAL": dir_size(self.drb_repo / "wal"),
            "pgBackRest WAL": dir_size(pgbr / "archive"),
        }

    @staticmethod
    def _wait(condition, what: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.1)


class WalSampler:
    """Every 0.25 s: the server's current segment against the newest complete segment in
    each archive; the largest difference of each, and the WAL rate."""

    def __init__(self, cluster, tools: Tools):
        self.cluster, self.tools = cluster, tools
        self.lag = {"drbackup": 0, "pgbackrest": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WalSampler:
        self.start_lsn, _ = self.tools.current_segment()
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.end_lsn, _ = self.tools.current_segment()
        self.seconds = time.monotonic() - self.started

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            with contextlib.suppress(Exception):
                _, current = self.tools.current_segment()
                for tool, newest in (
                    ("drbackup", self.tools.drbackup_archived()),
                    ("pgbackrest", self.tools.pgbackrest_archived()),
                ):
                    behind = current - ((newest if newest is not None else current - 1) + 1)
                    self.lag[tool] = max(self.lag[tool], behind)

    def summary(self) -> dict:
        mb = (self.end_lsn - self.start_lsn) / 1e6
        return {
            "seconds": round(self.seconds, 1),
            "wal_mb": round(mb, 1),
            "wal_mb_s": round(mb / self.seconds, 2),
            "drbackup_max_lag_segments": self.lag["drbackup"],
            "pgbackrest_max_lag_segments": self.lag["pgbackrest"],
        }
