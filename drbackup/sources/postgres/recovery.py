"""Point-in-time recovery on PostgreSQL's side: the recovery settings, a server on a restored
data directory, and what its log says about where recovery stopped.

Targets (PostgreSQL's ``recovery_target_*``, with ``recovery_target_inclusive``):

* time: a time given to the whole second covers that second: ``02:00:00`` becomes
  ``02:00:00.999999``, so every commit up to the end of that second is replayed and none
  after (recovery stops *before* the first commit later than the target);
* LSN: inclusive replays the first record starting at or after the LSN, then stops; a
  commit whose record ended at or before the LSN is always replayed;
* xid: inclusive replays the commit of that transaction;
* restore point name (``drbackup mark``): recovery stops at the named point;
* latest: no target, recovery replays every WAL file the archive has.

Recovery promotes the server at the end (``recovery_target_action = 'promote'``), which
starts a new timeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from drbackup.errors import SourceError
from drbackup.sources.postgres.cluster import EphemeralCluster
from drbackup.sources.postgres.run_as import find_unsearchable_parent
from drbackup.sources.postgres.wal import format_lsn, parse_lsn

AUTO_CONF = "postgresql.auto.conf"
BLOCK_START = "# --- written by drbackup restore: point-in-time recovery ---"
BLOCK_END = "# --- end of drbackup restore ---"
TIME, LSN, XID, NAME, LATEST = "time", "lsn", "xid", "name", "latest"


@dataclass(frozen=True)
class RecoveryTarget:
    """Where recovery should stop (see the module docstring)."""

    kind: str
    time: datetime | None = None  # already extended to the end of a whole second
    lsn: int | None = None
    xid: int | None = None
    name: str | None = None
    inclusive: bool = True
    timeline: str = "latest"

    @classmethod
    def at_time(cls, when: datetime, **kw) -> RecoveryTarget:
        """A time target; a time without fractional seconds covers its whole second."""
        if when.microsecond == 0:
            when = when + timedelta(microseconds=999_999)
        return cls(TIME, time=when, **kw)

    def settings(self) -> dict[str, str]:
        """The ``recovery_target_*`` settings (restore_command and the action aside)."""
        out = {"recovery_target_timeline": self.timeline}
        if self.kind == TIME:
            out["recovery_target_time"] = self.time.isoformat(sep=" ", timespec="microseconds")
        elif self.kind == LSN:
            out["recovery_target_lsn"] = format_lsn(self.lsn)
        elif self.kind == XID:
            out["recovery_target_xid"] = str(self.xid)
        elif self.kind == NAME:
            out["recovery_target_name"] = self.name
        if self.kind != LATEST:
            out["recovery_target_inclusive"] = "on" if self.inclusive else "off"
        return out

    def describe(self) -> str:
        if self.kind == TIME:
            return f"time {self.time.isoformat()}"
        if self.kind == LSN:
            return f"LSN {format_lsn(self.lsn)}"
        if self.kind == XID:
            return f"transaction {self.xid}"
        if self.kind == NAME:
            return f"restore point {self.name!r}"
        return "the end of the archived WAL"


def recovery_settings(target: RecoveryTarget, restore_command: str) -> dict[str, str]:
    return {
        "restore_command": restore_command,
        **target.settings(),
        "recovery_target_action": "promote",
    }


def write_recovery_config(data_dir: Path, settings: dict[str, str]) -> list[Path]:
    """Append ``settings`` to ``postgresql.auto.conf`` (replacing an earlier drbackup block)
    and create ``recovery.signal``.  Returns the files written (for their ownership)."""
    auto = data_dir / AUTO_CONF
    text = auto.read_text() if auto.exists() else ""
    if BLOCK_START in text:
        head, _, rest = text.partition(BLOCK_START)
        text = head + rest.partition(BLOCK_END)[2].lstrip("\n")
    lines = [BLOCK_START, *(f"{k} = '{_quote(v)}'" for k, v in settings.items()), BLOCK_END]
    auto.write_text(text.rstrip("\n") + ("\n" if text.strip() else "") + "\n".join(lines) + "\n")
    signal = data_dir / "recovery.signal"
    signal.write_text("")
    return [auto, signal]


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "''")


# --- what the server's log says -------------------------------------------------------------

_STOP_XACT = re.compile(
    r"recovery stopping (before|after) (commit|abort) of transaction (\d+), time (.+?)\s*$"
)
_STOP_POINT = re.compile(r'recovery stopping at restore point "(.*)", time (.+?)\s*$')
_STOP_LSN = re.compile(r'recovery stopping (before|after) WAL location \(LSN\) "([0-9A-F/]+)"')
_REDO_DONE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")
_LAST_XACT = re.compile(r"last completed transaction was at log time (.+?)\s*$")
_CONSISTENT = re.compile(r"consistent recovery state reached at ([0-9A-F]+/[0-9A-F]+)")
_NEW_TLI = re.compile(r"selected new timeline ID: (\d+)")
_FATAL = re.compile(r"\b(?:FATAL|PANIC):\s+(.*?)\s*$")


@dataclass
class RecoveryLog:
    """What the server's log says about one recovery."""

    stop: str | None = None  # the "recovery stopping ..." line, if recovery hit its target
    stop_time: datetime | None = None  # the time that line names
    stop_xid: int | None = None
    stop_lsn: int | None = None
    redo_done: int | None = None
    last_commit: datetime | None = None
    consistent_at: int | None = None
    new_timeline: int | None = None
    fatal: list[str] = field(default_factory=list)

    @property
    def reached_target(self) -> bool:
        return self.stop is not None


def parse_recovery_log(text: str) -> RecoveryLog:
    log = RecoveryLog()
    for line in text.splitlines():
        _parse_line(log, line)
    return log


def _parse_line(log: RecoveryLog, line: str) -> None:
    if m := _STOP_XACT.search(line):
        log.stop, log.stop_xid, log.stop_time = m.group(0), int(m.group(3)), _time(m.group(4))
    elif m := _STOP_POINT.search(line):
        log.stop, log.stop_time = m.group(0), _time(m.group(2))
    elif m := _STOP_LSN.search(line):
        log.stop, log.stop_lsn = m.group(0), parse_lsn(m.group(2))
    elif "recovery stopping after reaching consistency" in line:
        log.stop = "recovery stopping after reaching consistency"
    elif m := _REDO_DONE.search(line):
        log.redo_done = parse_lsn(m.group(1))
    elif m := _LAST_XACT.search(line):
        log.last_commit = _time(m.group(1))
    elif m := _CONSISTENT.search(line):
        log.consistent_at = parse_lsn(m.group(1))
    elif m := _NEW_TLI.search(line):
        log.new_timeline = int(m.group(1))
    elif m := _FATAL.search(line):
        log.fatal.append(m.group(1))


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        return None


# --- a server on a restored data directory -----------------------------------------------------

HBA = """# drbackup restore: the superuser through the private socket directory; passwords on TCP
local all all trust
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


class RecoveryServer(EphemeralCluster):
    """A PostgreSQL server on a restored data directory (no initdb).

    ``run_dir`` holds what is not data: the socket directory, the server log and the
    authentication files.  Settings go on the command line (they win over the restored
    ``postgresql.conf`` and ``postgresql.auto.conf``, which stay as restored): the port and
    addresses, logging to the log in ``run_dir`` in UTC, ``archive_mode = off`` (a restore
    never archives into the production archive), a private ``pg_hba.conf``.  This process
    connects through the socket as ``superuser``; others may connect over TCP with a
    password.  A data directory without ``postgresql.conf`` (Debian keeps it in /etc) gets
    an empty one from ``run_dir``.
    """

    def __init__(self, data_dir: Path, run_dir: Path, *, superuser: str, settings=None, **kw):
        super().__init__(run_dir, superuser=superuser, settings=settings, **kw)
        self.data_dir = Path(data_dir).absolute()

    def _prepare_base_dir(self) -> None:
        super()._prepare_base_dir()
        if self.run_as is not None:
            blocked = find_unsearchable_parent(self.data_dir, self.run_as)
            if blocked is not None:
                raise SourceError(
                    f"directory {blocked} is not searchable by user {self.run_as.user}, "
                    "who runs the restored server",
                    hint=f"restore into a directory under one it can reach, or 'chmod o+x {blocked}'",
                )

    def _postgres_argv(self, settings: dict[str, str]) -> list[str]:
        hba = self.base_dir / "pg_hba.conf"
        ident = self.base_dir / "pg_ident.conf"
        self._write_owned(hba, HBA)
        self._write_owned(ident, "")
        forced = {
            "hba_file": str(hba),
            "ident_file": str(ident),
            "archive_mode": "off",
            "logging_collector": "off",
            "log_destination": "stderr",
            "log_min_messages": "warning",
            "log_timezone": "UTC",
        }
        if not (self.data_dir / "postgresql.conf").exists():
            conf = self.base_dir / "postgresql.conf"
            self._write_owned(conf, "# drbackup restore: the backup had no postgresql.conf\n")
            forced["config_file"] = str(conf)
        merged = {**settings, **forced, **self.settings}
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)]
        for name, value in merged.items():
            argv += ["-c", f"{name}={value}"]
        return argv

    def _accepts_connections(self) -> bool:
        """True once recovery has ended and the server accepts connections as a primary.

        A connection attempt while the server recovers leaves a FATAL line in its log each
        time: postmaster.pid's status line says "ready" first (also when it accepts
        read-only connections during recovery, which is not the end of it)."""
        if postmaster_status(self.data_dir) != "ready" or not super()._accepts_connections():
            return False
        try:
            with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=5) as conn:
                return not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        except psycopg.OperationalError:
            return False

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        """A connection through the private socket directory (trust: this host's root and
        the server's user only)."""
        return make_conninfo(
            "",
            host=str(self.socket_dir),
            port=str(self.port),
            user=user or self.superuser,
            dbname=dbname,
        )


def postmaster_status(data_dir: Path) -> str | None:
    """The postmaster's status (``starting``, ``ready``, ``standby``, ``stopping``): the
    eighth line of ``postmaster.pid``; None without one."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return None
    return lines[7].strip() if len(lines) > 7 else None
