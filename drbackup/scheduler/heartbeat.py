"""Dead-man's-switch heartbeats: a healthchecks.io-style ping URL per job.

A job with ``heartbeat:`` makes the daemon ping ``URL/start`` when a run of the job starts,
``URL`` when it ended well and ``URL/fail`` when a target failed (the protocol of
healthchecks.io, also spoken by its self-hosted build and by Cronitor's and Uptime Kuma's
compatible endpoints).  The monitor outside the daemon alerts when an expected ping does
not come: a daemon that has died, hung or lost its schedule is noticed by the absence of a
message it can no longer send.

A ping is a POST whose body is one line saying what happened (healthchecks keeps it with
the ping).  A ping that fails is reported to the caller and never fails the job.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from drbackup import __version__
from drbackup.scheduler.logs import emit

START, SUCCESS, FAILURE = "start", "success", "fail"
_SUFFIX = {START: "/start", SUCCESS: "", FAILURE: "/fail"}
BODY_LIMIT = 10_000  # healthchecks keeps the first 100 kB; a line is enough


@dataclass(frozen=True)
class Heartbeat:
    """One job's ping URL (it names the check: a secret) and how long a ping may take."""

    url: str = field(repr=False)
    timeout: float = 10.0

    @property
    def name(self) -> str:
        parts = urlsplit(self.url)
        return f"heartbeat {parts.scheme}://{parts.hostname}"

    def url_for(self, event: str) -> str:
        """The URL pinged for ``event`` (``start``, ``success``, ``fail``)."""
        base, query = (self.url.split("?", 1) + [""])[:2]
        return base.rstrip("/") + _SUFFIX[event] + (f"?{query}" if query else "")


def ping(heartbeat: Heartbeat, event: str, message: str = "") -> str | None:
    """POST ``message`` to the URL of ``event``; None when it was received, else why not
    (one line naming the host, never the URL's token)."""
    request = urllib.request.Request(
        heartbeat.url_for(event),
        data=message.encode("utf-8")[:BODY_LIMIT],
        method="POST",
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "User-Agent": f"drbackup/{__version__}",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=heartbeat.timeout) as response:
            response.read(1024)
    except urllib.error.HTTPError as exc:
        return f"{heartbeat.name} answered {exc.code} {exc.reason} to the {event} ping".lower()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{heartbeat.name} unreachable for the {event} ping: {reason}".lower()
    return None


def beat(heartbeat: Heartbeat | None, event: str, job: str, message: str) -> None:
    """Ping ``heartbeat`` (if the job has one) for ``event``; a failed ping is logged as a
    ``heartbeat_failed`` warning and never fails the job."""
    if heartbeat is None:
        return
    problem = ping(heartbeat, event, message)
    if problem is not None:
        emit("heartbeat_failed", logging.WARNING, job=job, ping=event, error=problem)
