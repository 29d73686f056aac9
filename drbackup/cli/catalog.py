"""``drbackup catalog rebuild``."""

from __future__ import annotations

import click

from drbackup.actions.repository import rebuild_catalog


@click.group("catalog")
def catalog() -> None:
    """The local index of the repository (rebuildable from it)."""


@catalog.command("rebuild")
@click.pass_obj
def rebuild(state) -> None:
    """Recreate the catalog's backup index from the repository alone."""
    result = rebuild_catalog(state.app)
    click.echo(
        f"catalog rebuilt from {state.app.storage.url}: {result.added} added, "
        f"{result.removed} removed, {result.unchanged} unchanged"
    )


COMMANDS = [catalog]
