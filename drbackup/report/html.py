"""HTML: the daemon's status page and drill pages, and the same content as self-contained
files (``drbackup report --format html``, ``drbackup drill run --format html``).

Pure functions from view models (``report/status.py``, ``report/drillview.py``) to text.
The pages are Jinja2 templates (``report/templates``) with autoescape on: every value
printed is escaped, so target names, check summaries and evidence (untrusted text) cannot
become markup; no template marks anything ``|safe``.  Charts are geometry
(``report/charts.py``) drawn by a template macro, never markup built in Python.

A page is one document: the stylesheet inline (its hash in the Content-Security-Policy),
SVG inline, no script, no font, no external anything; it works offline and from an email
attachment.  The policy (``default-src 'none'``) also stops the browser from fetching
anything should something slip through.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from importlib.resources import files
from urllib.parse import quote

from drbackup import __version__
from drbackup.report import charts
from drbackup.report.charts import Chart, Value
from drbackup.report.drillview import DrillPageView
from drbackup.report.health import RTO_WARN_FRACTION, human_age
from drbackup.report.status import StatusView, TargetView
from drbackup.units import human_size

# A shield, as the tab's icon: a data URL (img-src data:), so no /favicon.ico request.
ICON = "data:image/svg+xml," + quote(
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<path d="M8 1l6 2.5v4C14 11 11.5 14 8 15 4.5 14 2 11 2 7.5v-4z" fill="#1d6b3a"/></svg>'
)
# Only what meta may carry; the daemon adds frame-ancestors in its header.
POLICY = "default-src 'none'; style-src '{}'; img-src data:; base-uri 'none'; form-action 'none'"


@dataclass(frozen=True)
class Links:
    """Where links go: the daemon's pages, or anchors inside one file."""

    home: str | None = None
    metrics: str | None = None
    drill_prefix: str | None = None  # "/drills/": drill pages served by the daemon
    inline: frozenset[str] = field(default_factory=frozenset)  # drills in this document

    def drill(self, target: str, drill_id: str) -> str | None:
        """The link to a drill's report, or None when there is nowhere to go."""
        if drill_id in self.inline:
            return f"#drill-{drill_id}"
        if self.drill_prefix:
            return f"{self.drill_prefix}{quote(target, safe='')}/{quote(drill_id, safe='')}"
        return None


@dataclass(frozen=True)
class Page:
    """What every page's head carries."""

    css: str
    csp: str
    icon: str = ICON
    version: str = __version__


@dataclass(frozen=True)
class TargetCharts:
    window: Chart
    rto: Chart
    size: Chart
    duration: Chart


# -- entry points -------------------------------------------------------------------------------


def render_status_page(view: StatusView, links: Links, drills=()) -> str:
    """The status page (the daemon's ``/``); with ``drills`` (DrillPageView) inline."""
    charts_of = {t.name: target_charts(t, view.generated_at) for t in view.targets}
    return (
        _environment()
        .get_template("status.html")
        .render(
            page=page(),
            view=view,
            links=links,
            charts=charts_of,
            drills=list(drills),
            drill_charts={d.drill_id: drill_charts(d) for d in drills},
            window_text=window_text,
        )
    )


def render_drill_page(drill: DrillPageView, links: Links, signed: dict | None = None) -> str:
    """One drill's page: every check with its evidence; with the ``signed`` report embedded
    as a JSON data block (never run: a ``script`` of type application/json)."""
    return (
        _environment()
        .get_template("drill.html")
        .render(
            page=page(),
            drill=drill,
            links=links,
            drill_charts=drill_charts(drill),
            report_json=json_block(signed) if signed is not None else None,
        )
    )


def render_report_file(view: StatusView, drills: list[DrillPageView]) -> str:
    """``report --format html``: the status page with each target's last drill inline."""
    return render_status_page(view, Links(inline=frozenset(d.drill_id for d in drills)), drills)


def render_drill_file(drill: DrillPageView, signed: dict | None = None) -> str:
    """``drill run --format html``: the drill's page as a file."""
    return render_drill_page(drill, Links(), signed)


def render_drill_report(report: dict, fmt: str) -> str:
    """A drill report (``drill.report``'s dict) in ``fmt``: ``html`` is the drill's page as a
    file, the signed JSON embedded in a data block (``drill.report.read_report_file`` reads
    it back); the other formats are ``drill.report.render``'s."""
    from drbackup.drill.report import render

    if fmt != "html":
        return render(report, fmt)
    from drbackup.report.drillview import build_drill_view

    return render_drill_file(build_drill_view(report), signed=report)


def json_block(document: dict):
    """``document`` as JSON that cannot end its ``<script>`` element or open a comment:
    ``<``, ``>`` and ``&`` as \\u escapes (the same JSON to a parser)."""
    from markupsafe import Markup

    text = json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return Markup(text)


@cache
def page() -> Page:
    """The stylesheet (our own file, inlined as is: ``<style>`` does not decode entities,
    so escaping it would break it and its hash) and the policy allowing only it."""
    from markupsafe import Markup

    css = (files("drbackup.report") / "templates" / "style.css").read_text(encoding="utf-8")
    if "</" in css:
        raise ValueError("style.css must not contain '</'")  # it would end the element
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    return Page(css=Markup(css), csp=POLICY.format(f"sha256-{digest}"))


def http_policy() -> str:
    """The Content-Security-Policy header of the daemon's pages (meta cannot say all)."""
    return page().csp + "; frame-ancestors 'none'"


@cache
def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("drbackup.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(stamp=stamp, age=age, secs=secs, size=human_size)
    return env


# -- text -----------------------------------------------------------------------------------------


def stamp(value: datetime, seconds: bool = False) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def age(seconds: float) -> str:
    return human_age(timedelta(seconds=seconds))


def secs(seconds: float) -> str:
    """``0.42 s``, ``12.3 s``, then ``2m5s``."""
    if seconds < 10:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s" if seconds < 60 else age(seconds)


def window_text(t: TargetView) -> str:
    """The restorable window in a few words, for the overview table."""
    w = t.window
    if w.wal_oldest and w.restorable_until:
        return f"continuous since {stamp(w.wal_oldest)}"
    if w.count and w.oldest:
        points = "restore point" if w.count == 1 else "restore points"
        return f"{w.count} {points} since {stamp(w.oldest)}"
    return "nothing restorable"


# -- charts ---------------------------------------------------------------------------------------


def target_charts(t: TargetView, now: datetime) -> TargetCharts:
    return TargetCharts(
        window=window_chart(t, now),
        rto=rto_chart(t),
        size=size_chart(t),
        duration=duration_chart(t),
    )


def rto_chart(t: TargetView) -> Chart:
    values = [
        Value(
            d.measured_s,
            d.status,
            f"{d.drill_id}: {secs(d.measured_s)} ({d.status})"
            if d.measured_s is not None
            else f"{d.drill_id}: {d.status}, nothing measured",
        )
        for d in t.drills
    ]
    measured = [d for d in t.drills if d.measured_s is not None]
    if not t.drills:
        description = f"No drill of {t.name} on record; the objective is {age(t.rto_s)}."
    else:
        last = t.drills[-1]
        longest = max((d.measured_s for d in measured), default=None)
        description = (
            f"{len(t.drills)} drills of {t.name}, oldest first, against an objective of "
            f"{age(t.rto_s)}. The last ({last.status}) "
            + (
                f"took {secs(last.measured_s)}"
                if last.measured_s is not None
                else "measured nothing"
            )
            + (f"; the longest took {secs(longest)}" if longest is not None else "")
            + f"; {len(t.drills) - len(measured)} without a time."
        )
    return charts.bar_chart(
        f"{t.anchor}-rto",
        f"Restore and verification time per drill of {t.name}",
        description,
        values,
        fmt=_axis_seconds,
        nice=charts.nice_seconds,
        x_labels=[d.started_at.strftime("%m-%d") for d in t.drills],
        objectives=[
            (t.rto_s, f"rto {age(t.rto_s)}", "objective"),
            (
                t.rto_s * RTO_WARN_FRACTION,
                f"{int(RTO_WARN_FRACTION * 100)}% (warning)",
                "threshold",
            ),
        ],
    )


def size_chart(t: TargetView) -> Chart:
    values = [
        Value(
            b.size,
            "size",
            f"{b.backup_id}: {human_size(b.size)}, stored {human_size(b.stored_size)}",
            inner=b.stored_size,
            inner_css="stored",
        )
        for b in t.backups
    ]
    if t.backups:
        last = t.backups[-1]
        description = (
            f"{len(t.backups)} backups of {t.name}, oldest first; the last is "
            f"{human_size(last.size)}, stored as {human_size(last.stored_size)}."
        )
    else:
        description = f"No backup of {t.name} in the catalog."
    return charts.bar_chart(
        f"{t.anchor}-size",
        f"Backup size of {t.name}",
        description,
        values,
        fmt=_axis_bytes,
        nice=charts.nice_bytes,
        x_labels=[b.started_at.strftime("%m-%d") for b in t.backups],
    )


def duration_chart(t: TargetView) -> Chart:
    values = [
        Value(b.duration_s, "duration", f"{b.backup_id}: {secs(b.duration_s)}") for b in t.backups
    ]
    if t.backups:
        longest = max(b.duration_s for b in t.backups)
        description = (
            f"{len(t.backups)} backups of {t.name}, oldest first; the last took "
            f"{secs(t.backups[-1].duration_s)}, the longest {secs(longest)}."
        )
    else:
        description = f"No backup of {t.name} in the catalog."
    return charts.bar_chart(
        f"{t.anchor}-duration",
        f"Backup duration of {t.name}",
        description,
        values,
        fmt=_axis_seconds,
        nice=charts.nice_seconds,
        x_labels=[b.started_at.strftime("%m-%d") for b in t.backups],
    )


def window_chart(t: TargetView, now: datetime) -> Chart:
    w = t.window
    wal = (w.wal_oldest, w.restorable_until) if w.wal_oldest and w.restorable_until else None
    parts = [f"{len(w.points)} restore points of {t.name} (dumps)" if w.points else "no dumps"]
    if wal:
        parts.append(f"a continuous window from {stamp(wal[0])} to {stamp(wal[1])}")
    newest = f"; the newest point is {age(t.age_s)} old" if t.age_s is not None else ""
    return charts.timeline(
        f"{t.anchor}-window",
        f"Restorable window of {t.name}",
        " and ".join(parts) + f"{newest}, against an rpo of {age(t.rpo_s)}.",
        now=now,
        points=w.points,
        wal=wal,
        rpo=timedelta(seconds=t.rpo_s),
    )


def drill_charts(drill: DrillPageView) -> dict[str, Chart]:
    """Each target's phases against its RTO."""
    found = {}
    for t in drill.targets:
        if not t.phases:
            continue
        parts = [(p.seconds, p.css, f"{p.label}: {secs(p.seconds)}") for p in t.phases]
        objective = (t.rto_s, f"rto {age(t.rto_s)}") if t.rto_s else None
        described = ", ".join(f"{p.label} {secs(p.seconds)}" for p in t.phases)
        found[t.name] = charts.stacked_bar(
            f"{drill.anchor}-{t.name}-phases",
            f"Where the restore and verification time of {t.name} went",
            f"{described}; in all {secs(sum(p.seconds for p in t.phases))}"
            + (f" against an objective of {age(t.rto_s)}." if t.rto_s else "."),
            parts,
            fmt=_axis_seconds,
            objective=objective,
        )
    return found


def _axis_seconds(value: float) -> str:
    return "0" if value == 0 else age(value) if value >= 60 else f"{value:g}s"


def _axis_bytes(value: float) -> str:
    """``0``, ``512 B``, ``5 MiB``, ``2.5 GiB``: no trailing ``.0``."""
    return "0" if value == 0 else human_size(int(value)).replace(".0 ", " ")
