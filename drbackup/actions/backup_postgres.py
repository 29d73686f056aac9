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
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from drbackup.actions.progress import SILENT, Progress, Total, estimate_beside, previous_size
from drbackup.actions.runs import recorded_backup
from drbackup.codec.pipeline import iter_blocks_threaded
from drbackup.errors import DrbackupError, LockedError
from drbackup.repository.manifest import Manifest
from drbackup.sources.postgres import commands, dump, versions
from drbackup.sources.postgres.connection import client_env, connect, database_of, dsn_for_database
from drbackup.sources.postgres.processes import StreamingProcess, tool_version
from drbackup.threads import Background
from drbackup.times import parse_iso_time

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext


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
    app: AppContext, names: list[str], *, max_parallel: int = 2, progress: Progress = SILENT
) -> list[Manifest]:
    """Back up several targets, at most ``max_parallel`` at once; fail if any failed.

    Every target runs to its end; the error raised lists every target that failed.
    ``progress`` gets a phase per target (several at once when they run in parallel).
    """
    if len(names) == 1:
        return [backup_target(app, names[0], progress=progress)]
    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        futures = {n: pool.submit(backup_target, app, n, progress=progress) for n in names}
    failures = [(n, f.exception()) for n, f in futures.items() if f.exception()]
    if failures:
        first = failures[0][1]
        lines = "; ".join(f"{n}: {e}" for n, e in failures)
        done = [f.result() for f in futures.values() if not f.exception()]
        stored = [f"{m.target}/{m.backup_id}" for m in done]
        if stored:  # the others are in the repository: say which, for the script that retries
            lines += f" (stored: {', '.join(stored)})"
        if isinstance(first, DrbackupError):
            raise type(first)(
                f"{len(failures)} of {len(names)} backups failed: {lines}", hint=first.hint
            )
        raise first
    return [futures[n].result() for n in names]


def backup_target(app: AppContext, name: str, *, progress: Progress = SILENT) -> Manifest:
    """Back up one target into the repository; record the run in the catalog."""
    target = PgTarget.from_config(name, app.config.target(name))
    return recorded_backup(app, name, lambda: _backup(app, target, progress))


def _backup(app: AppContext, target: PgTarget, progress: Progress) -> Manifest:
    # The passphrase is stretched in a helper thread while the source is checked and
    # pg_dump starts; a wrong one stops the backup before the fingerprint or any write.
    repo = app.repository(background_key=True)
    repo.keyring.require(write=True)
    _prefetch_catalog(after=repo.keyring.wait)
    with connect(target.dsn, target.password) as control:
        _take_lock(control, target.name)
        server_num = control.info.server_version
        bin_dir = commands.find_client_bin_dir(server_num, target.pg_bin_dir)
        dump_version = tool_version(bin_dir, "pg_dump")
        versions.require_client_for_server("pg_dump", dump_version, server_num)
        databases = _databases(control, target)
        expected = _expected_size(repo, control, target.name, databases, progress)
        phase = progress.phase(f"backup {target.name}", "dumped", expected, estimate=True)
        with repo.new_backup(target.name, "postgres") as writer, phase as tick:
            points = []
            for db in databases:
                item = _dump_database(writer, target, db, bin_dir, tick)
                points.append(item.meta["recovery_point"])
            _dump_globals(writer, target, bin_dir)
            writer.recovery_point = parse_iso_time(min(points)) if points else datetime.now(UTC)
            writer.meta.update(
                {
                    "server_version": dump.server_version_text(control),
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
        with contextlib.suppress(Exception):  # an import error resurfaces where the catalog is used
            importlib.import_module("drbackup.catalog")

    threading.Thread(target=load, name="drbackup-catalog-import", daemon=True).start()


def _expected_size(repo, control, name: str, databases: list[str], progress) -> Total:
    """What the dumps will weigh, for progress: the previous dump's size, else the size of
    the databases on disk (indexes and free space included: an overestimate)."""
    if not progress.wants_total:
        return None  # nobody looks: no manifest read, no query
    on_disk = dump.databases_size(control, databases)
    return estimate_beside(lambda: previous_size(repo, name, "postgres", "pg_dump"), on_disk)


def _take_lock(control, name: str) -> None:
    # A session advisory lock on the source server: held for the whole backup, released
    # by the server if this process dies, and seen by every host backing up this target.
    if not dump.take_backup_lock(control, name):
        raise LockedError(
            f"another backup of target {name} is running",
            hint="wait for it to finish; backups of one target never overlap",
        )


def _databases(control, target: PgTarget) -> list[str]:
    if target.databases == "all":
        return dump.list_databases(control)
    if not target.databases:
        return [database_of(target.dsn) or "postgres"]
    return list(target.databases)


def _dump_database(writer, target: PgTarget, db: str, bin_dir, progress):
    dsn = dsn_for_database(target.dsn, db)
    with dump.exported_snapshot(dsn, target.password, db) as (snap, snapshot):
        meta = dict(snapshot.meta)
        argv = commands.pg_dump_argv(
            bin_dir,
            dsn,
            snapshot=snapshot.snapshot_id,
            include_schemas=target.include_schemas,
            exclude_schemas=target.exclude_schemas,
            include_tables=target.include_tables,
            exclude_tables=target.exclude_tables,
            extra=target.pg_dump_options,
        )
        sequences = dump.sequence_states(snap) if target.fingerprint != "off" else {}
        env = client_env(target.password, target.dsn)
        with StreamingProcess(argv, env, f"pg_dump of database {db}") as proc:
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
        meta["fingerprint"] = dump.pin_sequences(fingerprint.result(), sequences)
    return item


def _fingerprint(conn, target: PgTarget):
    scope = {
        "include_schemas": target.include_schemas or None,
        "exclude_schemas": target.exclude_schemas or None,
        "include_tables": target.include_tables or None,
        "exclude_tables": target.exclude_tables or None,
    }
    return dump.fingerprint_beside_dump(conn, target.fingerprint, scope)


def _dump_globals(writer, target: PgTarget, bin_dir) -> None:
    """Roles, memberships and tablespaces; without superuser, role passwords are left out."""
    text, meta = dump.dump_globals(bin_dir, target.dsn, target.password)
    writer.add_stream("globals", "globals.sql", iter([text]), meta)
