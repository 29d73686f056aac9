"""``drbackup backup all [TARGET...]`` and ``drbackup recovery-points [--json]``."""

from __future__ import annotations

import click

from drbackup.cli.backup import backup
from drbackup.cli.render import echo_json, echo_table, go_quiet, quiet_option
from drbackup.cli.targets import all_option, chosen_targets, old_target_option


@backup.command("all")
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@all_option("postgres and minio target (the default)")
@old_target_option("--targets", comma_separated=True)
@click.option(
    "--parallel",
    default=2,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Database targets backed up at once.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the recovery point as JSON.")
@quiet_option
@click.pass_obj
def backup_all_command(
    state,
    targets: tuple[str, ...],
    all_targets: bool,
    old_targets,
    parallel: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Back up the databases, then snapshot the buckets of TARGET(s) (default: every
    target), and record one recovery point."""
    # Imported here: the bucket client it pulls in (~0.3 s) would delay every
    # `backup postgres`, which loads this module to attach `backup all`.
    from drbackup.actions.recovery_point import backup_all, select_members

    app = state.app
    names = chosen_targets(targets, all_targets, old_targets)
    go_quiet(app, quiet, ("--json", as_json))
    members = select_members(app.config, names or None)
    doc = backup_all(app, members, max_parallel=parallel)
    if as_json:
        echo_json(doc)
        return
    if quiet:
        return
    click.echo(f"recovery point {doc['id']} complete: {len(doc['members'])} member(s)")
    for m in doc["members"]:
        click.echo(f"  {m['kind']} {m['target']}/{m['backup_id']} at {m['recovery_point']}")


@click.command("recovery-points")
@click.option("--json", "as_json", is_flag=True, help="Print the recovery points as JSON.")
@click.pass_obj
def recovery_points(state, as_json: bool) -> None:
    """List the recovery points of 'backup all', oldest first."""
    from drbackup.actions.recovery_point import list_recovery_points

    docs = list_recovery_points(state.app)
    if as_json:
        echo_json(docs)
        return
    rows = [
        [
            d["id"],
            d.get("finished_at", ""),
            ", ".join(f"{m['target']}/{m['backup_id']}" for m in d.get("members", [])),
        ]
        for d in docs
    ]
    echo_table(["id", "finished", "members"], rows)


COMMANDS = [recovery_points]
