"""The daemon's HTTP endpoint serving pages (real HTTP on loopback): the headers that keep
a page from loading anything, 404s, a failing page; the drill path's shape."""

from __future__ import annotations

import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from drbackup.scheduler.http import HttpEndpoint, Metrics
from drbackup.scheduler.pages import Response, StatusPages


def fetch(endpoint: HttpEndpoint, path: str):
    try:
        with urllib.request.urlopen(f"http://{endpoint.address}{path}", timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.fixture
def serve():
    started = []

    def start(pages):
        endpoint = HttpEndpoint("127.0.0.1:0", Metrics(), lambda: None, pages)
        endpoint.start()
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


def test_a_page_is_served_under_a_policy_that_loads_nothing(serve):
    endpoint = serve(lambda path: Response(200, b"<p>status</p>") if path == "/" else None)
    status, headers, body = fetch(endpoint, "/?refresh=1")
    assert (status, body) == (200, "<p>status</p>")
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    policy = headers["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'; style-src 'sha256-")
    assert policy.endswith("; frame-ancestors 'none'")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    assert fetch(endpoint, "/elsewhere")[0] == 404
    assert fetch(endpoint, "/metrics")[0] == 200


def test_without_pages_the_root_is_not_found(serve):
    endpoint = serve(None)
    assert fetch(endpoint, "/")[0] == 404
    assert fetch(endpoint, "/healthz")[0] == 200


def test_a_failing_page_is_a_500_that_says_why_as_text(serve):
    def broken(path):
        raise RuntimeError("<b>boom</b>")

    status, headers, body = fetch(serve(broken), "/")
    assert status == 500
    assert "RuntimeError: &lt;b&gt;boom&lt;/b&gt;" in body
    assert "Content-Security-Policy" in headers


@pytest.mark.parametrize(
    "path",
    [
        "/drills/../etc/passwd",
        "/drills/orders/20261123T000000Z-abcdef/x",
        "/drills/orders/not-a-drill-id",
        "/drills/unknown/20261123T000000Z-abcdef",  # not a configured target
        "/favicon.ico",
    ],
)
def test_only_a_configured_targets_drill_path_is_a_page(path):
    app = SimpleNamespace(config=SimpleNamespace(targets={"orders": object()}))
    assert StatusPages(app).get(path) is None  # 404, without reading anything
