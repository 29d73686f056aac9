"""Notifications: a generic webhook (JSON, Slack-compatible ``text``) and SMTP email.

Used for health reports (``drbackup report --notify``, the daemon's report jobs: both
through ``actions/report.py``) and for failed daemon jobs.  Every destination is tried; failures are collected and raised as one
:class:`NotifyError` at the end, so a broken webhook never silences the email.

Configuration (``notifications:`` in the config file)::

    notifications:
      webhook: {url_file: /run/secrets/webhook-url, timeout: 10s}   # the url is a secret
      email:
        host: smtp.example.com
        port: 587
        starttls: true
        username: drbackup
        password_file: /run/secrets/smtp-password
        sender: drbackup@example.com
        to: [oncall@example.com]
      on_failure: true          # the daemon notifies each failed job
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from urllib.parse import urlsplit

from drbackup import __version__
from drbackup.errors import ConfigError, DrbackupError
from drbackup.report.health import HealthReport
from drbackup.report.render import render_text, report_dict


class NotifyError(DrbackupError):
    """One or more notification destinations failed."""


@dataclass(frozen=True)
class Webhook:
    url: str = field(repr=False)  # Slack-style urls carry a token
    timeout: float = 10.0

    @property
    def name(self) -> str:
        parts = urlsplit(self.url)
        return f"webhook {parts.scheme}://{parts.hostname}"


@dataclass(frozen=True)
class Email:
    host: str
    sender: str
    recipients: tuple[str, ...]
    port: int = 25
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    ssl: bool = False
    timeout: float = 10.0
    subject_prefix: str = "[drbackup]"

    @property
    def name(self) -> str:
        return f"email via {self.host}:{self.port}"


@dataclass(frozen=True)
class Message:
    """What every destination sends: a subject, a text, and JSON details for webhooks."""

    subject: str
    text: str
    details: dict = field(default_factory=dict)


# -- sending ------------------------------------------------------------------------------


def send_webhook(hook: Webhook, message: Message) -> None:
    """POST ``{"text": ..., "subject": ..., **details}`` as JSON; raises NotifyError."""
    body = json.dumps(
        {
            "text": f"{message.subject}\n{message.text}",
            "subject": message.subject,
            **message.details,
        },
        default=str,
    ).encode()
    request = urllib.request.Request(
        hook.url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": f"drbackup/{__version__}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=hook.timeout) as response:
            response.read(1024)
    except urllib.error.HTTPError as exc:
        raise NotifyError(f"{hook.name} answered {exc.code} {exc.reason}".lower()) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise NotifyError(f"{hook.name} unreachable: {reason}".lower()) from None


def send_email(mail: Email, message: Message) -> None:
    """Send ``message`` as a plain-text email; raises NotifyError."""
    msg = EmailMessage()
    msg["Subject"] = f"{mail.subject_prefix} {message.subject}".strip()
    msg["From"] = mail.sender
    msg["To"] = ", ".join(mail.recipients)
    msg.set_content(message.text)
    try:
        smtp_class = smtplib.SMTP_SSL if mail.ssl else smtplib.SMTP
        with smtp_class(mail.host, mail.port, timeout=mail.timeout) as smtp:
            if mail.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if mail.username:
                smtp.login(mail.username, mail.password or "")
            smtp.send_message(msg)
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        raise NotifyError(f"{mail.name} failed: {_first_line(exc)}") from None


def send(destinations: list, message: Message) -> None:
    """Send to every destination; raise one NotifyError naming each that failed."""
    problems = []
    for dest in destinations:
        try:
            (send_webhook if isinstance(dest, Webhook) else send_email)(dest, message)
        except NotifyError as exc:
            problems.append(exc.message)
    if problems:
        raise NotifyError(
            "notification failed: " + "; ".join(problems),
            hint="check 'notifications:' in the config and that the destination is reachable",
        )


# -- messages -----------------------------------------------------------------------------


def report_message(report: HealthReport) -> Message:
    """The health report as a message: the worst findings in the subject, all in the text."""
    problems = [t for t in report.targets if t.status.name != "OK"]
    names = ", ".join(t.facts.name for t in problems[:5]) or "all targets"
    subject = f"{report.status.name}: {names}" if problems else f"OK: {names}"
    return Message(
        subject=f"drbackup health {subject}",
        text=render_text(report),
        details={"status": report.status.name, "report": report_dict(report)},
    )


def failure_message(job: str, kind: str, error: str, when: datetime | None = None) -> Message:
    """A failed daemon job as a message."""
    when = when or datetime.now(UTC)
    return Message(
        subject=f"drbackup job {job} failed",
        text=f"job {job} ({kind}) failed at {when:%Y-%m-%d %H:%M:%S}Z: {error}",
        details={"status": "FAILED", "job": job, "kind": kind, "error": error},
    )


def send_report(destinations: list, report: HealthReport) -> None:
    send(destinations, report_message(report))


# -- configuration ------------------------------------------------------------------------


def destinations_from_config(config, *, required: bool = False) -> list:
    """Webhook and Email destinations from ``config.notifications``; [] when none.

    Raises ConfigError when ``required`` and nothing is configured.
    """
    section = getattr(config, "notifications", None)
    found = []
    hook = getattr(section, "webhook", None) if section else None
    if hook is not None and _reveal(getattr(hook, "url", None)):
        found.append(Webhook(_reveal(hook.url), _seconds(getattr(hook, "timeout", 10.0))))
    mail = getattr(section, "email", None) if section else None
    if mail is not None:
        found.append(_email(mail))
    if required and not found:
        raise ConfigError(
            "no notification destinations configured",
            hint="add 'notifications:' with a webhook or email to the config (docs/daemon.md)",
        )
    return found


def notify_failures(config) -> bool:
    """Whether the daemon should notify each failed job."""
    section = getattr(config, "notifications", None)
    return bool(section) and bool(getattr(section, "on_failure", True))


def _email(mail) -> Email:
    recipients = getattr(mail, "to", None) or getattr(mail, "recipients", ())
    return Email(
        host=mail.host,
        sender=getattr(mail, "sender", None) or getattr(mail, "from_", None),
        recipients=tuple(recipients),
        port=getattr(mail, "port", 25),
        username=getattr(mail, "username", None),
        password=_reveal(getattr(mail, "password", None)),
        starttls=bool(getattr(mail, "starttls", False)),
        ssl=bool(getattr(mail, "ssl", False)),
        timeout=_seconds(getattr(mail, "timeout", 10.0)),
        subject_prefix=getattr(mail, "subject_prefix", "[drbackup]"),
    )


def _reveal(value) -> str | None:
    if value is None:
        return None
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


def _seconds(value) -> float:
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__).lower()
