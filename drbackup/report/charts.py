"""Chart geometry for the status page and the HTML reports: pure functions from numbers to
shapes.  ``templates/charts.html`` draws the shapes as inline SVG (no script, no external
asset); every chart carries a title and a description (its text alternative, read by screen
readers) and the page shows its numbers in a table beside it.

Coordinates are in the chart's viewBox (``WIDTH`` x ``HEIGHT``); the SVG scales to the width
of its box, so the same chart serves a phone and a wide screen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

WIDTH, HEIGHT = 400, 170
LEFT, RIGHT, TOP, BOTTOM = 64, 10, 12, 24  # margins around the plot (axis labels: "2.5 MiB")
MAX_BAR = 26.0


@dataclass(frozen=True)
class Tick:
    """An axis label at ``pos`` (x for a horizontal axis, y for a vertical one)."""

    pos: float
    label: str
    anchor: str = "middle"  # text-anchor of the label


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    css: str  # the series' class (colour)
    label: str  # what a pointer hover shows (the SVG <title>)


@dataclass(frozen=True)
class Marker:
    """A point without a bar: a failed drill with no time (an x on the baseline), a restore
    point on a timeline (a dot)."""

    x: float
    y: float
    css: str
    label: str


@dataclass(frozen=True)
class Rule:
    """A labelled line across the plot (an objective), from (x1, y1) to (x2, y2)."""

    x1: float
    y1: float
    x2: float
    y2: float
    css: str
    label: str
    label_x: float
    label_y: float
    anchor: str = "end"


@dataclass(frozen=True)
class Band:
    """A span of a timeline (the continuous WAL window)."""

    x: float
    y: float
    width: float
    height: float
    css: str
    label: str


@dataclass(frozen=True)
class Note:
    """A line of text in the plot."""

    x: float
    y: float
    text: str


@dataclass(frozen=True)
class Chart:
    """What ``charts.html`` draws: an ``id`` unique on the page (for aria-labelledby)."""

    id: str
    title: str
    description: str
    bars: tuple[Bar, ...] = ()
    markers: tuple[Marker, ...] = ()
    rules: tuple[Rule, ...] = ()
    bands: tuple[Band, ...] = ()
    x_ticks: tuple[Tick, ...] = ()
    y_ticks: tuple[Tick, ...] = ()
    lanes: tuple[Tick, ...] = ()  # row labels of a timeline (y)
    notes: tuple[Note, ...] = ()
    width: int = WIDTH
    height: int = HEIGHT
    plot: tuple[float, float, float, float] = (LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM)


@dataclass(frozen=True)
class Value:
    """One bar's input: ``value`` None draws a marker instead (nothing was measured)."""

    value: float | None
    css: str
    label: str
    inner: float | None = None  # a second, narrower bar inside (stored bytes in size)
    inner_css: str = ""


# -- bar charts ---------------------------------------------------------------------------------


def bar_chart(
    chart_id: str,
    title: str,
    description: str,
    values: Sequence[Value],
    *,
    fmt: Callable[[float], str],
    x_labels: Sequence[str] = (),
    objectives: Sequence[tuple[float, str, str]] = (),
    nice: Callable[[float], float] | None = None,
) -> Chart:
    """Bars evenly spaced, oldest left; ``objectives`` (value, label, css) as horizontal
    rules.  The y axis starts at 0 and ends at a round number (``nice``: of seconds, bytes,
    or plain) above every value and rule."""
    left, top, right, bottom = LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM
    if not values:  # an axis with made-up numbers would say more than is known
        note = Note((left + right) / 2 - 30, (top + bottom) / 2, "nothing yet")
        return Chart(chart_id, title, description, notes=(note,))
    known = [v.value for v in values if v.value is not None]
    top_value = (nice or nice_ceiling)(max([*known, *(o[0] for o in objectives), 0.0]) * 1.08)
    scale = _linear(0.0, top_value, bottom, top)
    slot = (right - left) / max(len(values), 1)
    width = min(slot * 0.7, MAX_BAR)
    bars, markers = [], []
    for i, v in enumerate(values):
        x = left + i * slot + (slot - width) / 2
        if v.value is None:
            markers.append(Marker(x + width / 2, bottom - 6, v.css, v.label))
            continue
        bars.append(_bar(x, width, v.value, scale, bottom, v.css, v.label))
        if v.inner is not None:
            inset = width * 0.25
            bars.append(_bar(x + inset, width - 2 * inset, v.inner, scale, bottom, v.inner_css, ""))
    rules = [  # the first objective labelled at the right, the others at the left
        Rule(left, scale(value), right, scale(value), css, label, *_rule_label(i, scale(value)))
        for i, (value, label, css) in enumerate(objectives)
    ]
    y_ticks = [Tick(scale(t), fmt(t)) for t in (0.0, top_value / 2, top_value)]
    x_ticks = _spread_labels(x_labels, left, slot)
    return Chart(
        chart_id,
        title,
        description,
        bars=tuple(bars),
        markers=tuple(markers),
        rules=tuple(rules),
        x_ticks=tuple(x_ticks),
        y_ticks=tuple(y_ticks),
    )


def _rule_label(index: int, y: float) -> tuple[float, float, str]:
    if index == 0:
        return WIDTH - RIGHT, y - 4, "end"
    return LEFT + 4, y + 12, "start"


def _bar(x, width, value, scale, bottom, css, label) -> Bar:
    y = scale(value)
    height = max(bottom - y, 1.0 if value > 0 else 0.0)  # a tiny value stays visible
    return Bar(
        round(x, 2), round(bottom - height, 2), round(width, 2), round(height, 2), css, label
    )


def _spread_labels(labels: Sequence[str], left: float, slot: float) -> list[Tick]:
    """The first, the last and (with room) the middle label under their bars."""
    if not labels:
        return []
    picks = sorted({0, len(labels) - 1} | ({len(labels) // 2} if len(labels) >= 5 else set()))
    return [Tick(round(left + i * slot + slot / 2, 2), labels[i]) for i in picks]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 (times a power of ten) at or above ``value``; 1 for 0."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return step * power
    return 10 * power


SECOND_STEPS = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200)
SECOND_STEPS += (10800, 14400, 21600, 43200, 86400)


def nice_seconds(value: float) -> float:
    """A round duration at or above ``value``: 1s 2s 5s 10s 15s 20s 30s 1m 2m 5m 10m 15m
    20m 30m 1h 2h 3h 4h 6h 12h 1d, then whole days."""
    step = next((s for s in SECOND_STEPS if s >= value * (1 - 1e-9)), None)
    return float(step) if step is not None else nice_ceiling(value / 86400) * 86400


def nice_bytes(value: float) -> float:
    """A round size at or above ``value``, in binary units (10 MiB, 2.5 GiB)."""
    if value <= 1:
        return 1.0
    unit = 1024 ** min(int(math.log(value, 1024)), 4)
    return nice_ceiling(value / unit) * unit


def _linear(domain_lo: float, domain_hi: float, range_lo: float, range_hi: float):
    span = (domain_hi - domain_lo) or 1.0

    def scale(value: float) -> float:
        return range_lo + (value - domain_lo) / span * (range_hi - range_lo)

    return scale


# -- timelines ----------------------------------------------------------------------------------

LANE_POINTS, LANE_WAL = 42.0, 92.0  # y of the rows: logical restore points, WAL window


def timeline(
    chart_id: str,
    title: str,
    description: str,
    *,
    now: datetime,
    points: Sequence[datetime],
    wal: tuple[datetime, datetime] | None,
    rpo: timedelta,
) -> Chart:
    """Restore points (dots) and the continuous WAL window (a band) on one time axis that
    ends at ``now``, with a rule at ``now - rpo``: a restore point right of it is recent
    enough."""
    left, top, right, bottom = LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM
    times = [*points, *(wal or ())]
    start = min([*times, now - 2 * rpo])
    start -= (now - start) * 0.03  # the oldest dot off the axis' edge
    span = (now - start).total_seconds() or 1.0

    def x_of(when: datetime) -> float:
        return round(left + (when - start).total_seconds() / span * (right - left), 2)

    markers = [Marker(x_of(p), LANE_POINTS, "point", _stamp(p)) for p in points]
    bands = []
    if wal is not None:
        x0, x1 = x_of(wal[0]), x_of(wal[1])
        label = f"WAL {_stamp(wal[0])} to {_stamp(wal[1])}"
        bands.append(Band(x0, LANE_WAL - 9, max(x1 - x0, 2.0), 18, "wal", label))
    limit = x_of(now - rpo)
    rules = [
        Rule(limit, top, limit, bottom, "rpo", "rpo", limit - 3, top + 8),
        Rule(right, top, right, bottom, "now", "now", right - 3, bottom - 4),
    ]
    lanes = [Tick(LANE_POINTS, "dumps"), Tick(LANE_WAL, "WAL")]
    if wal is None:
        notes = (Note(left + 8, LANE_WAL - 6, "no WAL archived: restores go to a dump's time"),)
    else:
        notes = ()
    return Chart(
        chart_id,
        title,
        description,
        markers=tuple(markers),
        bands=tuple(bands),
        rules=tuple(rules),
        x_ticks=tuple(_time_ticks(start, now, x_of)),
        lanes=tuple(lanes),
        notes=notes,
    )


def _time_ticks(start: datetime, end: datetime, x_of) -> list[Tick]:
    """Three dates along the axis: times within two days, hours within a week (where dates
    alone would repeat)."""
    span = end - start
    pattern = (
        "%H:%M"
        if span <= timedelta(days=2)
        else "%m-%d"
        if span > timedelta(days=7)
        else "%m-%d %Hh"
    )
    count = 4
    step = (end - start) / count
    return [Tick(x_of(start + step * i), (start + step * i).strftime(pattern)) for i in (1, 2, 3)]


def _stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC")


# -- where the time went ------------------------------------------------------------------------

STACK_WIDTH, STACK_HEIGHT = 720, 84


def stacked_bar(
    chart_id: str,
    title: str,
    description: str,
    parts: Sequence[tuple[float, str, str]],
    *,
    fmt: Callable[[float], str],
    objective: tuple[float, str] | None = None,
) -> Chart:
    """One horizontal bar of ``parts`` (seconds, css, label) end to end, on a time axis from 0
    that reaches past the total and the ``objective`` (seconds, label), drawn as a rule."""
    left, right, top, bottom = 14, STACK_WIDTH - 14, TOP + 14, STACK_HEIGHT - BOTTOM
    total = sum(p[0] for p in parts)
    end = nice_seconds(max(total, objective[0] if objective else 0.0) * 1.05)
    scale = _linear(0.0, end, left, right)
    bars, x = [], 0.0
    for seconds, css, label in parts:
        x0, x1 = scale(x), scale(x + seconds)
        bars.append(Bar(round(x0, 2), top, round(max(x1 - x0, 0.5), 2), bottom - top, css, label))
        x += seconds
    rules = []
    if objective is not None:
        at = scale(objective[0])
        rules.append(Rule(at, top - 6, at, bottom + 4, "objective", objective[1], at, top - 9))
    ticks = [
        Tick(round(scale(t), 2), fmt(t), anchor)
        for t, anchor in ((0.0, "start"), (end / 2, "middle"), (end, "end"))
    ]
    return Chart(
        chart_id,
        title,
        description,
        bars=tuple(bars),
        rules=tuple(rules),
        x_ticks=tuple(ticks),
        width=STACK_WIDTH,
        height=STACK_HEIGHT,
        plot=(left, top, right, bottom),
    )
