"""``drbackup demo``: the README quick start."""

from __future__ import annotations

import os
import shutil
import sys
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
    program = f"{_program()} -c {config_path}"
    for command in ("list", f"show {backup_id}", f"verify {backup_id}", "drill history", "report"):
        click.echo(f"  {program} {command}")


def _program() -> str:
    """How to run this drbackup again from here: ``drbackup`` when PATH finds this one,
    else its path (relative below the current directory: ``.venv/bin/drbackup``)."""
    invoked = Path(sys.argv[0]).absolute()
    if invoked.name != "drbackup":
        return "drbackup"  # python -m drbackup, a test runner: no better name
    found = shutil.which("drbackup")
    if found and Path(found).absolute() == invoked:
        return "drbackup"
    relative = os.path.relpath(invoked)
    return relative if not relative.startswith("..") else str(invoked)


COMMANDS = [demo]
