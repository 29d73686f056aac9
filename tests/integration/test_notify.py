"""Notifications against servers on loopback: a webhook (http.server) and SMTP (a stub)."""

from __future__ import annotations

import email
import json
import socketserver
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from drbackup import notify
from drbackup.report.health import BackupFact, RepositoryFacts, TargetFacts, build_report

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def critical_report():
    facts = TargetFacts(
        "app",
        "postgres",
        timedelta(hours=24),
        timedelta(hours=1),
        restore_points=1,
        newest=BackupFact("20261121T000000Z-aaaaaa", NOW - timedelta(days=2)),
    )
    return build_report(RepositoryFacts("/srv/repo", True, size=10), [facts], NOW)


# -- a webhook receiver -------------------------------------------------------------------


@pytest.fixture
def webhook():
    received: list[dict] = []
    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"headers": dict(self.headers), "json": json.loads(body)})
            self.send_response(status["code"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/T0KEN"
    yield url, received, status
    server.shutdown()
    server.server_close()


def test_webhook_posts_slack_compatible_json(webhook):
    url, received, _ = webhook
    notify.send([notify.Webhook(url)], notify.report_message(critical_report()))
    (request,) = received
    assert request["headers"]["Content-Type"] == "application/json"
    payload = request["json"]
    assert payload["text"].startswith("drbackup health CRITICAL: app\n")
    assert "last backup is 2d old, older than the rpo 1d" in payload["text"]
    assert payload["status"] == "CRITICAL" and payload["report"]["exit_code"] == 2


def test_webhook_errors_name_the_host_not_the_token(webhook):
    url, _, status = webhook
    status["code"] = 500
    with pytest.raises(notify.NotifyError) as info:
        notify.send([notify.Webhook(url)], notify.failure_message("nightly", "backup", "boom"))
    assert info.value.message == (
        "notification failed: webhook http://127.0.0.1 answered 500 internal server error"
    )
    assert "T0KEN" not in info.value.message


# -- an SMTP stub -------------------------------------------------------------------------


class SmtpStub(socketserver.ThreadingTCPServer):
    """Just enough SMTP for smtplib: EHLO, AUTH PLAIN, MAIL, RCPT, DATA, QUIT."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self):
        self.messages: list[dict] = []
        super().__init__(("127.0.0.1", 0), SmtpHandler)


class SmtpHandler(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        envelope = {"rcpt": [], "auth": None}
        self.reply("220 stub ESMTP")
        while line := self.rfile.readline().decode().rstrip("\r\n"):
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.reply("250-stub")
                self.reply("250 AUTH PLAIN")
            elif verb == "AUTH":
                envelope["auth"] = line.split(" ", 2)[2]
                self.reply("235 ok")
            elif verb == "MAIL":
                envelope["from"] = line
                self.reply("250 ok")
            elif verb == "RCPT":
                envelope["rcpt"].append(line.split(":", 1)[1].strip("<> "))
                self.reply("250 ok")
            elif verb == "DATA":
                self.reply("354 go on")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(chunk)
                envelope["data"] = b"".join(data)
                self.server.messages.append(envelope)
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 ok")


@pytest.fixture
def smtp():
    server = SmtpStub()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_email_sends_the_report(smtp):
    mail = notify.Email(
        host="127.0.0.1",
        port=smtp.server_address[1],
        sender="drbackup@example.com",
        recipients=("oncall@example.com", "dba@example.com"),
        username="drbackup",
        password="pw",
    )
    notify.send([mail], notify.report_message(critical_report()))
    (envelope,) = smtp.messages
    assert envelope["rcpt"] == ["oncall@example.com", "dba@example.com"]
    assert envelope["auth"]  # AUTH PLAIN with the configured credentials
    message = email.message_from_bytes(envelope["data"])
    assert message["Subject"] == "[drbackup] drbackup health CRITICAL: app"
    assert message["To"] == "oncall@example.com, dba@example.com"
    assert "last backup is 2d old" in message.get_payload()


def test_one_failing_destination_does_not_stop_the_others(smtp):
    mail = notify.Email(
        "127.0.0.1", "d@example.com", ("o@example.com",), port=smtp.server_address[1]
    )
    dead = notify.Webhook("http://127.0.0.1:1/hook", timeout=2)
    with pytest.raises(notify.NotifyError) as info:
        notify.send([dead, mail], notify.failure_message("nightly", "backup", "pg_dump failed"))
    assert info.value.message.startswith(
        "notification failed: webhook http://127.0.0.1 unreachable"
    )
    assert len(smtp.messages) == 1


def test_destinations_from_config_shapes():
    class Section:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    config = Section(
        notifications=Section(
            webhook=Section(url="https://hooks.example.com/x", timeout=timedelta(seconds=3)),
            email=Section(host="smtp", port=587, sender="a@b", to=["c@d"], starttls=True),
            on_failure=True,
        )
    )
    hook, mail = notify.destinations_from_config(config)
    assert (hook.url, hook.timeout) == ("https://hooks.example.com/x", 3.0)
    assert (mail.host, mail.port, mail.recipients, mail.starttls) == ("smtp", 587, ("c@d",), True)
    assert notify.notify_failures(config)
    with pytest.raises(Exception, match="no notification destinations configured"):
        notify.destinations_from_config(Section(), required=True)
