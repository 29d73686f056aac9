"""``restore postgres TARGET --into-dir DIR``: a base backup and its WAL, to a point.

Works from the repository and the key alone.  In order:

1. choose the newest base backup that ends before the point, on its timeline (actions/pitr);
2. check that the WAL from its start to its end is archived (else nothing is written);
3. stream every archive of it from the repository into DIR, each tablespace into
   ``DIR.tablespaces/<oid>`` linked from ``DIR/pg_tblspc/<oid>`` (never its original
   location, which may be in use), as the server's user when run as root;
4. write the recovery settings (``restore_command`` with wal-fetch, ``recovery_target_*``,
   promote at the end) into ``postgresql.auto.conf`` and create ``recovery.signal``;
5. with ``start``: run the server on a free port (:class:`RecoveryServer`), feed it WAL from
   a read-ahead fetcher in this process, wait until recovery has ended and the server has
   promoted, and read where it stopped: the last replayed commit, LSN and timeline, and
   whether the target was reached.  Recovery that ended before the target (a missing or
   damaged segment) is a failed restore naming the segment; what was written is removed.

:func:`restore_physical` returns a :class:`PhysicalRestore`; as a context manager it stops
the server and removes what it made when the block ends (what a drill wants).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from drbackup.actions import wal_take
from drbackup.actions.backup_physical import TAR_TYPE
from drbackup.actions.pitr import BaseBackupChoice, choose_base_backup
from drbackup.actions.progress import SILENT, CountingReader, Progress
from drbackup.actions.verify_physical import missing_wal
from drbackup.actions.wal_fetch import Fetcher, FetchLog
from drbackup.actions.wal_push import read_settings
from drbackup.actions.wal_spool import Spool
from drbackup.errors import RestoreError, SourceError
from drbackup.repository.wal import WalArchive, parse_cluster_name
from drbackup.sources.postgres import versions
from drbackup.sources.postgres.basebackup_files import extract_archive, is_empty_dir
from drbackup.sources.postgres.connection import connect
from drbackup.sources.postgres.physical import replay_state
from drbackup.sources.postgres.recovery import (
    LATEST,
    RecoveryServer,
    RecoveryTarget,
    parse_recovery_log,
    recovery_settings,
    write_recovery_config,
)
from drbackup.sources.postgres.run_as import resolve_run_as
from drbackup.sources.postgres.wal import format_lsn, parse_history

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext

DEFAULT_RECOVERY_TIMEOUT = 24 * 3600.0


@dataclass
class RecoveryOutcome:
    """Where recovery stopped, in PostgreSQL's words and in facts read from the server."""

    target: str  # what was asked, described
    reached: bool
    stop: str | None  # the server's "recovery stopping ..." line
    last_commit: object | None  # datetime of the last transaction replayed
    last_lsn: int | None  # where replay ended
    timeline: int | None  # the timeline recovery ended on
    new_timeline: int | None  # the timeline the promoted server writes
    missing: str | None = None  # the WAL file recovery asked for and the archive lacked
    damaged: dict[str, str] = field(default_factory=dict)  # requested files that failed

    def describe(self) -> str:
        where = (
            f"last replayed commit {self.last_commit.isoformat() if self.last_commit else 'none'}, "
            f"LSN {format_lsn(self.last_lsn) if self.last_lsn is not None else '-'}, "
            f"timeline {self.timeline if self.timeline is not None else '-'}"
        )
        return where + (f"; promoted to timeline {self.new_timeline}" if self.new_timeline else "")

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "reached": self.reached,
            "stop": self.stop,
            "last_commit": self.last_commit.isoformat() if self.last_commit else None,
            "last_lsn": format_lsn(self.last_lsn) if self.last_lsn is not None else None,
            "timeline": self.timeline,
            "new_timeline": self.new_timeline,
            "missing": self.missing,
            "damaged": self.damaged,
        }


@dataclass
class PhysicalRestore:
    """A restored data directory, and the server on it when started."""

    target: str
    data_dir: Path
    choice: BaseBackupChoice
    point: RecoveryTarget
    restore_command: str  # what postgresql.auto.conf says (for a later start by hand)
    created: bool  # this restore created data_dir (so remove() deletes it)
    tablespaces: Path | None = None  # DIR.tablespaces, when the backup has tablespaces
    tablespaces_created: bool = False
    run_dir: Path | None = None
    server: RecoveryServer | None = None
    outcome: RecoveryOutcome | None = None
    phases: dict[str, float] = field(default_factory=dict)
    bytes: int = 0
    files: int = 0

    def stop(self) -> None:
        """Stop the server (fast shutdown) if one runs."""
        if self.server is not None:
            self.server.stop()

    def remove(self) -> None:
        """Stop the server; remove the run directory and what this restore wrote in data_dir."""
        self.stop()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        _clear(self.data_dir, self.created)
        if self.tablespaces is not None:
            _clear(self.tablespaces, self.tablespaces_created)

    def __enter__(self) -> PhysicalRestore:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def restore_physical(
    app: AppContext,
    target: str,
    into_dir: str | Path,
    point: RecoveryTarget,
    *,
    start: bool = False,
    backup_id: str | None = None,
    detach: bool = False,
    config_path: str | None = None,
    timeout: float | None = None,
    progress: Progress = SILENT,
    run_parent: Path | None = None,
) -> PhysicalRestore:
    """Restore ``target`` into ``into_dir`` to ``point`` (see the module docstring).

    ``detach``: the started server outlives this process (the CLI's ``--start``).
    ``run_parent``: where the server's run directory (socket, log, spool) is made (default:
    the system's temporary directory; a drill puts it in its scratch directory).
    Raises UsageError (no base backup reaches the point, DIR not empty), RestoreError
    (recovery stopped before the target, naming the segment), and what storage raises.
    """
    _refuse_data(Path(into_dir).absolute())  # before anything is read
    repo = app.repository()
    choice = choose_base_backup(repo, target, point, backup_id=backup_id)
    bin_dir = _server_of_backup(choice) if start else None  # before anything is written
    _check_backup_wal(repo, choice)
    spaces = Path(into_dir).absolute()
    spaces = spaces.with_name(spaces.name + ".tablespaces")
    if choice.manifest.meta.get("tablespaces"):
        _refuse_data(spaces)
    data_dir, created = _prepare_dir(Path(into_dir))
    restore = PhysicalRestore(target, data_dir, choice, point, "", created)
    if choice.manifest.meta.get("tablespaces"):
        restore.tablespaces, restore.tablespaces_created = _prepare_dir(spaces)
    try:
        _extract(repo, restore, progress)
        standalone = _standalone_command(target, choice.cluster, config_path)
        restore.restore_command = standalone
        _write_settings(restore, standalone)
        if start:
            recover(
                app, restore, detach=detach, timeout=timeout, run_parent=run_parent, bin_dir=bin_dir
            )
    except BaseException:
        keep_log = restore.run_dir
        restore.stop()
        _clear(data_dir, created)
        if restore.tablespaces is not None:
            _clear(restore.tablespaces, restore.tablespaces_created)
        if keep_log is not None and not (keep_log / "server.log").exists():
            shutil.rmtree(keep_log, ignore_errors=True)
        raise
    return restore


# --- preparing the directory and extracting --------------------------------------------------


def _refuse_data(path: Path) -> None:
    if path.exists() and not is_empty_dir(path):
        raise RestoreError(
            f"{path} is not an empty directory; a restore never writes over data",
            hint="name a new or empty directory with --into-dir",
        )


def _prepare_dir(path: Path) -> tuple[Path, bool]:
    """``(absolute path, created)``; refuses a directory that holds anything."""
    path = path.absolute()
    _refuse_data(path)
    created = not path.exists()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path, created


def _clear(path: Path, created: bool) -> None:
    """Remove what a restore wrote: the directory if it made it, else its content."""
    if created:
        shutil.rmtree(path, ignore_errors=True)
        return
    for child in list(path.iterdir()) if path.exists() else []:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _check_backup_wal(repo, choice: BaseBackupChoice) -> None:
    problems = missing_wal(repo, choice.manifest)
    if problems:
        raise RestoreError(
            f"base backup {choice.manifest.backup_id} cannot be restored: {problems[0]}",
            hint="'drbackup wal check' shows the archive's gaps; choose another backup with --backup",
        )


def _owner() -> tuple[int, int] | None:
    run_as = resolve_run_as()
    return (run_as.uid, run_as.gid) if run_as else None


def _extract(repo, restore: PhysicalRestore, progress: Progress) -> None:
    started = time.monotonic()
    owner = _owner()
    if owner is not None:
        os.chown(restore.data_dir, *owner)
    archives = [i for i in restore.choice.manifest.items if i.type == TAR_TYPE]
    total = sum(i.size for i in archives)
    with progress.phase(f"restore {restore.target}", "extracted", total) as tick:
        for item in archives:
            root = restore.data_dir
            if item.name != "base.tar":
                root = _tablespace_dir(restore, item.name.removesuffix(".tar"), owner)
            with repo.open_item(item) as reader:
                done = extract_archive(item.name, CountingReader(reader, tick), root, chown=owner)
            restore.files += done.files
            restore.bytes += done.bytes
    _link_tablespaces(restore, owner)
    restore.phases["fetch_extract_s"] = time.monotonic() - started


def _tablespace_dir(restore: PhysicalRestore, oid: str, owner) -> Path:
    if restore.tablespaces is None or not oid.isdigit():
        raise RestoreError(
            f"unexpected archive {oid}.tar in base backup {restore.choice.manifest.backup_id}"
        )
    path = restore.tablespaces / oid
    path.mkdir(mode=0o700)
    for made in (restore.tablespaces, path):
        if owner is not None:
            os.chown(made, *owner)
    return path


def _link_tablespaces(restore: PhysicalRestore, owner) -> None:
    """Link ``pg_tblspc/<oid>`` to each restored tablespace, and drop ``tablespace_map``
    (which would make the server link them to their original locations instead)."""
    (restore.data_dir / "tablespace_map").unlink(missing_ok=True)
    if restore.tablespaces is None:
        return
    links = restore.data_dir / "pg_tblspc"
    links.mkdir(mode=0o700, exist_ok=True)
    for space in sorted(restore.tablespaces.iterdir()):
        link = links / space.name
        link.symlink_to(space)
        if owner is not None:
            os.lchown(link, *owner)


def _standalone_command(target: str, cluster: str, config_path: str | None) -> str:
    argv = [sys.executable, "-m", "drbackup"]
    if config_path:
        argv += ["-c", str(Path(config_path).absolute())]
    argv += ["wal-fetch", "--target", target, "--cluster", cluster]
    return shlex.join(argv) + " %f %p"


def _hosted_command(spool: Path) -> str:
    """The restore_command of a server this process serves.

    A file the fetcher has read ahead is already complete in the spool (written aside,
    renamed): the shell records the request (``want``, aside then renamed, as the client
    does) and moves the file, ~2 ms.  Otherwise the bare client of the spool waits for it
    (actions/wal_take.py, standard library only: 25-90 ms a file for the interpreter, not
    ~200 ms of imports), and reports a missing or damaged file.
    """
    s = shlex.quote(str(spool))
    client = shlex.join([sys.executable, "-I", "-S", wal_take.__file__, str(spool)])
    return (
        f"echo %f > {s}/.want.tmp && mv -f {s}/.want.tmp {s}/want"
        f" && mv -f {s}/%f %p 2>/dev/null || exec {client} %f %p"
    )


def _write_settings(restore: PhysicalRestore, restore_command: str) -> None:
    point = restore.point
    timeline = RecoveryTarget(**{**point.__dict__, "timeline": str(restore.choice.timeline)})
    written = write_recovery_config(restore.data_dir, recovery_settings(timeline, restore_command))
    owner = _owner()
    for path in written:
        path.chmod(0o600)
        if owner is not None:
            os.chown(path, *owner)


# --- recovering ----------------------------------------------------------------------------------


def recover(
    app, restore: PhysicalRestore, *, detach=False, timeout=None, run_parent=None, bin_dir=None
) -> None:
    """Start the server on ``restore`` (made without ``start``) and wait for recovery, as
    step 5 of the module docstring; sets ``restore.outcome``.  ``bin_dir``: the server of
    the backup's major (found here when not given).  Raises RestoreError when recovery
    stopped before the target, naming the segment (the server is then stopped; the caller
    removes the restore), ConfigError when that major's server is not installed."""
    bin_dir = bin_dir or _server_of_backup(restore.choice)
    archive = WalArchive(app.repository(), restore.target)
    ahead = read_settings(app, restore.target).fetch_ahead or 8
    limit = timeout or DEFAULT_RECOVERY_TIMEOUT
    _recover(restore, archive, ahead, detach, limit, bin_dir, run_parent)


def _server_of_backup(choice: BaseBackupChoice) -> Path:
    """initdb/postgres of exactly the base backup's major: a data directory is never started
    by another major's server.  Raises ConfigError naming the package when not installed."""
    major = choice.manifest.meta.get("major") or parse_cluster_name(choice.cluster)[0]
    return versions.server_bin_dir_for_major(int(major))


def _recover(
    restore: PhysicalRestore,
    archive: WalArchive,
    ahead: int,
    detach: bool,
    timeout: float,
    bin_dir: Path | None = None,
    run_parent: Path | None = None,
):
    started = time.monotonic()
    restore.run_dir = Path(
        tempfile.mkdtemp(prefix="run-" if run_parent else "drbackup-restore-", dir=run_parent)
    )
    (restore.run_dir / "spool").mkdir(mode=0o700)
    if (owner := _owner()) is not None:  # before the spool's files are made: they follow it
        os.chown(restore.run_dir, *owner)
        os.chown(restore.run_dir / "spool", *owner)
    spool = Spool(restore.run_dir / "spool").prepare()
    fetcher = Fetcher(archive, restore.choice.cluster, spool, ahead=ahead)
    spool.acquire()  # this process serves the spool: restore_command takes from it
    thread = threading.Thread(target=fetcher.run, name="drbackup-wal-fetcher", daemon=True)
    thread.start()
    restore.server = RecoveryServer(
        restore.data_dir,
        restore.run_dir,
        superuser=restore.choice.manifest.meta.get("superuser", "postgres"),
        settings={
            "restore_command": _hosted_command(spool.path),
            "hot_standby": "off",  # ready to accept connections means: recovered and promoted
        },
        detach=detach,
        start_timeout=timeout,
        bin_dir=bin_dir,
    )
    try:
        failure = _start(restore.server)
    finally:
        fetcher.stop.set()
        thread.join()
        spool.release()
    restore.phases["recovery_s"] = time.monotonic() - started
    restore.outcome = _outcome(restore, fetcher.log, archive, failure)
    if failure is not None or not restore.outcome.reached:
        raise _recovery_failed(restore, failure, archive)


def _start(server: RecoveryServer) -> SourceError | None:
    try:
        server.start()
    except SourceError as exc:
        return exc
    return None


def _outcome(restore: PhysicalRestore, fetch: FetchLog, archive, failure) -> RecoveryOutcome:
    log = parse_recovery_log(_read(restore.server.log_path))
    missing = next((n for n in fetch.requested if n in fetch.missing and len(n) == 24), None)
    damaged = {n: reason for n, reason in fetch.failed.items() if n in fetch.requested}
    outcome = RecoveryOutcome(
        restore.point.describe(),
        log.reached_target,
        log.stop,
        log.last_commit,
        log.redo_done,
        None,
        log.new_timeline,
        missing,
        damaged,
    )
    replayed = [n for n in fetch.requested if n in fetch.fetched and len(n) == 24]
    outcome.timeline = int(replayed[-1][:8], 16) if replayed else None
    if failure is None:
        _read_server(restore, outcome)
    if restore.point.kind == LATEST and failure is None:
        outcome.reached = not damaged and not _archived_after(
            archive, restore.choice.cluster, missing
        )
    return outcome


def _read_server(restore: PhysicalRestore, outcome: RecoveryOutcome) -> None:
    with connect(restore.server.dsn()) as conn:
        state = replay_state(conn)
    outcome.last_lsn = state.replay_lsn if state.replay_lsn is not None else outcome.last_lsn
    outcome.last_commit = state.replay_time or outcome.last_commit
    outcome.new_timeline = state.timeline
    history = restore.data_dir / "pg_wal" / f"{state.timeline:08X}.history"
    if history.exists():
        entries = parse_history(history.read_text(), str(history))
        outcome.timeline = entries[-1].parent if entries else None


def _archived_after(archive: WalArchive, cluster: str, missing: str | None) -> bool:
    """True if the archive holds segments of ``missing``'s timeline after it (a gap)."""
    if missing is None:
        return False
    return any(
        s.is_segment and s.name[:8] == missing[:8] and s.name > missing
        for s in archive.list_files(cluster, start=missing)
    )


def _recovery_failed(restore: PhysicalRestore, failure, archive: WalArchive) -> RestoreError:
    outcome = restore.outcome
    where = outcome.describe()
    log_hint = f"the server log is {restore.server.log_path}"
    if outcome.damaged:
        name, reason = next(iter(outcome.damaged.items()))
        return RestoreError(
            f"recovery stopped before {outcome.target}: WAL segment {name} is damaged ({reason}); {where}",
            hint=log_hint,
        )
    if outcome.missing and _archived_after(archive, restore.choice.cluster, outcome.missing):
        return RestoreError(
            f"recovery stopped before {outcome.target}: WAL segment {outcome.missing} is missing "
            f"from the archive (later segments exist); {where}",
            hint="'drbackup wal check' lists the gaps; " + log_hint,
        )
    if outcome.missing:
        return RestoreError(
            f"the archived WAL ends before {outcome.target}: segment {outcome.missing} is not "
            f"archived; {where}",
            hint="choose an earlier point (the restorable window: 'drbackup wal check'); "
            + log_hint,
        )
    reason = failure.message if failure is not None else "recovery ended before the target"
    return RestoreError(
        f"recovery did not reach {outcome.target}: {reason}; {where}", hint=log_hint
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
