"""``restore postgres``: pick a backup, guard the target, stream into pg_restore.

Works with only the repository and the key: the backup is chosen from manifests, never
from the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from drbackup.actions.selection import Selection, parse_time, select_backup  # noqa: F401
from drbackup.errors import IntegrityError, RestoreError, SourceError, StorageError, UsageError
from drbackup.repository.manifest import Item, Manifest
from drbackup.sources.postgres import commands
from drbackup.sources.postgres.connection import client_env, connect, database_of, dsn_for_database
from drbackup.sources.postgres.globals import GlobalsResult, apply_globals
from drbackup.sources.postgres.restore import RestoreRun, run_pg_restore
from drbackup.threads import Background

_NON_EMPTY_SQL = """
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%')
     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
     + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql')
"""


@dataclass
class RestoreResult:
    selection: Selection
    database: str
    into: str  # masked dsn
    run: RestoreRun
    globals: GlobalsResult | None
    created: bool
    dropped: str | None = None  # what --force dropped, said to the user


def pick_item(manifest: Manifest, database: str | None) -> Item:
    dumps = [i for i in manifest.items if i.type == "pg_dump"]
    if database:
        for item in dumps:
            if item.name == database:
                return item
        raise UsageError(
            f"backup {manifest.backup_id} has no database {database}",
            hint="it has: " + ", ".join(i.name for i in dumps),
        )
    if len(dumps) != 1:
        raise UsageError(
            f"backup {manifest.backup_id} holds {len(dumps)} databases; choose one with --database",
            hint="it has: " + ", ".join(i.name for i in dumps),
        )
    return dumps[0]


def restore_postgres(
    app,
    target: str,
    into: str,
    *,
    backup_id=None,
    point_in_time=None,
    database=None,
    jobs: int = 1,
    create: bool = False,
    force: bool = False,
    with_globals: bool = False,
    no_owner: bool = False,
    password: str | None = None,
    spool_dir: str | None = None,
) -> RestoreResult:
    """Restore one database of a backup into the database named by ``into``.

    Everything that can refuse the restore is checked before any data is read: the backup,
    the target database (exists, or ``create``; empty, or ``force``) and the globals item.
    With ``jobs`` > 1 the target is then prepared (dropped, created, globals applied) while
    the archive is spooled; pg_restore starts once both are done.
    """
    dbname = database_of(into)
    if not dbname:
        raise UsageError("--into must name a database (e.g. postgresql://user@host/app_restored)")
    # The target is looked at while the passphrase is stretched and the backup chosen; the
    # backup's errors (wrong key, unknown id) still come first.
    repo = app.repository(background_key=True)
    checked = Background(
        lambda: _check_target(into, dbname, password, create=create, force=force),
        "drbackup-target-check",
    )
    selection = select_backup(
        repo, target, backup_id=backup_id, point_in_time=point_in_time, kind="postgres"
    )
    if selection.manifest.kind == "postgres-physical":
        raise UsageError(
            f"backup {selection.manifest.backup_id} is a base backup, not a dump",
            hint="restore it with --into-dir DIR (docs/pitr.md)",
        )
    item = pick_item(selection.manifest, database)
    found = checked.result()
    globals_item = _globals_item(selection.manifest) if with_globals else None
    bin_dir = commands.find_client_bin_dir(found.server_version, None)
    if not (bin_dir / "pg_restore").is_file():  # before the target is created or dropped
        raise SourceError(
            f"pg_restore not found in {bin_dir}",
            hint=f"install the PostgreSQL client tools, or set {commands.CLIENT_BIN_ENV} "
            "to the directory holding them",
        )
    argv = commands.pg_restore_argv(
        bin_dir,
        into,
        jobs=jobs,
        archive="{archive}" if jobs > 1 else None,
        no_owner=no_owner,
    )
    prepared = _Prepared()

    def prepare() -> None:  # with jobs > 1, in a thread while the archive is spooled
        prepared.started = True
        prepared.created = _make_target(into, found, password, encoding=item.meta.get("encoding"))
        if globals_item is not None:
            prepared.globals = _restore_globals(repo, globals_item, into, password, force)
        with connect(into, password):  # pg_restore connects like this: fail here if it cannot
            pass

    try:
        with repo.open_item(item) as reader:
            run = run_pg_restore(
                argv,
                client_env(password),
                reader,
                spool_dir=spool_dir,
                what=f"restore of {item.name} into {dbname}",
                alongside=prepare,
            )
    except (StorageError, IntegrityError) as exc:  # the archive stopped part-way
        if prepared.started and jobs == 1:  # pg_restore was loading what had arrived
            incomplete = f"the target database {dbname} is incomplete: restore again with --force"
            exc.hint = f"{incomplete}; {exc.hint}" if exc.hint else incomplete
        raise
    return RestoreResult(
        selection,
        item.name,
        commands.mask_dsn(into),
        run,
        prepared.globals,
        prepared.created,
        found.dropped(),
    )


@dataclass(frozen=True)
class _Found:
    """What :func:`_check_target` saw of the target database."""

    dbname: str
    exists: bool
    objects: int
    server_version: int
    sessions: int = 0  # other sessions on a non-empty target, which --force ends

    def dropped(self) -> str | None:
        """What --force drops, said to the user; None when nothing is dropped."""
        if not (self.exists and self.objects):
            return None
        noun = "object" if self.objects == 1 else "objects"
        text = f"dropped the existing database {self.dbname} ({self.objects} {noun})"
        if self.sessions:
            text += f" and ended its {self.sessions} open session(s)"
        return text


@dataclass
class _Prepared:
    started: bool = False  # the target may have been dropped, created or partly loaded
    created: bool = False
    globals: GlobalsResult | None = None


def _check_target(into: str, dbname: str, password, *, create: bool, force: bool) -> _Found:
    """Look at the target database without changing anything.

    Raises :class:`RestoreError` if it does not exist and not ``create``, or holds objects
    and not ``force``.
    """
    with connect(dsn_for_database(into, "postgres"), password) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        server_version = admin.info.server_version
        sessions = _other_sessions(admin, dbname) if exists and force else 0
    if not exists and not create:
        raise RestoreError(
            f"target database {dbname} does not exist", hint="add --create to create it"
        )
    objects = 0
    if exists:
        with connect(into, password) as conn:
            objects = conn.execute(_NON_EMPTY_SQL).fetchone()[0]
        if objects and not force:
            noun = "object" if objects == 1 else "objects"
            raise RestoreError(
                f"target database {dbname} is not empty ({objects} {noun})",
                hint="restore into an empty or new database (--create), "
                "or pass --force to drop and recreate it",
            )
    return _Found(dbname, bool(exists), objects, server_version, sessions)


def _other_sessions(admin, dbname: str) -> int:
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
    return admin.execute(query, (dbname,)).fetchone()[0]


def _make_target(into: str, found: _Found, password, *, encoding) -> bool:
    """Make sure the target database exists and is empty; True if (re)created.

    A non-empty target (allowed by ``force``) is dropped and created anew.
    (``pg_restore --clean`` cannot drop everything a dump holds: a partition's inherited
    constraints, for one.)
    """
    if found.exists and not found.objects:
        return False
    name = sql.Identifier(found.dbname)
    stmt = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(name)
    if encoding:
        stmt += sql.SQL(" ENCODING {}").format(sql.Literal(encoding))
    with connect(dsn_for_database(into, "postgres"), password) as admin:
        if found.exists:
            _execute(admin, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(name), "drop", found)
        _execute(admin, stmt, "create", found)
    return True


def _execute(conn, stmt, verb: str, found: _Found) -> None:
    # Runs in the preparation thread: its failure must read as one line, like every error.
    try:
        conn.execute(stmt)
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RestoreError(f"cannot {verb} target database {found.dbname}: {reason}") from None


def _globals_item(manifest: Manifest) -> Item:
    try:
        return manifest.item("globals")
    except KeyError:
        raise RestoreError(f"backup {manifest.backup_id} holds no globals") from None


def _restore_globals(repo, item: Item, into: str, password, force: bool) -> GlobalsResult:
    with repo.open_item(item) as reader:
        text = b"".join(reader).decode("utf-8")
    with connect(into, password) as conn:
        return apply_globals(conn, text, force=force)
