"""``drbackup catalog rebuild``."""

from __future__ import annotations

import click

from drbackup.actions.repository import damage_found, rebuild_catalog


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
        + (f", {result.updated} updated" if result.updated else "")
    )
    if result.unreadable:
        raise damage_found(
            f"{len(result.unreadable)} backup manifest(s) are damaged:",
            result.unreadable,
            hint="those backups cannot be restored; 'drbackup list' shows the others",
        )


COMMANDS = [catalog]
