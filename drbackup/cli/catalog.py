"""``drbackup catalog rebuild``."""

from __future__ import annotations

import click

from drbackup.actions.repository import damage_found, rebuild_catalog
from drbackup.cli.render import echo_json


@click.group("catalog")
def catalog() -> None:
    """The local index of the repository (rebuildable from it)."""


@catalog.command("rebuild")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print {repository, added, removed, updated, unchanged, unreadable} as JSON.",
)
@click.pass_obj
def rebuild(state, as_json: bool) -> None:
    """Recreate the catalog's backup index from the repository alone.

    Exit 3 (after the summary) when a backup manifest is damaged.
    """
    result = rebuild_catalog(state.app)
    if as_json:
        echo_json(_rebuild_json(state.app.storage.url, result))
    else:
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


def _rebuild_json(url: str, result) -> dict:
    return {
        "repository": url,
        "added": result.added,
        "removed": result.removed,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "unreadable": list(result.unreadable),
    }


COMMANDS = [catalog]
