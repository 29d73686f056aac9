"""The status page and HTML reports as text: built from synthetic facts, no browser (the
browser's view is tests/e2e/test_status_page.py)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from importlib.resources import files

from drbackup.drill.report import build_report as build_drill_report
from drbackup.drill.report import read_report_file
from drbackup.report import charts
from drbackup.report.health import (
    BackupFact,
    DrillFact,
    RepositoryFacts,
    TargetFacts,
    build_report,
)
from drbackup.report.html import Links, page, render_drill_report, render_status_page
from drbackup.report.status import History, build_status

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
HOSTILE = '<script>alert("x")</script><img src=http://evil.example/x>'


def facts(name: str, **changes) -> TargetFacts:
    base = TargetFacts(
        name=name,
        kind="postgres",
        rpo=timedelta(hours=24),
        rto=timedelta(minutes=15),
        restore_points=2,
        newest=BackupFact("20261123T100000Z-aaaaaa", NOW - timedelta(hours=2), 2000, 800),
        oldest=BackupFact("20261122T100000Z-bbbbbb", NOW - timedelta(hours=26), 1000, 400),
        drills=[
            DrillFact("20261101T020000Z-d00001", NOW - timedelta(days=22), "pass", 600.0),
            DrillFact("20261120T020000Z-d00002", NOW - timedelta(days=3), "pass", 640.0),
        ],
        failed_runs=[],
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def status_page(*targets: TargetFacts, links: Links | None = None) -> str:
    report = build_report(RepositoryFacts("s3://bucket/repo", True, id="r1"), list(targets), NOW)
    view = build_status(report, {t.name: History() for t in targets})
    return render_status_page(view, links or Links(drill_prefix="/drills/"))


# -- what the page says -------------------------------------------------------------------------


def test_every_target_shows_its_status_backup_age_and_last_drill():
    failed = DrillFact(
        "20261123T050000Z-d00003", NOW - timedelta(hours=7), "fail", None, ("tables",)
    )
    text = status_page(
        facts("orders"),
        facts("ledger", drills=[failed]),
        facts("inventory", newest=None, oldest=None, restore_points=0, drills=[]),
    )
    assert "<title>drbackup status: CRITICAL</title>" in text
    for name, status in (("orders", "OK"), ("ledger", "CRITICAL"), ("inventory", "CRITICAL")):
        section = text[text.index(f'id="target-{name}"') :]
        assert re.search(rf'<span class="badge {status.lower()}">{status}</span>', section[:600])
    assert "failed: tables" in text
    assert 'href="/drills/ledger/20261123T050000Z-d00003"' in text
    assert "no backup in the repository" in text
    assert "2 restore points since 2026-11-22 10:00 UTC" in text


def test_untrusted_text_is_escaped_never_markup():
    """Finding messages carry errors from the outside (a server's, a bucket's): escaped."""
    text = status_page(facts("orders", failed_runs=[f"backup at 10:00: {HOSTILE}"]))
    assert "<script>alert" not in text and "<img src=http" not in text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text


def test_the_page_is_self_contained():
    """No script, no external stylesheet, image or font; the policy allows only the inline
    stylesheet (by its hash) and data: images."""
    text = status_page(facts("orders"), facts("billing"))
    assert "<script" not in text
    assert not re.search(r"""\bsrc=""", text)
    urls = re.findall(r"""(?:href|src)="([^"]*)\"""", text)
    assert urls and all(u.startswith(("#", "/", "data:")) for u in urls), urls
    assert re.findall(r"https?://[^\s\"'<]+", text) == ["http://www.w3.org/2000/svg"] * 8
    css = re.search(r"<style>(.*?)</style>", text, re.DOTALL)[1]
    assert css == page().css
    assert "default-src 'none'" in page().csp and "sha256-" in page().csp


def test_a_file_links_to_its_inline_drills_and_nowhere_else():
    report = build_report(RepositoryFacts("file:///r", True), [facts("orders")], NOW)
    view = build_status(report, {"orders": History()})
    text = render_status_page(view, Links())
    assert 'href="/drills/' not in text  # nothing to link to: the drill id as text
    assert "<code>20261120T020000Z-d00002</code>" in text


# -- drill reports --------------------------------------------------------------------------------


def drill_report(evidence: dict) -> dict:
    started = NOW - timedelta(hours=1)
    timings = {"restore_s": 40.0, "pre_data_s": 2.0, "data_s": 30.0, "post_data_s": 6.0,
               "verification_s": 5.0, "total_s": 45.0, "fetch_decrypt_s": 12.0}  # fmt: skip
    target = {"target": "orders", "backup_id": "20261123T100000Z-aaaaaa", "selection": "latest",
              "timings": timings, "objectives": {"rto_s": 900.0}}  # fmt: skip
    check = {"name": "tables", "target": "orders", "database": "orders", "status": "fail",
             "summary": "1 table differs", "seconds": 1.5, "evidence": evidence}  # fmt: skip
    return build_drill_report(
        drill_id="20261123T110000Z-abcdef",
        plan="monthly",
        started_at=started,
        finished_at=started + timedelta(seconds=50),
        repository={"id": "r1", "url": "file:///r"},
        targets=[target],
        checks=[check],
    )


def test_the_html_drill_report_embeds_the_report_and_reads_back(tmp_path):
    """Evidence that tries to end the data block stays data: the file reads back as the same
    report (what ``drill verify-report`` checks)."""
    report = drill_report({"note": "</script><script>alert(1)</script>", "rows": [1, 2]})
    text = render_drill_report(report, "html")
    assert text.count("<script") == 1  # the data block, type application/json: never run
    assert '<script type="application/json" id="drbackup-drill-report">' in text
    assert "1 table differs" in text and "other restore work" in text
    path = tmp_path / "drill.html"
    path.write_text(text)
    assert read_report_file(path) == report


# -- accessibility ------------------------------------------------------------------------------


def _luminance(colour: str) -> float:
    channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_colours_meet_wcag_aa_contrast():
    """Text 4.5:1 against its background; chart marks 3:1 against the card (WCAG 1.4.11)."""
    css = (files("drbackup.report") / "templates" / "style.css").read_text()
    colour = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-f]{6});", css))
    text_pairs = [("ink", "card"), ("ink", "page"), ("muted", "card"), ("muted", "page"),
                  ("link", "card"), ("critical-bg", "card")]  # fmt: skip
    text_pairs += [(f"{s}-ink", f"{s}-bg") for s in ("ok", "warning", "critical", "unknown")]
    low = {p: round(contrast(colour[p[0]], colour[p[1]]), 2) for p in text_pairs}
    assert {p: r for p, r in low.items() if r < 4.5} == {}
    marks = ("pass", "warn", "fail", "objective", "stored", "wal", "point", "duration", "size")
    weak = {m: round(contrast(colour[m], colour["card"]), 2) for m in marks}
    assert {m: r for m, r in weak.items() if r < 3} == {}


def test_every_chart_has_a_title_and_a_description():
    text = status_page(facts("orders"))
    svgs = re.findall(r"<svg[^>]*>.*?</svg>", text, re.DOTALL)
    assert len(svgs) == 4
    for svg in svgs:
        ids = re.search(r'aria-labelledby="([^"]+)"', svg)[1].split()
        assert 'role="img"' in svg and len(ids) == 2
        for ident in ids:
            assert re.search(rf'id="{ident}">[^<]{{10,}}<', svg), ident


# -- chart geometry -------------------------------------------------------------------------------


def test_a_drill_without_a_time_is_a_marker_and_the_axis_covers_the_objective():
    chart = charts.bar_chart(
        "c",
        "t",
        "d",
        [charts.Value(30.0, "pass", "a"), charts.Value(None, "fail", "b")],
        fmt=str,
        objectives=[(900.0, "rto", "objective")],
        nice=charts.nice_seconds,
    )
    assert len(chart.bars) == 1 and len(chart.markers) == 1
    assert chart.y_ticks[-1].label == "1200.0"  # 900 * 1.08 rounds up to 20 minutes
    rule = chart.rules[0]
    assert chart.plot[1] <= rule.y1 <= chart.plot[3]


def test_round_axis_ends():
    assert charts.nice_ceiling(0) == 1.0 and charts.nice_ceiling(7) == 10
    assert charts.nice_ceiling(2.2) == 2.5
    assert charts.nice_seconds(50) == 60 and charts.nice_seconds(4000) == 7200
    assert charts.nice_bytes(3 * 1024**2) == 5 * 1024**2


def test_a_chart_of_nothing_draws_no_made_up_axis():
    chart = charts.bar_chart("c", "t", "No backup of x.", [], fmt=str, nice=charts.nice_bytes)
    assert chart.bars == () and chart.y_ticks == () and chart.x_ticks == ()
    assert [n.text for n in chart.notes] == ["nothing yet"]


def test_timeline_labels_do_not_repeat_a_date():
    points = [NOW - timedelta(days=2, hours=12), NOW - timedelta(hours=1)]
    chart = charts.timeline(
        "w", "t", "d", now=NOW, points=points, wal=None, rpo=timedelta(hours=24)
    )
    labels = [t.label for t in chart.x_ticks]
    assert len(set(labels)) == len(labels) == 3, labels
