"""``drbackup drill-bucket TARGET [--snapshot ID] [--json]`` (folded into ``drill run`` later)."""

from __future__ import annotations

import click

from drbackup.actions.restore_minio import drill_bucket
from drbackup.cli.render import echo_json
from drbackup.errors import CheckFailedError

MARKS = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL"}


@click.command("drill-bucket")
@click.argument("target")
@click.option("--snapshot", "snapshot_id", metavar="ID", help="Snapshot id (default: latest).")
@click.option(
    "--workers", default=8, show_default=True, type=click.IntRange(1, 64), help="Objects at once."
)
@click.option("--json", "as_json", is_flag=True, help="Print the drill result as JSON.")
@click.pass_obj
def drill_bucket_command(state, target: str, snapshot_id, workers: int, as_json: bool) -> None:
    """Restore a bucket snapshot into a scratch bucket and verify every object.

    Exit code 3 when a check fails.  The scratch bucket (drbackup-drill-...) is removed.
    """
    result = drill_bucket(state.app, target, snapshot_id=snapshot_id, workers=workers)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(f"bucket drill of {result.target}/{result.backup_id}: {result.status}")
        for check in result.checks:
            click.echo(f"  {MARKS[check.status]}  {check.name:<9} {check.summary}")
    if result.failed:
        names = ", ".join(sorted({c.name for c in result.failed}))
        raise CheckFailedError(
            f"bucket drill of {result.target} failed: {len(result.failed)} check(s) failed ({names})"
        )


COMMANDS = [drill_bucket_command]
