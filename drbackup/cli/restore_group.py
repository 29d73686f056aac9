"""``drbackup restore group NAME --point-in-time T``: attaches ``group`` to the restore group."""

from __future__ import annotations

import click

from drbackup.actions.selection import parse_time
from drbackup.cli.render import echo_json
from drbackup.cli.restore import restore


@restore.command("group")
@click.argument("name")
@click.option(
    "--point-in-time", "pit", required=True, metavar="TIME",
    help="The second to restore the database and its buckets to (ISO 8601, UTC if no zone).",
)  # fmt: skip
@click.option("--into", metavar="DSN", help="Database to restore the nearest dump into.")
@click.option(
    "--into-dir", metavar="DIR",
    help="Empty directory for a base backup and WAL up to TIME (preferred when one reaches it).",
)  # fmt: skip
@click.option(
    "--bucket-suffix", default="-restored", show_default=True, metavar="SUFFIX",
    help="Each bucket is restored into <bucket><SUFFIX>.",
)  # fmt: skip
@click.option(
    "--start", is_flag=True,
    help="With --into-dir: start the restored server (left running) and check references.",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Say what would be restored; write nothing.")
@click.option("--force", is_flag=True, help="Restore into a non-empty database or bucket.")
@click.option("--create", is_flag=True, help="Create the --into database if it does not exist.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def group(state, name, pit, into, into_dir, bucket_suffix, start, dry_run, force, create, as_json):
    """Restore group NAME's database and buckets to the same second, then check that the
    rows naming objects find them (exit 3 if not)."""
    from drbackup.actions.restore_group import restore_group
    from drbackup.errors import CheckFailedError

    result = restore_group(
        state.app, name, parse_time(pit), into=into, into_dir=into_dir, suffix=bucket_suffix,
        dry_run=dry_run, force=force, create=create, start=start,
    )  # fmt: skip
    if as_json:
        echo_json(_as_dict(result))
    else:
        _echo(result)
    if result.failed:
        failed = [r.summary for r in result.references if r.status == "fail"]
        raise CheckFailedError(f"group {name} at {pit}: " + "; ".join(failed))


def _as_dict(result) -> dict:
    database = {k: v for k, v in result.database.items() if k != "dsn"}
    return {
        "group": result.group,
        "point_in_time": result.at.isoformat(),
        "dry_run": result.dry_run,
        "database": database,
        "buckets": result.buckets,
        "references": [
            {"status": r.status, "summary": r.summary, "evidence": r.evidence}
            for r in result.references
        ],
    }


def _echo(result) -> None:
    verb = "would restore" if result.dry_run else "restored"
    db = result.database
    click.echo(
        f"database {db['target']}: {verb} to {db['reached']} by {db['method']} ({db['note']})"
    )
    for b in result.buckets:
        click.echo(
            f"bucket {b['bucket']} ({b['target']}): {verb} to {b['reached']} from its "
            f"{b['method']} into {b['into_bucket']}, {b['objects']} objects"
        )
    for r in result.references:
        click.echo(f"references: {r.status}: {r.summary}")


COMMANDS: list = []  # the command is attached to the `restore` group above
