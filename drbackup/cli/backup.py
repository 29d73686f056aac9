"""``drbackup backup postgres TARGET...``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from drbackup.actions.backup_postgres import backup_targets
from drbackup.actions.repository import backup_summary
from drbackup.cli.render import echo_json, go_quiet, human_size, quiet_option, reporter
from drbackup.cli.targets import chosen_targets

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext


@click.group("backup")
def backup() -> None:
    """Take a backup into the repository."""


@backup.command("postgres")
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@click.option("--all", "all_targets", is_flag=True, help="Every target under postgres:.")
@click.option(
    "--parallel",
    default=2,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Targets backed up at once.",
)
@click.option(
    "--physical",
    is_flag=True,
    help="A base backup of the whole server (for point-in-time restores) instead of pg_dump.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the backup records as JSON.")
@quiet_option
@click.pass_obj
def postgres(
    state,
    targets: tuple[str, ...],
    all_targets: bool,
    parallel: int,
    physical: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """pg_dump each database of TARGET(s), with globals and an integrity fingerprint; or,
    with --physical, a base backup of each TARGET's server (docs/pitr.md)."""
    app = state.app
    names = chosen_targets(targets, all_targets, (), list(app.config.postgres))
    if not names:
        raise click.UsageError("name a target (see 'drbackup config check') or use --all")
    for name in names:
        app.config.target(name)  # unknown names fail before any work
    go_quiet(app, quiet, ("--json", as_json))
    if physical:
        _physical(app, names, as_json, quiet)
        return
    shown = reporter(app, quiet=quiet, as_json=as_json, parallel=len(names) > 1)
    manifests = backup_targets(app, names, max_parallel=parallel, progress=shown)
    if as_json:
        echo_json(
            [backup_summary(m) for m in manifests]
            if len(manifests) > 1
            else backup_summary(manifests[0])
        )
        return
    if quiet:
        return
    for m in manifests:
        dbs = [i for i in m.items if i.type == "pg_dump"]
        click.echo(
            f"backup {m.target}/{m.backup_id} complete: {len(dbs)} database(s), "
            f"{human_size(m.size)} dumped, {human_size(m.stored_size)} stored, "
            f"recovery point {m.recovery_point}"
        )


def _physical(app: AppContext, names: list[str], as_json: bool, quiet: bool) -> None:
    from drbackup.actions.backup_physical import backup_physical

    shown = reporter(app, quiet=quiet, as_json=as_json)
    manifests = [backup_physical(app, name, progress=shown) for name in names]
    if as_json:
        records = [backup_summary(m) for m in manifests]
        echo_json(records if len(records) > 1 else records[0])
        return
    for m in [] if quiet else manifests:
        meta = m.meta
        click.echo(
            f"backup {m.target}/{m.backup_id} complete: base backup of cluster {meta['cluster']}, "
            f"{human_size(m.size)} read, {human_size(m.stored_size)} stored, "
            f"WAL {meta['start_lsn']}..{meta['stop_lsn']} on timeline {meta['timeline']} archived, "
            f"restorable from {m.recovery_point}"
        )


COMMANDS = [backup]
