"""Notifications through Apprise: Slack, Microsoft Teams, Discord, PagerDuty, ntfy, email,
generic JSON webhooks and the ~100 other services Apprise knows.

Used for health reports (``drbackup report --notify``, the daemon's report jobs: both
through ``actions/report.py``) and for failed daemon jobs.  Every destination is tried;
failures are collected and raised as one :class:`NotifyError` at the end, so a broken
webhook never silences the email.  Messages are written for people (``report/message.py``):
no fixed-width tables; Apprise renders them for each service.

Configuration (``notifications:`` in the config file, docs/daemon.md)::

    notifications:
      urls_file: /run/secrets/apprise-urls   # Apprise URLs, one per line (they carry tokens)
      on_failure: true                       # the daemon notifies each failed job

The settings of earlier versions keep working: ``webhook`` becomes the Apprise URL of the
service it points at (Slack, Discord, ... recognised by their address) or a generic JSON
webhook whose message is in ``text`` (Slack-compatible); ``email`` becomes a ``mailto://``
URL (:func:`webhook_url`, :func:`email_url`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import apprise

from drbackup import __version__
from drbackup.errors import ConfigError, DrbackupError
from drbackup.report.health import HealthReport
from drbackup.report.message import report_body, report_subject

_TYPES = {
    "OK": apprise.NotifyType.SUCCESS,
    "WARNING": apprise.NotifyType.WARNING,
    "CRITICAL": apprise.NotifyType.FAILURE,
    "UNKNOWN": apprise.NotifyType.FAILURE,
    "FAILED": apprise.NotifyType.FAILURE,
}
# Apprise's per-service extras that would make every message link to images on the internet
# and ntfy's Markdown rendering on (the messages are Markdown)
_QUIET = {"slack": {"footer": "no", "image": "no"}, "ntfy": {"image": "no", "format": "markdown"}}


class NotifyError(DrbackupError):
    """One or more notification destinations failed."""


@dataclass(frozen=True)
class Destination:
    """One Apprise URL (a secret: it carries tokens) and how errors name it."""

    url: str = field(repr=False)
    title_prefix: str = ""  # the email subject prefix of the old ``email`` settings

    @property
    def name(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}"


@dataclass(frozen=True)
class Message:
    """What every destination sends: a subject, a Markdown text, a status
    (OK, WARNING, CRITICAL, UNKNOWN, FAILED) that picks the message's colour and icon."""

    subject: str
    text: str
    status: str = "FAILED"


# -- sending ------------------------------------------------------------------------------


def send(destinations: list[Destination], message: Message) -> None:
    """Send to every destination; raise one NotifyError naming each that failed."""
    problems = [p for p in (_send_one(d, message) for d in destinations) if p]
    if problems:
        raise NotifyError(
            "notification failed: " + "; ".join(problems),
            hint="check 'notifications:' in the config and that the destination is reachable",
        )


def _send_one(destination: Destination, message: Message) -> str | None:
    """None when ``destination`` took the message, else why not (one line, no token)."""
    service = apprise.Apprise(asset=apprise.AppriseAsset(app_id="drbackup", app_desc="drbackup"))
    if not service.add(_quiet(destination.url)):
        return f"{destination.name}: not a notification url apprise {apprise.__version__} knows"
    with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as logs:
        sent = service.notify(
            title=f"{destination.title_prefix} {message.subject}".strip(),
            body=message.text,
            body_format=apprise.NotifyFormat.MARKDOWN,
            notify_type=_TYPES.get(message.status, apprise.NotifyType.INFO),
        )
        said = logs.getvalue().strip().splitlines()
    if sent:
        return None
    return f"{destination.name} failed: " + (said[-1] if said else "no reason given").lower()


def _quiet(url: str) -> str:
    """``url`` with the service's decorations off (footer, images), unless it sets them."""
    parts = urlsplit(url)
    extras = _QUIET.get(parts.scheme.rstrip("s"), {})
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    added = {k: v for k, v in extras.items() if k not in query}
    if not added:
        return url
    return parts._replace(query=urlencode({**query, **added})).geturl()


# -- messages -----------------------------------------------------------------------------


def report_message(report: HealthReport) -> Message:
    """The health report as a message: the targets with problems in the subject."""
    return Message(report_subject(report), report_body(report), report.status.name)


def failure_message(job: str, kind: str, error: str, when: datetime | None = None) -> Message:
    """A failed daemon job as a message."""
    when = when or datetime.now(UTC)
    return Message(
        subject=f"drbackup job {job} failed",
        text=f"**FAILED**: job **{job}** ({kind}) at {when:%Y-%m-%d %H:%M:%S}Z\n\n{error}",
        status="FAILED",
    )


def send_report(destinations: list[Destination], report: HealthReport) -> None:
    send(destinations, report_message(report))


# -- configuration ------------------------------------------------------------------------


def destinations_from_config(config, *, required: bool = False) -> list[Destination]:
    """The destinations of ``config.notifications``: its Apprise URLs, then the old
    ``webhook`` and ``email`` settings as URLs; [] when none.

    Raises ConfigError when ``required`` and nothing is configured.
    """
    section = getattr(config, "notifications", None)
    found = [Destination(url) for url in _urls(getattr(section, "urls", None))]
    hook = getattr(section, "webhook", None) if section else None
    if hook is not None and _reveal(getattr(hook, "url", None)):
        found.append(Destination(webhook_url(_reveal(hook.url), _seconds(hook.timeout))))
    mail = getattr(section, "email", None) if section else None
    if mail is not None:
        found.append(Destination(email_url(mail), getattr(mail, "subject_prefix", "")))
    if required and not found:
        raise ConfigError(
            "no notification destinations configured",
            hint="add 'notifications:' with urls_file (Apprise URLs), a webhook or email to the "
            "config (docs/daemon.md)",
        )
    return found


def notify_failures(config) -> bool:
    """Whether the daemon should notify each failed job."""
    section = getattr(config, "notifications", None)
    return bool(section) and bool(getattr(section, "on_failure", True))


def webhook_url(url: str, timeout: float = 10.0) -> str:
    """The Apprise URL of an old ``webhook``: the service's own when Apprise recognises the
    address (``https://hooks.slack.com/services/...``, Discord, ...), else a JSON webhook
    (``json://``, ``jsons://`` for https) that puts the message in ``text`` as before."""
    if _native(url):
        return url
    parts = urlsplit(url)
    params = {f"-{k}": v for k, v in parse_qsl(parts.query, keep_blank_values=True)}
    params |= {":message": "text", "cto": f"{timeout:g}", "rto": f"{timeout:g}"}
    params["+User-Agent"] = f"drbackup/{__version__}"
    scheme = "jsons" if parts.scheme == "https" else "json"
    return parts._replace(scheme=scheme, query=urlencode(params)).geturl()


def _native(url: str) -> bool:
    """Whether Apprise recognises ``url`` as a service's own address (quietly: Apprise
    logs an error for every address it does not recognise)."""
    log = logging.getLogger("apprise")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        return apprise.Apprise.instantiate(url, suppress_exceptions=True) is not None
    finally:
        log.setLevel(level)


def email_url(mail) -> str:
    """The ``mailto://`` URL of the old ``email`` settings (host, port, tls, login, from, to)."""
    secure = bool(getattr(mail, "ssl", False) or getattr(mail, "starttls", False))
    mode = "ssl" if getattr(mail, "ssl", False) else "starttls" if secure else "insecure"
    username, password = getattr(mail, "username", None), _reveal(getattr(mail, "password", None))
    login = f"{quote(username, safe='')}:{quote(password or '', safe='')}@" if username else ""
    recipients = getattr(mail, "to", None) or getattr(mail, "recipients", ())
    params = {
        "smtp": mail.host,
        "from": getattr(mail, "sender", None) or getattr(mail, "from_", None),
        "to": ",".join(recipients),
        "mode": mode,
    }
    port = getattr(mail, "port", 25)
    scheme = "mailtos" if secure else "mailto"
    return f"{scheme}://{login}{mail.host}:{port}?{urlencode(params)}"


def _urls(value) -> list[str]:
    """Apprise URLs from ``notifications.urls`` (a secret): one per line; a URL has no
    spaces, so what follows one (``# Slack``) and ``#`` lines are comments."""
    lines = (_reveal(value) or "").splitlines()
    return [ln.split()[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def _reveal(value) -> str | None:
    if value is None:
        return None
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)


def _seconds(value) -> float:
    return value.total_seconds() if hasattr(value, "total_seconds") else float(value)
