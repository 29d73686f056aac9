"""``drbackup export ID -o FILE``."""

from __future__ import annotations

import click

from drbackup.actions.export import export_backup


@click.command("export")
@click.argument("backup_id")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False),
    help="Where to write the pg_dump archive (globals go to FILE.globals.sql).",
)
@click.option("--database", help="Which database of the backup (when it holds several).")
@click.pass_obj
def export(state, backup_id: str, output: str, database: str | None) -> None:
    """Write a backup as a standard, decrypted pg_dump archive (use pg_restore on it)."""
    for path in export_backup(state.app, backup_id, output, database=database):
        click.echo(f"wrote {path}")


COMMANDS = [export]
