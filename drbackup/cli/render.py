"""Rendering helpers shared by commands: tables, sizes, JSON, progress."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime

import click

from drbackup.actions.progress import Progress
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


class Reporter(Progress):
    """The phases of a command's actions on stderr (see ``actions/progress.py``).

    ``mode``: ``"bar"`` draws a bar per phase on a terminal (click's: bytes so far, the
    total, the rate, and the time left when the total is known; ``~`` marks an estimate);
    ``"lines"`` prints one line per phase when it ends (``backup app: dumped 1.2 GiB in
    14.2 s (86.0 MiB/s)``), for logs and pipes; ``"off"`` prints nothing (--quiet, --json).
    Phases run in parallel (``backup --all``) share one terminal: the first draws its bar,
    the others print their line.  A phase that fails prints nothing: the error says it.
    A note (what a phase does that moves no bytes) shows beside its bar on a terminal.
    """

    REDRAW_S = 0.1  # a bar is redrawn at most this often (reads come in 1 MiB blocks)

    def __init__(self, mode: str, file=None):
        self.mode = mode
        self.file = file if file is not None else sys.stderr
        self._lock = threading.Lock()
        self._drawing = False
        self._bars: dict[str, tuple[_Count, Callable[[], None]]] = {}  # label: count, redraw

    @property
    def wants_total(self) -> bool:
        return self.mode == "bar"  # a line says bytes and rate only

    @contextmanager
    def phase(self, label, verb, total=None, *, estimate=False):
        if self.mode == "off":
            yield _no_tick
            return
        count = _Count(total, estimate)
        with self._lock:
            draw = self.mode == "bar" and not self._drawing
            self._drawing = self._drawing or draw
        try:
            if draw:
                with self._bar(label, count) as tick:
                    yield tick
            else:
                yield count.add
        finally:
            if draw:
                with self._lock:
                    self._drawing = False
        if not draw:
            click.echo(f"{label}: {verb} {count.summary()}", file=self.file)

    def note(self, label, text):
        """Beside the bar of ``label``, if one is drawn; a line per phase says no more (the
        command's summary has the time of what the note names)."""
        with self._lock:
            if label in self._bars:
                count, redraw = self._bars[label]
                count.note = text
                redraw()

    @contextmanager
    def _bar(self, label: str, count: _Count):
        with click.progressbar(
            (x for x in ()),  # no length: a bar without a total shows no percentage
            length=count.total or None,
            label=label,
            file=self.file,
            show_eta=True,
            show_percent=bool(count.total),
            item_show_func=lambda _: count.shown(),
        ) as bar:
            pending, last = [0], [0.0]

            def redraw() -> None:  # under self._lock
                if pending[0]:
                    bar.update(pending[0])
                else:
                    bar.render_progress()
                pending[0], last[0] = 0, time.monotonic()

            def tick(nbytes: int) -> None:
                with self._lock:
                    if label not in self._bars:
                        return  # read after the phase ended (a stream's last bytes)
                    if count.late is not None:  # a total found beside the work: now it is
                        count.total, count.late = count.late(), None
                        bar.length, bar.show_percent = count.total or None, bool(count.total)
                    count.add(nbytes)
                    pending[0] += nbytes
                    if time.monotonic() - last[0] >= self.REDRAW_S:
                        redraw()

            self._bars[label] = (count, redraw)
            try:
                yield tick
            finally:
                with self._lock:
                    del self._bars[label]
                    redraw()


def _no_tick(nbytes: int) -> None:
    return None


class _Count:
    """The bytes of one phase, and how they read: ``1.2 GiB of ~3.4 GiB, 86.0 MiB/s``.

    Its time runs from the start to the last bytes: what follows them inside the phase
    (pg_restore building indexes after reading the archive, a manifest's upload) is not
    the phase's bytes' time."""

    def __init__(self, total, estimate: bool):
        # a function: asked at the first bytes (actions/progress.py, estimate_beside)
        self.late = total if callable(total) else None
        self.total = None if callable(total) else total
        self.estimate = estimate
        self.done = 0
        self.started = time.monotonic()
        self.last: float | None = None  # when the last bytes came
        self.note = ""  # what the phase does now that moves no bytes (Reporter.note)
        self._lock = threading.Lock()  # workers of a bucket restore add at once

    def add(self, nbytes: int) -> None:
        with self._lock:
            self.done += nbytes
            self.last = time.monotonic()

    def elapsed(self) -> float:
        return (self.last if self.last is not None else time.monotonic()) - self.started

    def rate(self) -> float:
        return self.done / max(self.elapsed(), 1e-3)

    def shown(self) -> str:
        of = ""
        if self.total:
            of = f" of {'~' if self.estimate else ''}{human_size(self.total)}"
        note = f"; {self.note}" if self.note else ""
        return f"{human_size(self.done)}{of}, {human_size(int(self.rate()))}/s{note}"

    def summary(self) -> str:
        rate = human_size(int(self.rate()))
        return f"{human_size(self.done)} in {self.elapsed():.1f} s ({rate}/s)"


def reporter(app, *, quiet: bool = False, as_json: bool = False, parallel=False) -> Reporter:
    """The command's progress: a bar when stderr is a terminal, else a line per phase;
    nothing with ``--quiet``, nor beside ``--json`` when stderr is not a terminal.
    ``parallel``: phases run at once (several targets), where bars would overwrite each
    other: a line per phase on a terminal too."""
    if quiet:
        return Reporter("off")
    if app.progress:
        return Reporter("lines" if parallel else "bar")
    return Reporter("off" if as_json else "lines")
