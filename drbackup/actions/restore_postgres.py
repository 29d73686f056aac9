"""``restore postgres``: pick a backup, guard the target, stream into pg_restore.

Works with only the repository and the key: the backup is chosen from manifests, never
from the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from drbackup.actions.selection import Selection, parse_time, select_backup  # noqa: F401
from drbackup.errors import RestoreError, UsageError
from drbackup.repository.manifest import Item, Manifest
from drbackup.sources.postgres import commands
from drbackup.sources.postgres.connection import client_env, connect, database_of, dsn_for_database
from drbackup.sources.postgres.globals import GlobalsResult, apply_globals
from drbackup.sources.postgres.restore import RestoreRun, run_pg_restore

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
    """Restore one database of a backup into the database named by ``into``."""
    repo = app.repository()
    selection = select_backup(repo, target, backup_id=backup_id, point_in_time=point_in_time)
    item = pick_item(selection.manifest, database)
    dbname = database_of(into)
    if not dbname:
        raise UsageError("--into must name a database (e.g. postgresql://user@host/app_restored)")
    created = _prepare_target(
        into, dbname, password, create=create, force=force, encoding=item.meta.get("encoding")
    )
    globals_result = (
        _restore_globals(repo, selection.manifest, into, password, force) if with_globals else None
    )
    with connect(into, password) as conn:
        server_num = conn.info.server_version
    bin_dir = commands.find_client_bin_dir(server_num, None)
    argv = commands.pg_restore_argv(
        bin_dir,
        into,
        jobs=jobs,
        archive="{archive}" if jobs > 1 else None,
        no_owner=no_owner,
    )
    with repo.open_item(item) as reader:
        run = run_pg_restore(
            argv,
            client_env(password),
            reader,
            spool_dir=spool_dir,
            what=f"restore of {item.name} into {dbname}",
        )
    return RestoreResult(
        selection, item.name, commands.mask_dsn(into), run, globals_result, created
    )


def _prepare_target(
    into: str, dbname: str, password, *, create: bool, force: bool, encoding
) -> bool:
    """Make sure the target database exists and is empty; True if (re)created.

    A non-empty target is refused unless ``force``; then it is dropped and created anew.
    (``pg_restore --clean`` cannot drop everything a dump holds: a partition's inherited
    constraints, for one.)
    """
    admin_dsn = dsn_for_database(into, "postgres")
    with connect(admin_dsn, password) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if not exists and not create:
            raise RestoreError(
                f"target database {dbname} does not exist", hint="add --create to create it"
            )
        if exists:
            with connect(into, password) as conn:
                objects = conn.execute(_NON_EMPTY_SQL).fetchone()[0]
            if not objects:
                return False
            if not force:
                noun = "object" if objects == 1 else "objects"
                raise RestoreError(
                    f"target database {dbname} is not empty ({objects} {noun})",
                    hint="restore into an empty or new database (--create), "
                    "or pass --force to drop and recreate it",
                )
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
        stmt = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(dbname))
        if encoding:
            stmt += sql.SQL(" ENCODING {}").format(sql.Literal(encoding))
        admin.execute(stmt)
        return True


def _restore_globals(repo, manifest: Manifest, into: str, password, force: bool) -> GlobalsResult:
    try:
        item = manifest.item("globals")
    except KeyError:
        raise RestoreError(f"backup {manifest.backup_id} holds no globals") from None
    with repo.open_item(item) as reader:
        text = b"".join(reader).decode("utf-8")
    with connect(into, password) as conn:
        return apply_globals(conn, text, force=force)
