"""The status page, drill pages and HTML reports in a real (headless) Chromium.

One site for the module: a server archiving its WAL into a repository, five targets in
every state (a physical target with a continuous window and targets of dumps: one OK, one
WARNING, one with no backup, one whose last drill failed), real backups and a real drill,
and a history of earlier drills (stored as the drill runner stores them), served by a real
``drbackup daemon``.  The browser must show it with no console error, fetch nothing but
the page, and let a keyboard reach every link; the screenshots land in the test's
directory (``DRBACKUP_SCREENSHOTS=DIR`` copies them there too, e.g. docs/img).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from drbackup.actions.context import AppContext
from drbackup.catalog.drills import record_drill
from drbackup.config import load_config
from drbackup.drill.record import DrillReport
from drbackup.drill.report import build_report, failure_summary
from drbackup.drill.scratch import new_drill_id
from drbackup.drill.signing import load_signing_key, sign_report
from drbackup.repository.reports import report_key
from drbackup.sources.postgres.cluster import EphemeralCluster, resolve_run_as
from tests.e2e.conftest import cli_argv
from tests.fixtures.browser import DESKTOP, PHONE, Browser
from tests.fixtures.walarchive import ARCHIVE_SETTINGS, make_wal_home, switch_wal, wait_archived
from tests.integration.test_daemon import DaemonProcess

pytestmark = pytest.mark.timeout(900)
EXPECTED = {
    "app": "OK",
    "orders": "OK",
    "billing": "WARNING",
    "inventory": "CRITICAL",
    "ledger": "CRITICAL",
}


@dataclass
class Site:
    root: Path
    config: Path
    daemon: DaemonProcess
    drill_html: Path  # `drill run --format html -o` of the real drill
    real_drill: str

    @property
    def url(self) -> str:
        return f"http://{self.daemon.address}/"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            cli_argv("--config", str(self.config), *args),
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        if check:
            assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc


# -- the site -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    home = make_wal_home()
    settings = {**ARCHIVE_SETTINGS, "archive_command": home.archive_command()}
    cluster = EphemeralCluster(fast=True, settings=settings)
    daemon = None
    try:
        cluster.start()
        home.set_dsn(cluster.dsn())
        root = tmp_path_factory.mktemp("site")
        configure(home, cluster)
        site = Site(root, home.config_path, None, root / "drill.html", "")
        take_backups(site, cluster)
        store_history(site)
        site.real_drill = run_real_drill(site)
        (root / "schedules").mkdir()
        (root / "schedules" / "jobs.yaml").write_text(
            'jobs: {report: {kind: report, cron: "0 0 1 1 *"}}\n'
        )
        daemon = site.daemon = DaemonProcess(site.config, root / "schedules")
        yield site
    finally:
        if daemon is not None:
            daemon.stop()
        cluster.destroy()
        shutil.rmtree(home.root, ignore_errors=True)


def configure(home, cluster: EphemeralCluster) -> None:
    """Targets of every kind on ``cluster``; a drill signing key (in the WAL home: the
    server's archive_command loads the config, which must read it)."""
    path = home.config_path
    doc = yaml.safe_load(path.read_text())
    doc["postgres"]["app"].update(rpo="15m", rto="30m")
    for name, rto in (("orders", "15m"), ("billing", "10m"), ("ledger", "20m")):
        cluster.create_database(name)
        cluster.execute(
            "CREATE TABLE entries (id bigint PRIMARY KEY, note text);"
            "INSERT INTO entries SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
            dbname=name,
        )
        doc["postgres"][name] = {"dsn": cluster.dsn(name), "databases": [name], "rto": rto}
    doc["postgres"]["inventory"] = {
        "dsn": "postgresql://postgres@127.0.0.1:1/inventory",
        "databases": ["inventory"],
    }
    key = home.root / "drill-signing.key"
    subprocess.run(cli_argv("key", "generate", str(key)), check=True, capture_output=True)
    run_as = resolve_run_as()
    if run_as is not None:
        os.chown(key, run_as.uid, run_as.gid)
    doc["drill"] = {"scratch_on_source_server": True, "signing_key_file": str(key)}
    path.write_text(yaml.safe_dump(doc))


def take_backups(site: Site, cluster: EphemeralCluster) -> None:
    """Dumps that grow, a base backup with WAL after it, and a failed run."""
    for round_ in range(3):
        for name in ("orders", "billing", "ledger")[: 3 if round_ else 2]:
            cluster.execute(
                f"INSERT INTO entries SELECT g, md5(g::text) FROM generate_series("
                f"{(round_ + 1) * 20000 + 1}, {(round_ + 2) * 20000}) g",
                dbname=name,
            )
            site.cli("backup", "postgres", name)
    site.cli("backup", "postgres", "app", "--physical")
    cluster.execute("CREATE TABLE later AS SELECT 1 AS i")
    wait_archived(cluster, switch_wal(cluster))
    assert site.cli("backup", "postgres", "inventory", check=False).returncode != 0


def store_history(site: Site) -> None:
    """Earlier drills, as the drill runner stores them (signed, in the repository and the
    catalog), and an interrupted run."""
    app = AppContext(load_config(str(site.config)))
    now = datetime.now(UTC)
    for days, seconds in ((50, 640), (40, 700), (30, 655), (20, 720), (10, 690), (3, 705)):
        store_drill(app, "orders", now - timedelta(days=days), seconds, 900)
    for days, seconds in ((30, 380), (12, 420), (2, 540)):  # over 80% of the 10m rto
        store_drill(app, "billing", now - timedelta(days=days), seconds, 600)
    for days, seconds in ((40, 300), (25, 320), (9, 350)):
        store_drill(app, "ledger", now - timedelta(days=days), seconds, 1200)
    store_drill(app, "ledger", now - timedelta(hours=5), None, 1200, failed=True)
    store_drill(app, "app", now - timedelta(days=1), 95, 1800)
    app.catalog.record_run(
        "backup", "billing", now - timedelta(hours=3), now - timedelta(hours=3), "interrupted",
        error="cancelled by the daemon (timeout or shutdown)",
    )  # fmt: skip


def store_drill(app, target, started, seconds, rto, failed=False) -> None:
    repo = app.repository()
    checks = [_check(target, "restore", "pass", "pg_restore finished without errors", {})]
    if failed:
        checks.append(
            _check(
                target,
                "tables",
                "fail",
                "1 table differs: public.entries has 59999 rows, the backup 60000",
                {
                    "differences": [
                        {
                            "table": "public.entries",
                            "expected_rows": 60000,
                            "rows": 59999,
                            "kind": "row_count",
                        }
                    ],
                    "tables": 1,
                },
            )  # fmt: skip
        )
    else:
        checks.append(_check(target, "tables", "pass", "1 table matches", {"tables": 1}))
    timings = {}
    if seconds is not None:
        restore = seconds * 0.8
        timings = {"restore_s": restore, "fetch_decrypt_s": restore * 0.4,
                   "pre_data_s": restore * 0.05, "data_s": restore * 0.6,
                   "post_data_s": restore * 0.3, "verification_s": seconds - restore,
                   "total_s": float(seconds)}  # fmt: skip
    info = {"target": target, "backup_id": repo.list_refs(target)[-1].backup_id,
            "selection": "latest", "timings": timings,
            "objectives": {"rto_s": float(rto), "rpo_s": 86400.0}}  # fmt: skip
    report = build_report(
        drill_id=new_drill_id(started),
        plan="monthly",
        started_at=started,
        finished_at=started + timedelta(seconds=(seconds or 30) + 20),
        repository={"id": repo.id, "url": repo.url},
        targets=[info],
        checks=checks,
    )
    report = sign_report(report, load_signing_key(app.config.drill.signing_key_file))
    repo.put_document(report_key(target, report["drill_id"]), report)
    record_drill(app.catalog, DrillReport.from_dict(report))
    app.catalog.record_run(
        "drill", target, started, started + timedelta(seconds=seconds or 30),
        "failed" if failed else "ok",
        error=failure_summary(report) if failed else None,
    )  # fmt: skip


def _check(target, name, status, summary, evidence) -> dict:
    return {"name": name, "target": target, "database": target, "status": status,
            "summary": summary, "seconds": 0.5, "evidence": evidence}  # fmt: skip


def run_real_drill(site: Site) -> str:
    """``drill run --format html -o``: a real restore of orders, checked."""
    proc = site.cli("drill", "run", "--target", "orders", "--format", "html", "-o", site.drill_html)
    assert proc.stdout.lstrip().startswith("<!doctype html>")
    return load_drill_id(site.drill_html)


def load_drill_id(path: Path) -> str:
    from drbackup.drill.report import read_report_file

    return read_report_file(path)["drill_id"]


# -- what a browser sees ------------------------------------------------------------------------


@pytest.fixture
def browser(tmp_path):
    running = Browser(tmp_path)
    yield running
    running.close()


def save(shot: Path) -> None:
    """Also into $DRBACKUP_SCREENSHOTS (the docs' images are made so): a screenshot or a
    file the browser showed."""
    if os.environ.get("DRBACKUP_SCREENSHOTS"):
        target = Path(os.environ["DRBACKUP_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / shot.name)


def test_the_status_page_shows_every_target_in_its_state(site, browser, tmp_path):
    page = browser.page()
    page.open(site.url)
    statuses = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('section[id^=target-]')].map("
        "s => [s.id.slice(7), s.querySelector('header .badge').textContent]))"
    )
    assert statuses == EXPECTED
    for viewport, name in ((DESKTOP, "status-desktop.png"), (PHONE, "status-phone.png")):
        page.open(site.url, viewport)
        save(page.screenshot(tmp_path / name, viewport))
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"], (name, width, overflowing(page, viewport["width"]))
    text = page.evaluate("document.body.innerText")
    assert "no backup in the repository" in text  # inventory
    assert "over 80% of the rto 10m" in text  # billing
    assert "interrupted run" in text
    assert "failed: tables" in text  # ledger's last drill
    assert "continuous since" in text  # app: base backup + WAL
    assert page.console_problems() == []
    assert_same_origin(page, site.url)


def test_every_chart_has_a_text_alternative_and_its_numbers_in_a_table(site, browser):
    page = browser.page()
    page.open(site.url)
    charts = page.evaluate(
        "[...document.querySelectorAll('svg')].map(s => ({"
        " role: s.getAttribute('role'),"
        " labelled: s.getAttribute('aria-labelledby').split(' ')"
        "   .map(id => document.getElementById(id)?.textContent || '').filter(t => t.length > 10).length,"
        " table: !!s.closest('figure').querySelector('table')"
        "   || !!s.closest('.charts')?.querySelector('table')}))"
    )
    assert len(charts) == 4 * len(EXPECTED)
    assert all(c == {"role": "img", "labelled": 2, "table": True} for c in charts), charts


def test_a_keyboard_reaches_every_link_with_a_visible_focus(site, browser):
    page = browser.page()
    page.open(site.url)
    assert_keyboard_reaches_every_link(page)


def test_the_drill_pages_show_every_check_and_its_evidence(site, browser, tmp_path):
    page = browser.page()
    page.open(site.url)
    href = page.evaluate(
        "document.querySelector('#target-ledger dd a[href^=\"/drills/\"]').getAttribute('href')"
    )
    assert href.startswith("/drills/ledger/")
    page.open(site.url.rstrip("/") + href)
    text = page.evaluate("document.body.innerText")
    assert "1 table differs: public.entries has 59999 rows, the backup 60000" in text
    assert '"expected_rows": 60000' in text  # the evidence of the failed check, open
    assert "ed25519 key" in text
    save(page.screenshot(tmp_path / "drill-failed.png"))
    page.open(f"{site.url}drills/orders/{site.real_drill}")  # the real drill
    checks = page.evaluate(
        "[...document.querySelectorAll('tbody tr td:nth-child(2)')].map(td => td.textContent)"
    )
    assert {"restore", "tables", "foreign_keys", "rto"} <= set(checks)
    assert page.console_problems() == []
    assert_same_origin(page, site.url)
    assert_keyboard_reaches_every_link(page)
    page.open(f"{site.url}drills/orders/20990101T000000Z-000000")
    assert "not found" in page.evaluate("document.body.innerText")


def test_the_html_files_are_self_contained(site, browser, tmp_path):
    report = tmp_path / "report.html"
    proc = site.cli("report", "--format", "html", "-o", str(report), check=False)
    assert proc.returncode == 2, proc.stderr  # CRITICAL, as the page says
    page = browser.page()
    for path in (report, site.drill_html):
        page.events.clear()
        page.open(path.as_uri())
        assert page.console_problems() == [], path
        assert page.requests() == [path.as_uri()], path  # nothing but the file itself
        assert_keyboard_reaches_every_link(page)
    page.open(report.as_uri())
    drills = page.evaluate("[...document.querySelectorAll('section[id^=drill-]')].length")
    assert drills == len(EXPECTED) - 1  # the last drill of each drilled target, inline
    save(page.screenshot(tmp_path / "report-file.png"))
    save(report)
    verified = site.cli("drill", "verify-report", str(site.drill_html))
    assert verified.stdout.startswith(f"ok: drill {site.real_drill} report is authentic")


# -- checks ---------------------------------------------------------------------------------------


def overflowing(page, width: int) -> list[str]:
    """The elements that reach past ``width`` outside a scrolling box (what to fix)."""
    return page.evaluate(
        "[...document.querySelectorAll('body *')].filter(e => !e.closest('.scroll')"
        f" && e.getBoundingClientRect().right > {width} + 1).map(e => e.tagName + '.'"
        " + (e.className.baseVal ?? e.className) + ' ' + e.textContent.slice(0, 60)).slice(0, 10)"
    )


def assert_same_origin(page, url: str) -> None:
    origin = url.rstrip("/")
    outside = [u for u in page.requests() if not u.startswith(origin + "/")]
    assert outside == [], outside


OPENS_CLOSED_DETAILS = "!document.activeElement.parentElement.open"


def assert_keyboard_reaches_every_link(page) -> None:
    """Tab from the top until focus comes back around, opening each closed disclosure with
    Enter: every link is reached, and each focused element shows a focus outline."""
    links = page.evaluate("[...document.querySelectorAll('a[href]')].map(a => a.outerHTML)")
    page.evaluate("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0)")
    reached, unseen_outline = [], []
    for _ in range(len(links) * 3 + 50):
        page.press_tab()
        focused = page.evaluate(
            "(() => { const e = document.activeElement; if (!e || e === document.body) return null;"
            " return [e.outerHTML, getComputedStyle(e).outlineStyle]; })()"
        )
        if focused is None or (reached and focused[0] == reached[0]):
            break
        reached.append(focused[0])
        if focused[0].startswith("<summary") and page.evaluate(OPENS_CLOSED_DETAILS):
            page.press_enter()  # a disclosure (a chart's table): open it, as a reader would
        if focused[1] == "none":
            unseen_outline.append(focused[0])
    missing = [link for link in links if link not in reached]
    assert missing == [], missing
    assert unseen_outline == [], unseen_outline
