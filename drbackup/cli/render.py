"""Rendering helpers shared by commands: tables, sizes, JSON, progress."""

from __future__ import annotations

import json
import math
import os
import shutil
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

    ``mode``: ``"bar"`` draws a bar per phase on a terminal (bytes so far, the total, the
    rate, and the time left when the total is known; ``~`` marks an estimate), fitted into
    the terminal's width, and replaces it by the phase's line when the phase ends;
    ``"lines"`` prints one line per phase when it ends (``backup app: dumped 1.2 GiB in
    14.2 s (86.0 MiB/s)``), for logs and pipes; ``"off"`` prints nothing (--quiet, --json).
    Phases run in parallel (``backup --all``) share one terminal: the first draws its bar,
    the others print their line.  A phase that fails prints nothing (its bar is erased):
    the error says it.  A note (what a phase does that moves no bytes) shows beside its
    bar on a terminal.
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
                with self._bar(label, verb, count) as tick:
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
    def _bar(self, label: str, verb: str, count: _Count):
        bar = _Bar(label, count, self.file)
        last = [0.0]

        def redraw() -> None:  # under self._lock
            bar.draw()
            last[0] = time.monotonic()

        def tick(nbytes: int) -> None:
            with self._lock:
                if label not in self._bars:
                    return  # read after the phase ended (a stream's last bytes)
                found = count.late is not None  # a total found beside the work: now it is
                if found:
                    count.total, count.late = count.late(), None
                count.add(nbytes)
                if found or time.monotonic() - last[0] >= self.REDRAW_S:
                    redraw()

        with self._lock:
            self._bars[label] = (count, redraw)
            redraw()
        try:
            yield tick
        except BaseException:
            with self._lock:
                del self._bars[label]
                bar.end(None)  # the error says what happened, on this line
            raise
        with self._lock:
            del self._bars[label]
            bar.end((f"{verb} {count.summary()}", f"{verb} {count.summary(rate=False)}"))


class _Bar:
    """A phase's line on a terminal, redrawn in place (see :func:`bar_line`) and, when the
    phase ends, replaced by its summary (succeeded) or erased (failed: the error follows).

    Each drawing starts with a carriage return and ends by erasing the rest of the line
    (what a longer previous one left); the cursor is hidden while the bar runs."""

    HIDE, SHOW, ERASE = "\x1b[?25l", "\x1b[?25h", "\x1b[K"

    def __init__(self, label: str, count: _Count, file):
        self.label, self.count, self.file = label, count, file

    def draw(self) -> None:
        line = bar_line(self.label, self.count, terminal_columns(self.file))
        self._write(f"\r{self.HIDE}{line}{self.ERASE}")

    def end(self, summary: tuple[str, ...] | None) -> None:
        """``label: summary`` in place of the bar (the line ``lines`` mode prints: the
        real size, the time, the rate; then shorter versions, for a narrow terminal), or
        no line (``None``)."""
        if summary is None:
            self._write(f"\r{self.ERASE}{self.SHOW}")
        else:
            line = fit(self.label, ": ", summary, terminal_columns(self.file) - 1)
            self._write(f"\r{line}{self.ERASE}{self.SHOW}\n")

    def _write(self, text: str) -> None:
        self.file.write(text)
        self.file.flush()


BAR_MIN, BAR_MAX = 10, 40  # the bar's width: under BAR_MIN there is none
NOTE_MIN = 12  # a note shortened to fewer characters says too little: none instead
LABEL_MIN = 16  # a label is cut no shorter while a part of the line can go instead
TIME_LEFT = len("  00:00:00")  # kept for the time left: the bar keeps its width when it shows


def bar_line(label: str, count: _Count, columns: int) -> str:
    """``restore app  [#####---]  40%  00:00:06  40.0 MiB of 100.0 MiB, 10.0 MiB/s; note``
    in ``columns`` - 1 characters (a line as wide as the terminal wraps on some, and a
    wrapped line stays behind at each redraw).  What gives way, in turn: the bar's width
    (then the bar); beside a note, the percentage, the time left and the rate, then the
    note (shortened, then left out); the percentage (the sizes say it too), the time left,
    the rate, each time the label first shortened (with ``...``) to ``LABEL_MIN``."""
    room = max(columns - 1, 1)
    note = f"; {count.note}" if count.note else ""
    pct, left, sizes = count.percent(), count.time_left(), count.sizes()
    info = "  ".join(s for s in (pct, left, count.shown()) if s)
    kept = TIME_LEFT if count.total and not left and count.done < count.total else 0
    width = min(room - len(f"{label}  []  {info}{note}") - kept, BAR_MAX)
    if width >= BAR_MIN:
        return f"{label}  [{count.bar(width)}]  {info}{note}"
    if note:  # the bytes are read (pg_restore at work): the note says more than the rate
        for text in (info, count.shown(), sizes):
            if len(f"{label}  {text}{note}") <= room:
                return f"{label}  {text}{note}"
        line = f"{label}  {sizes}"
        if room - len(line) >= len("; ") + NOTE_MIN:
            return line + _cut(note, room - len(line))
    shorter = ("  ".join(s for s in (left, count.shown()) if s), count.shown(), sizes)
    return fit(label, "  ", (info, *shorter), room)


def fit(label: str, sep: str, texts: tuple[str, ...], room: int) -> str:
    """``label`` + ``sep`` + the first of ``texts`` (each shorter than the one before) that
    fits in ``room`` characters, the label shortened to no less than ``LABEL_MIN``; else
    the last, the label shortened further, the end cut."""
    for text in texts:
        if len(label + sep + text) <= room:
            return label + sep + text
        if room - len(sep + text) >= LABEL_MIN:  # in steps: not a jump at each redraw
            return _cut(label, max((room - len(sep + text)) // 8 * 8, LABEL_MIN)) + sep + text
    label = _cut(label, max(room - len(sep + texts[-1]), LABEL_MIN // 2))
    return _cut(label + sep + texts[-1], room)


def _cut(text: str, room: int) -> str:
    return text if len(text) <= room else text[: max(room - 3, 0)] + "..."[:room]


def terminal_columns(file) -> int:
    """The width of the terminal ``file`` draws on, asked at each redraw (one ioctl), so
    that a resized window fits the next one: its own, else $COLUMNS or stdout's, else 80."""
    try:
        columns = os.get_terminal_size(file.fileno()).columns
    except (AttributeError, OSError, ValueError):  # not a file (a test's), or not a terminal
        columns = 0
    return columns or shutil.get_terminal_size().columns


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
        return f"{self.sizes()}, {human_size(int(self.rate()))}/s"

    def sizes(self) -> str:
        if not self.total:
            return human_size(self.done)
        return f"{human_size(self.done)} of {'~' if self.estimate else ''}{human_size(self.total)}"

    def percent(self) -> str:
        """`` 40%`` (aligned, as the bar redraws), or "" without a total."""
        return f"{int(min(self.done / self.total, 1.0) * 100):3d}%" if self.total else ""

    def time_left(self) -> str:
        """``00:01:40`` at the rate so far, once a second has passed; "" without a total or
        past it (an estimate too low)."""
        if not self.total or not self.done or self.done >= self.total or self.elapsed() < 1:
            return ""
        minutes, seconds = divmod(int((self.total - self.done) / self.rate()), 60)
        hours, minutes = divmod(minutes, 60)
        days, hours = divmod(hours, 24)
        return f"{f'{days}d ' if days else ''}{hours:02}:{minutes:02}:{seconds:02}"

    def bar(self, width: int) -> str:
        """``#####-----``: the part done; without a total, a mark that comes and goes."""
        if self.total:
            done = int(min(self.done / self.total, 1.0) * width)
            return "#" * done + "-" * (width - done)
        at = int((math.cos(self.elapsed()) / 2 + 0.5) * (width - 1))
        return "-" * at + "#" + "-" * (width - 1 - at)

    def summary(self, rate: bool = True) -> str:
        said = f"{human_size(self.done)} in {self.elapsed():.1f} s"
        return f"{said} ({human_size(int(self.rate()))}/s)" if rate else said


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
