"""``drbackup demo``: the README quick start."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    default=".drbackup-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo keeps its repository and config.",
)
@click.option("--keep-server", is_flag=True, help="Leave the throwaway PostgreSQL running.")
def demo(directory: str, keep_server: bool) -> None:
    """Back up, verify, restore and drill a sample database on a throwaway PostgreSQL."""
    from drbackup.actions.demo import run_demo

    done = run_demo(Path(directory).absolute(), keep_server, click.echo)
    for warning in done.warnings:
        click.echo(f"drbackup: warning: {warning}", err=True)
    config_path, backup_id = done.config_path, done.backup_id
    click.echo("\nexplore the repository (the throwaway server is gone; the backups stay):")
    click.echo(f"  .venv/bin/drbackup -c {config_path} list")
    click.echo(f"  .venv/bin/drbackup -c {config_path} show {backup_id}")
    click.echo(f"  .venv/bin/drbackup -c {config_path} verify {backup_id}")
    click.echo(f"  .venv/bin/drbackup -c {config_path} drill history")
    click.echo(f"  .venv/bin/drbackup -c {config_path} report")


COMMANDS = [demo]
