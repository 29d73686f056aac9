"""Rendering helpers shared by commands: tables, sizes, JSON, progress bars."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import datetime

import click

from drbackup.errors import UsageError
from drbackup.times import assumed_zone
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


def user_time(text: str) -> datetime:
    """A time the user typed (``--point-in-time``); says on stderr which zone a time
    without one was read in, so that 10:00 meant in Paris is not silently 10:00 UTC."""
    from drbackup.actions.selection import parse_time  # only commands that take a time

    value = parse_time(text)
    zone = assumed_zone(text)
    if zone is not None:
        click.echo(
            f"drbackup: note: {text.strip()} has no zone: read as {zone} "
            f"({value.isoformat()}); add Z or an offset such as +01:00 to say so",
            err=True,
        )
    return value


def quiet_option(command):
    """``-q/--quiet``: for cron, where any output is mail (see :func:`go_quiet`)."""
    return click.option(
        "-q",
        "--quiet",
        is_flag=True,
        help="Print nothing when it succeeds (no progress, no summary); warnings and errors "
        "still go to stderr. For cron.",
    )(command)


def go_quiet(app, quiet: bool, *others: tuple[str, bool]) -> None:
    """Apply ``--quiet``: no progress bar; refuse it beside an option that asks for output
    (``("--json", as_json)``).  The command itself skips its success lines."""
    for name, given in others:
        if quiet and given:
            raise UsageError(f"--quiet and {name} exclude each other", hint="drop one of them")
    if quiet:
        app.progress = False


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
