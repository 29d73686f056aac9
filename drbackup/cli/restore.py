"""``drbackup restore postgres TARGET --into DSN``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from drbackup.cli.render import (
    echo_json,
    go_quiet,
    human_size,
    quiet_option,
    reporter,
    selection_json,
    user_time,
)
from drbackup.errors import UsageError

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext


@click.group("restore")
def restore() -> None:
    """Restore from the repository (needs only the repository and its key)."""


@restore.command("postgres")
@click.argument("target")
@click.option("--into", "into", metavar="DSN", help="Database to restore a dump into.")
@click.option(
    "--into-dir",
    "into_dir",
    metavar="DIR",
    help="Empty directory to restore a base backup and its WAL into (point in time).",
)
@click.option("--backup", "backup_id", metavar="ID", help="Backup id (or unique prefix).")
@click.option(
    "--point-in-time",
    "pit",
    metavar="TIME",
    help="With --into: newest dump whose recovery point is at or before TIME; with "
    "--into-dir: every commit up to TIME (a whole second covers that second).  ISO 8601, UTC "
    "if no zone.",
)
@click.option("--lsn", metavar="LSN", help="With --into-dir: recover up to WAL position LSN.")
@click.option("--xid", type=int, metavar="XID", help="With --into-dir: up to transaction XID.")
@click.option(
    "--restore-point",
    metavar="NAME",
    help="With --into-dir: up to a restore point (drbackup mark).",
)
@click.option("--latest", is_flag=True, help="With --into-dir: every archived WAL file (default).")
@click.option(
    "--timeline",
    default="latest",
    show_default=True,
    help="With --into-dir: the timeline to recover along.",
)
@click.option(
    "--exclusive", is_flag=True, help="With --into-dir: stop just before the target, not after."
)
@click.option(
    "--start",
    is_flag=True,
    help="With --into-dir: start the restored server on a free port, wait for recovery, and "
    "report where it stopped.",
)
@click.option("--database", help="Which database of the backup (when it holds several).")
@click.option(
    "-j",
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Parallel pg_restore; >1 spools the decrypted archive to --spool-dir.",
)
@click.option(
    "--spool-dir",
    type=click.Path(file_okay=False, exists=True),
    help="Where --jobs spools (default: TMPDIR).",
)
@click.option("--create", is_flag=True, help="Create the target database if it does not exist.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace a non-empty database: restore into a new database and swap it in only "
    "once the restore succeeded (ends the sessions of the old one); if it fails, the target "
    "is left as it was.",
)
@click.option(
    "--keep-old",
    is_flag=True,
    help="With --force: keep the replaced database as <name>_replaced_<restore id> "
    "(printed) instead of dropping it.",
)
@click.option(
    "--with-globals", is_flag=True, help="Recreate missing roles first (existing ones untouched)."
)
@click.option("--no-owner", is_flag=True, help="Do not restore object ownership.")
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Password for --into (else PGPASSWORD / .pgpass).",
)
@click.option("--json", "as_json", is_flag=True)
@quiet_option
@click.pass_obj
def postgres(state, target: str, into: str | None, into_dir: str | None, **options) -> None:
    """Restore a dump of TARGET into the database at --into, or a base backup and its WAL
    into the empty directory --into-dir, to any point the WAL archive covers.

    The target is never dropped before the backup is restored: --force restores into a
    new database and swaps names after pg_restore succeeded.  A restore in progress marks
    its database (a database comment), so one interrupted is named as a partial restore by
    the next; leftovers of an interrupted --force are removed by the next restore into the
    same database.  A password in --into is passed to pg_restore in its environment, never
    on its command line.
    """
    if (into is None) == (into_dir is None):
        raise UsageError(
            "give exactly one of --into DSN (a dump) or --into-dir DIR (a base backup)"
        )
    opts = RestoreOptions(**options)
    go_quiet(state.app, opts.quiet, ("--json", opts.as_json))
    if into_dir is not None:
        from drbackup.cli import restore_physical

        point = restore_physical.recovery_target(
            opts.pit,
            opts.lsn,
            opts.xid,
            opts.restore_point,
            opts.latest,
            opts.timeline,
            opts.exclusive,
        )
        restore_physical.run(
            state,
            target,
            into_dir,
            point,
            backup_id=opts.backup_id,
            start=opts.start,
            as_json=opts.as_json,
            quiet=opts.quiet,
        )
        return
    _restore_dump(state.app, target, into, opts)


@dataclass(frozen=True)
class RestoreOptions:
    """The options of ``restore postgres`` besides TARGET, --into and --into-dir."""

    backup_id: str | None
    pit: str | None
    lsn: str | None
    xid: int | None
    restore_point: str | None
    latest: bool
    timeline: str
    exclusive: bool
    start: bool
    database: str | None
    jobs: int
    spool_dir: str | None
    create: bool
    force: bool
    keep_old: bool
    with_globals: bool
    no_owner: bool
    password_file: str | None
    as_json: bool
    quiet: bool

    def password(self) -> str | None:
        if self.password_file:
            return Path(self.password_file).read_text(encoding="utf-8").rstrip("\n")
        return os.environ.get("PGPASSWORD")


def _restore_dump(app: AppContext, target: str, into: str, opts: RestoreOptions) -> None:
    """A dump into the database at ``into`` (``--into``)."""
    if (
        opts.lsn
        or opts.xid is not None
        or opts.restore_point
        or opts.latest
        or opts.start
        or opts.exclusive
    ):
        raise UsageError(
            "--lsn, --xid, --restore-point, --latest, --start and --exclusive need --into-dir"
        )
    if opts.keep_old and not opts.force:
        raise UsageError("--keep-old goes with --force", hint="add --force, or drop --keep-old")
    password = opts.password()
    point = user_time(opts.pit) if opts.pit else None
    # The passphrase is stretched in a helper thread while the restore code (psycopg) is
    # imported; its errors are raised where the key is first used.
    app.repository(background_key=True)
    from drbackup.actions.restore_postgres import restore_postgres

    result = restore_postgres(
        app,
        target,
        into,
        backup_id=opts.backup_id,
        point_in_time=point,
        database=opts.database,
        jobs=opts.jobs,
        create=opts.create,
        force=opts.force,
        keep_old=opts.keep_old,
        with_globals=opts.with_globals,
        no_owner=opts.no_owner,
        password=password,
        spool_dir=opts.spool_dir,
        progress=reporter(app, quiet=opts.quiet, as_json=opts.as_json),
    )
    if opts.as_json:
        echo_json(_dump_json(result))
        return
    if not opts.quiet:
        _print_dump(app, target, point, result)
    elif result.kept_old:  # a database left on the server for the user to drop: always said
        click.echo(f"drbackup: note: the previous database is kept as {result.kept_old}", err=True)
    for line in result.warnings:
        click.echo(f"warning: {line}", err=True)


def _dump_json(result) -> dict:
    run = result.run
    return {
        **selection_json(result.selection),
        "database": result.database,
        "into": result.into,
        "phases_s": {k: round(v, 3) for k, v in run.phases.items()},
        "fetch_decrypt_s": round(run.fetch_decrypt_s, 3),
        "elapsed_s": round(run.elapsed_s, 3),
        "bytes": run.bytes,
        "roles_created": result.globals.created if result.globals else [],
        "replaced": result.replaced,
        "kept_old": result.kept_old,
        "removed": result.removed,
        "warnings": result.warnings,
    }


def _print_dump(app: AppContext, target: str, point: datetime | None, result) -> None:
    click.echo(f"using {result.selection.note}")
    if point is not None:
        from drbackup.actions.pitr import exact_restore_note

        note = exact_restore_note(app.repository(), target, point)
        if note:
            click.echo(f"note: {note}")
    for line in result.removed:
        click.echo(line)
    if result.replaced:
        click.echo(result.replaced)
    if result.kept_old:
        click.echo(f"the previous database is kept as {result.kept_old}")
    if result.globals:
        g = result.globals
        click.echo(
            f"globals: {len(g.created)} role(s) created, {len(g.existing)} already present"
            + (f", {len(g.skipped)} tablespace statement(s) skipped" if g.skipped else "")
        )
    run, p = result.run, result.run.phases
    click.echo(
        f"restored {result.database} into {result.into}: {human_size(run.bytes)} archive in {run.elapsed_s:.1f}s "
        f"(fetch/decrypt {run.fetch_decrypt_s:.1f}s, pre-data {p['pre_data']:.1f}s, "
        f"data {p['data']:.1f}s, post-data {p['post_data']:.1f}s)"
    )


COMMANDS = [restore]
