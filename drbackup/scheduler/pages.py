"""The daemon's HTML pages (docs/status-page.md): ``/`` and ``/drills/<target>/<drill id>``.

The status is gathered from the repository and the catalog at most every ``ttl`` seconds
and again after a job finished, never once per request: a page view costs a render, and a
burst of requests one gathering.  A drill page reads that drill's report from the
repository (the signed truth).  Read-only: no page changes anything.
"""

from __future__ import annotations

import html
import re
import threading
import time
from dataclasses import dataclass

from drbackup.errors import DrbackupError

DRILL_PATH = re.compile(r"/drills/([a-z0-9][a-z0-9_.-]{0,62})/(\d{8}T\d{6}Z-[0-9a-f]{6})")
DEFAULT_TTL = 60.0


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


class StatusPages:
    """Renders the pages of ``app``'s configuration; ``get(path)`` answers one request."""

    def __init__(self, app, ttl: float = DEFAULT_TTL):
        self.app, self.ttl = app, ttl
        self._lock = threading.Lock()
        self._view = None
        self._at = float("-inf")

    def invalidate(self) -> None:
        """Gather again at the next request (a job has changed the repository)."""
        self._at = float("-inf")

    def status(self):
        """The status view, gathered again when older than ``ttl`` (one gathering at a time:
        requests meanwhile wait for it and share it)."""
        from drbackup.actions.report import gather_report
        from drbackup.report.status import build_status, read_history

        with self._lock:
            if self._view is None or time.monotonic() - self._at >= self.ttl:
                started = time.monotonic()
                report = gather_report(self.app)
                self._view = build_status(report, read_history(self.app, report))
                self._at = started
            return self._view

    def get(self, path: str) -> Response | None:
        """The page at ``path``; None for a path that is not a page (404)."""
        try:
            if path in ("/", "/index.html"):
                return Response(200, self._status_page())
            match = DRILL_PATH.fullmatch(path)
            if match and match[1] in self.app.config.targets:
                return self._drill_page(match[1], match[2])
        except DrbackupError as exc:
            return Response(503, error_page("the status cannot be read", exc.message))
        return None

    def _status_page(self) -> bytes:
        from drbackup.report.html import Links, render_status_page

        links = Links(home="/", metrics="/metrics", drill_prefix="/drills/")
        return render_status_page(self.status(), links).encode()

    def _drill_page(self, target: str, drill_id: str) -> Response | None:
        from drbackup.report.drillview import build_drill_view
        from drbackup.report.html import Links, render_drill_page
        from drbackup.report.status import read_drill_report

        report = read_drill_report(self.app, target, drill_id)
        if report is None:
            return None
        page = render_drill_page(build_drill_view(report), Links(home="/", metrics="/metrics"))
        return Response(200, page.encode())


def error_page(title: str, detail: str) -> bytes:
    """A minimal page for 503s (no stylesheet needed, nothing to fetch)."""
    return (
        "<!doctype html><html lang=en><meta charset=utf-8><title>drbackup: "
        f"{html.escape(title)}</title><h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(detail)}</p><p><a href=/>try again</a></p></html>"
    ).encode()
