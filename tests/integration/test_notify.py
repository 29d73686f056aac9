"""Notifications through Apprise against real servers on loopback: an HTTP sink that
receives Slack, generic JSON (``json://``) and ntfy messages, and SMTP (a stub)."""

from __future__ import annotations

import email
import socketserver
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from apprise.plugins.slack import NotifySlack

from drbackup import notify
from drbackup.report.health import BackupFact, RepositoryFacts, TargetFacts, build_report
from tests.fixtures.httpsink import start_sink

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def critical_report():
    stale = TargetFacts(
        "app",
        "postgres",
        timedelta(hours=24),
        timedelta(hours=1),
        restore_points=1,
        newest=BackupFact("20261121T000000Z-aaaaaa", NOW - timedelta(days=2)),
    )
    fresh = TargetFacts(
        "crm",
        "postgres",
        timedelta(hours=24),
        timedelta(hours=1),
        restore_points=3,
        newest=BackupFact("20261123T090000Z-bbbbbb", NOW - timedelta(hours=3)),
    )
    return build_report(RepositoryFacts("/srv/repo", True, size=10), [fresh, stale], NOW)


# -- an HTTP sink --------------------------------------------------------------------------


@pytest.fixture
def sink():
    sink, server = start_sink()
    yield sink
    server.shutdown()
    server.server_close()


def test_the_report_reaches_slack_json_and_ntfy_readable_in_each(sink, monkeypatch):
    # Apprise's Slack plugin posts to hooks.slack.com: point that one constant at the sink.
    monkeypatch.setattr(NotifySlack, "webhook_url", f"{sink.url}/services")
    host = sink.url.removeprefix("http://")
    destinations = [
        notify.Destination("slack://T0KEN1/B0KEN2/S3CRET"),
        notify.Destination(f"json://{host}/generic"),
        notify.Destination(f"ntfy://{host}/drbackup-alerts"),
    ]
    notify.send(destinations, notify.report_message(critical_report()))
    by_path = {r.path.split("/")[1]: r for r in sink.wait_for(3)}
    slack, generic, ntfy = by_path["services"], by_path["generic"], by_path[""]
    assert slack.path == "/services/T0KEN1/B0KEN2/S3CRET"
    (attachment,) = slack.json()["attachments"]
    assert attachment["title"] == "drbackup health CRITICAL: app, crm"
    # Slack mrkdwn: Apprise turned the Markdown **bold** into *bold*
    assert "- *app* CRITICAL: last backup is 2d old, older than the rpo 1d" in attachment["text"]
    assert "footer" not in attachment  # no links to images on the internet
    payload = generic.json()
    assert payload["title"] == "drbackup health CRITICAL: app, crm"
    assert payload["type"] == "failure"
    lines = payload["message"].splitlines()
    assert lines[0] == "**CRITICAL**: 2 of 2 targets need attention"  # Markdown as written
    # worst first, one line per target with its findings in words, no fixed-width columns
    assert lines[-2:] == [
        "- **app** CRITICAL: last backup is 2d old, older than the rpo 1d; no passing drill on "
        "record",
        "- **crm** WARNING: no passing drill on record",
    ]
    assert ntfy.path == "/"
    assert ntfy.json()["topic"] == "drbackup-alerts"
    assert ntfy.json()["title"] == "drbackup health CRITICAL: app, crm"
    assert "- **app** CRITICAL: last backup is 2d old" in ntfy.json()["message"]
    assert ntfy.headers["X-Markdown"] == "yes"  # the ntfy app renders it
    for request in (slack, generic, ntfy):
        body = request.text
        assert "TARGET" not in body and "AGE / RPO" not in body  # not the terminal table


def test_an_old_webhook_setting_still_gets_the_message_in_text(sink):
    config = SimpleNamespace(
        notifications=SimpleNamespace(
            webhook=SimpleNamespace(url=f"{sink.url}/hooks/T0KEN?channel=ops", timeout=3.0),
            email=None,
            on_failure=True,
        )
    )
    (destination,) = notify.destinations_from_config(config)
    assert destination.url.startswith("json://127.0.0.1:")
    notify.send([destination], notify.failure_message("nightly", "backup", "pg_dump failed"))
    (request,) = sink.wait_for(1)
    assert request.method == "POST" and request.path == "/hooks/T0KEN?channel=ops"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"].startswith("drbackup/")
    payload = request.json()
    assert payload["title"] == "drbackup job nightly failed"
    assert payload["text"].startswith("**FAILED**: job **nightly** (backup) at ")
    assert payload["text"].endswith("pg_dump failed")


def test_a_native_service_address_becomes_that_service():
    assert notify.webhook_url("https://hooks.slack.com/services/T0/B0/XX") == (
        "https://hooks.slack.com/services/T0/B0/XX"
    )
    assert notify.webhook_url("https://example.com/hook").startswith("jsons://example.com/hook?")


def test_errors_name_the_host_not_the_token(sink):
    sink.status = 500
    host = sink.url.removeprefix("http://")
    with pytest.raises(notify.NotifyError) as info:
        notify.send(
            [notify.Destination(f"json://{host}/hooks/T0KEN")],
            notify.failure_message("nightly", "backup", "boom"),
        )
    assert info.value.message.startswith("notification failed: json://127.0.0.1 failed: ")
    assert "500" in info.value.message
    assert "T0KEN" not in info.value.message
    with pytest.raises(notify.NotifyError, match="nope://x: not a notification url apprise"):
        notify.send([notify.Destination("nope://x/T0KEN")], notify.failure_message("j", "b", "e"))


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


def _old_email(smtp, **overrides):
    """The ``notifications.email`` settings of earlier versions."""
    settings = dict(
        host="127.0.0.1",
        port=smtp.server_address[1],
        sender="drbackup@example.com",
        to=["oncall@example.com", "dba@example.com"],
        username="drbackup",
        password="p@ss word",
        starttls=False,
        ssl=False,
        subject_prefix="[drbackup]",
    )
    return SimpleNamespace(**{**settings, **overrides})


def test_old_email_settings_send_the_report_through_apprise(smtp):
    config = SimpleNamespace(notifications=SimpleNamespace(email=_old_email(smtp), webhook=None))
    (mail,) = notify.destinations_from_config(config)
    assert mail.url.startswith("mailto://drbackup:p%40ss%20word@127.0.0.1:")
    assert "p@ss" not in repr(mail)
    notify.send([mail], notify.report_message(critical_report()))
    recipients = sorted(r for envelope in smtp.messages for r in envelope["rcpt"])
    assert set(recipients) == {"oncall@example.com", "dba@example.com"}
    envelope = smtp.messages[0]
    assert envelope["auth"]  # AUTH PLAIN with the configured credentials
    message = email.message_from_bytes(envelope["data"])
    assert message["Subject"] == "[drbackup] drbackup health CRITICAL: app, crm"
    assert message["From"] == "drbackup@example.com"
    plain = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    assert "app CRITICAL: last backup is 2d old" in plain.get_payload(decode=True).decode()
    html = next(p for p in message.walk() if p.get_content_type() == "text/html")
    assert "<strong>app</strong> CRITICAL" in html.get_payload(decode=True).decode()


def test_one_failing_destination_does_not_stop_the_others(smtp):
    mail = notify.Destination(notify.email_url(_old_email(smtp, username=None, to=["o@e.com"])))
    dead = notify.Destination(notify.webhook_url("http://127.0.0.1:1/hook/T0KEN", timeout=2))
    with pytest.raises(notify.NotifyError) as info:
        notify.send([dead, mail], notify.failure_message("nightly", "backup", "pg_dump failed"))
    assert info.value.message.startswith("notification failed: json://127.0.0.1 failed: ")
    assert "T0KEN" not in info.value.message
    assert len(smtp.messages) == 1


def test_destinations_from_config_shapes(tmp_path):
    config = SimpleNamespace(
        notifications=SimpleNamespace(
            urls="# chat\nslack://T/B/C   # ops channel\n\nntfy://ntfy.example.com/alerts\n",
            webhook=SimpleNamespace(
                url="https://hooks.example.com/x", timeout=timedelta(seconds=3)
            ),
            email=SimpleNamespace(host="smtp", port=587, sender="a@b", to=["c@d"], starttls=True),
            on_failure=True,
        )
    )
    slack, ntfy, hook, mail = notify.destinations_from_config(config)
    assert (slack.url, ntfy.url) == ("slack://T/B/C", "ntfy://ntfy.example.com/alerts")
    assert hook.url.startswith("jsons://hooks.example.com/x?")
    assert "cto=3&rto=3" in hook.url and "%3Amessage=text" in hook.url
    assert mail.url == ("mailtos://smtp:587?smtp=smtp&from=a%40b&to=c%40d&mode=starttls")
    assert notify.notify_failures(config)
    with pytest.raises(Exception, match="no notification destinations configured"):
        notify.destinations_from_config(SimpleNamespace(), required=True)


def test_urls_file_in_the_config_file(tmp_path, sink):
    from drbackup.config import Config

    urls = tmp_path / "apprise-urls"
    urls.write_text(f"# ops\njson://{sink.url.removeprefix('http://')}/from-config  # json\n")
    config = Config.model_validate({"notifications": {"urls_file": str(urls)}})
    assert "from-config" not in repr(config.notifications)  # a secret
    (destination,) = notify.destinations_from_config(config, required=True)
    notify.send([destination], notify.failure_message("nightly", "backup", "boom"))
    (request,) = sink.wait_for(1)
    assert (
        request.path == "/from-config" and request.json()["title"] == "drbackup job nightly failed"
    )
