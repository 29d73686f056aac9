"""``backup postgres``: pg_dump per database, streamed through the pipeline, one manifest.

For each database a connection opens a REPEATABLE READ transaction and exports its
snapshot; ``pg_dump --snapshot`` dumps exactly that snapshot while the same transaction
takes the integrity fingerprint, so the fingerprint describes the dump even while the
database is written.  The backup becomes visible only when every dump finished with exit
status 0 and the manifest is written.
"""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from psycopg import IsolationLevel

from drbackup.actions.runs import recorded_run
from drbackup.codec.pipeline import iter_blocks_threaded, widen_pipe
from drbackup.errors import DrbackupError, LockedError, SourceError
from drbackup.repository.manifest import Manifest
from drbackup.sources.postgres import commands, versions
from drbackup.sources.postgres.connection import client_env, connect, database_of, dsn_for_database
from drbackup.threads import Background
from drbackup.times import parse_iso_time

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext

LOCK_SQL = "SELECT pg_try_advisory_lock(hashtext('drbackup backup ' || %s))"


@dataclass
class PgTarget:
    """What a backup needs of a ``postgres.<name>`` config entry, secrets resolved."""

    name: str
    dsn: str
    password: str | None
    databases: list[str] | str
    include_schemas: list[str]
    exclude_schemas: list[str]
    include_tables: list[str]
    exclude_tables: list[str]
    pg_dump_options: list[str]
    fingerprint: str
    pg_bin_dir: str | None = None

    @classmethod
    def from_config(cls, name: str, cfg) -> PgTarget:
        password = cfg.password.get_secret_value() if getattr(cfg, "password", None) else None
        return cls(
            name=name,
            dsn=cfg.dsn,
            password=password,
            databases=cfg.databases,
            include_schemas=list(cfg.include_schemas),
            exclude_schemas=list(cfg.exclude_schemas),
            include_tables=list(cfg.include_tables),
            exclude_tables=list(cfg.exclude_tables),
            pg_dump_options=list(cfg.pg_dump_options),
            fingerprint=cfg.fingerprint,
            pg_bin_dir=getattr(cfg, "pg_bin_dir", None),
        )


def backup_targets(
    app: AppContext, names: list[str], *, max_parallel: int = 2, progress=None
) -> list[Manifest]:
    """Back up several targets, at most ``max_parallel`` at once; fail if any failed.

    Every target runs to its end; the error raised lists every target that failed.
    """
    if len(names) == 1:
        return [backup_target(app, names[0], progress=progress)]
    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        futures = {n: pool.submit(backup_target, app, n) for n in names}
    failures = [(n, f.exception()) for n, f in futures.items() if f.exception()]
    if failures:
        first = failures[0][1]
        lines = "; ".join(f"{n}: {e}" for n, e in failures)
        if isinstance(first, DrbackupError):
            raise type(first)(
                f"{len(failures)} of {len(names)} backups failed: {lines}", hint=first.hint
            )
        raise first
    return [futures[n].result() for n in names]


def backup_target(app: AppContext, name: str, *, progress=None) -> Manifest:
    """Back up one target into the repository; record the run in the catalog."""
    target = PgTarget.from_config(name, app.config.target(name))
    with recorded_run(app.index, "backup", name) as run:
        manifest = _backup(app, target, progress)
        run.backup_id = manifest.backup_id
    app.index.record_backup(app.repository(), manifest)
    return manifest


def _backup(app: AppContext, target: PgTarget, progress) -> Manifest:
    # The passphrase is stretched in a helper thread while the source is checked and
    # pg_dump starts; a wrong one stops the backup before the fingerprint or any write.
    repo = app.repository(background_key=True)
    repo.keyring.require(write=True)
    _prefetch_catalog(after=repo.keyring.wait)
    with connect(target.dsn, target.password) as control:
        _take_lock(control, target.name)
        server_num = control.info.server_version
        bin_dir = commands.find_client_bin_dir(server_num, target.pg_bin_dir)
        dump_version = commands.tool_version(bin_dir, "pg_dump")
        versions.require_client_for_server("pg_dump", dump_version, server_num)
        databases = _databases(control, target)
        with repo.new_backup(target.name, "postgres") as writer:
            points = []
            for db in databases:
                item = _dump_database(writer, target, db, bin_dir, progress)
                points.append(item.meta["recovery_point"])
            _dump_globals(writer, target, bin_dir)
            writer.recovery_point = parse_iso_time(min(points)) if points else datetime.now(UTC)
            writer.meta.update(
                {
                    "server_version": control.execute("SHOW server_version").fetchone()[0],
                    "server_version_num": server_num,
                    "pg_dump_version": f"{dump_version[0]}.{dump_version[1]}",
                    "databases": databases,
                }
            )
            return writer.commit()


def _prefetch_catalog(after: Callable[[], None]) -> None:
    # The run is recorded in the catalog at the end; importing it (SQLAlchemy, ~0.5 s of CPU)
    # then would add to every backup's wall time.  Imported alongside the dump instead, where
    # it overlaps with waiting for pg_dump.  Started ``after`` the key is derived, so that
    # the import's memory does not add to scrypt's.  Errors surface (and are suppressed) later.
    def load() -> None:
        after()
        with contextlib.suppress(Exception):
            importlib.import_module("drbackup.catalog")

    threading.Thread(target=load, name="drbackup-catalog-import", daemon=True).start()


def _take_lock(control, name: str) -> None:
    # A session advisory lock on the source server: held for the whole backup, released
    # by the server if this process dies, and seen by every host backing up this target.
    if not control.execute(LOCK_SQL, (name,)).fetchone()[0]:
        raise LockedError(
            f"another backup of target {name} is running",
            hint="wait for it to finish; backups of one target never overlap",
        )


def _databases(control, target: PgTarget) -> list[str]:
    if target.databases == "all":
        rows = control.execute(
            "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]
    if not target.databases:
        return [database_of(target.dsn) or "postgres"]
    return list(target.databases)


def _dump_database(writer, target: PgTarget, db: str, bin_dir, progress):
    dsn = dsn_for_database(target.dsn, db)
    with connect(dsn, target.password, autocommit=False) as snap:
        snap.isolation_level = IsolationLevel.REPEATABLE_READ
        snap.read_only = True
        snapshot_id, point = snap.execute(
            "SELECT pg_export_snapshot(), statement_timestamp()"
        ).fetchone()
        meta = {
            "database": db,
            "recovery_point": point.astimezone(UTC).isoformat(),
            "database_size": snap.execute("SELECT pg_database_size(current_database())").fetchone()[
                0
            ],
            "encoding": snap.execute("SHOW server_encoding").fetchone()[0],
        }
        argv = commands.pg_dump_argv(
            bin_dir,
            dsn,
            snapshot=snapshot_id,
            include_schemas=target.include_schemas,
            exclude_schemas=target.exclude_schemas,
            include_tables=target.include_tables,
            exclude_tables=target.exclude_tables,
            extra=target.pg_dump_options,
        )
        sequences = _sequence_states(snap) if target.fingerprint != "off" else {}
        with _Process(
            argv, client_env(target.password, target.dsn), f"pg_dump of database {db}"
        ) as proc:
            # The key (stretched in the background while pg_dump starts) before the
            # fingerprint: a wrong passphrase stops here, before any table is scanned.
            writer.data_key  # noqa: B018 - waits for it, or raises
            fingerprint = Background(lambda: _fingerprint(snap, target), "drbackup-fingerprint")
            try:
                item = writer.add_stream(
                    db, "pg_dump", iter_blocks_threaded(proc.stdout), meta, progress
                )
                proc.finish()
            except BaseException:
                # Leaving the snapshot's connection waits for its running query: stop the
                # fingerprint's table scan instead of finishing it for nothing.
                snap.cancel_safe()
                raise
        meta["fingerprint"] = _pin_sequences(fingerprint.result(), sequences)
        snap.rollback()
    return item


def _fingerprint(conn, target: PgTarget):
    if target.fingerprint == "off":
        return None
    from drbackup.sources.postgres.fingerprint import (
        ROW_HASH_RECORD,
        default_row_hash,
        take_fingerprint,
    )

    if default_row_hash(conn) == ROW_HASH_RECORD:
        # One backend: pg_dump's COPY is the backup's critical path, and a single backend
        # hashes rows faster than pg_dump copies them, so parallel workers would only take
        # CPU from the COPY (and workers from the source server).  md5 is slow enough to
        # become the tail: it keeps the planner's choice.
        conn.execute("SET LOCAL max_parallel_workers_per_gather = 0")
    return take_fingerprint(
        conn,
        target.fingerprint,
        include_schemas=target.include_schemas or None,
        exclude_schemas=target.exclude_schemas or None,
        include_tables=target.include_tables or None,
        exclude_tables=target.exclude_tables or None,
    )


_SEQUENCES_SQL = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND c.relpersistence <> 't'
  AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(c.oid, 'SELECT') END
"""


def _sequence_states(conn) -> dict[str, tuple[int, bool]]:
    """``(last_value, is_called)`` of every readable sequence, read now (before pg_dump).

    Sequences are not transactional: pg_dump reads them early in its run, while the
    fingerprint, running alongside, reads them late; under writes it would expect values
    the dump does not hold (a false "sequence is behind").  Values read before pg_dump
    starts are a lower bound of what it dumps, which is what the comparison assumes.
    """
    from drbackup.sources.postgres.inventory import read_sequence_state

    return {
        f"{schema}.{name}": read_sequence_state(conn, schema, name)
        for schema, name in conn.execute(_SEQUENCES_SQL).fetchall()
    }


def _pin_sequences(fingerprint: dict | None, states: dict[str, tuple[int, bool]]):
    """The fingerprint with its sequence values replaced by those read before pg_dump."""
    sequences = (fingerprint or {}).get("inventory", {}).get("sequences", {})
    for name, entry in sequences.items():
        if name in states:
            entry["last_value"], entry["is_called"] = states[name]
    return fingerprint


def _dump_globals(writer, target: PgTarget, bin_dir) -> None:
    """Roles, memberships and tablespaces; without superuser, role passwords are left out."""
    env = client_env(target.password, target.dsn)
    meta = {"role_passwords": True}
    result = _run(commands.pg_dumpall_globals_argv(bin_dir, target.dsn), env)
    if result.returncode != 0 and "permission denied" in result.stderr:
        meta["role_passwords"] = False
        result = _run(
            commands.pg_dumpall_globals_argv(bin_dir, target.dsn, no_role_passwords=True), env
        )
    if result.returncode != 0:
        raise SourceError(f"pg_dumpall --globals-only failed: {_last_line(result.stderr)}")
    writer.add_stream("globals", "globals.sql", iter([result.stdout.encode()]), meta)


def _run(argv, env) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SourceError(f"cannot run {argv[0]}: {exc}") from None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no message)"


class _Process:
    """A child whose stdout we stream; stderr drained into a bounded tail; killed on error."""

    def __init__(self, argv: list[str], env: dict, what: str):
        self.argv, self.env, self.what = argv, env, what
        self.stderr_tail: deque[str] = deque(maxlen=20)

    def __enter__(self):
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        except OSError as exc:
            raise SourceError(f"cannot run {self.argv[0]}: {exc.strerror or exc}") from None
        self.stdout = self.proc.stdout
        widen_pipe(self.stdout.fileno())
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        return self

    def _read_stderr(self) -> None:
        for raw in self.proc.stderr:
            self.stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

    def finish(self) -> None:
        """Wait for exit; raise SourceError with the last stderr line on a non-zero status."""
        code = self.proc.wait()
        self._drain.join(timeout=5)
        if code != 0:
            raise SourceError(
                f"{self.what} failed (exit {code}): {_last_line(chr(10).join(self.stderr_tail))}"
            )

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
