"""Rendering helpers shared by commands: tables, sizes, JSON, progress bars."""

from __future__ import annotations

import json
from contextlib import contextmanager

import click

from drbackup.units import human_size  # noqa: F401 - re-exported for commands


def selection_json(selection) -> dict:
    """The backup a restore chose (``actions.selection.Selection``), in every restore's JSON."""
    m = selection.manifest
    return {
        "backup_id": m.backup_id,
        "target": m.target,
        "recovery_point": m.recovery_point,
        "selection": selection.note,
    }


def echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def echo_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [
        max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(h)
        for i, h in enumerate(headers)
    ]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@contextmanager
def progress(enabled: bool, total: int | None, label: str):
    """Yield a callback ``advance(nbytes)``; draws a bar on a terminal, nothing in cron."""
    if not enabled:
        yield lambda n: None
        return
    with click.progressbar(
        length=total or 0,
        label=label,
        file=click.get_text_stream("stderr"),
        show_pos=False,
        show_percent=total is not None,
    ) as bar:
        yield bar.update
