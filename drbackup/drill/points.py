"""Where a physical drill recovers to: the plan's ``point``, and how it is resolved.

``point`` forms (docs/drills.md):

* ``latest``: the end of the archived WAL;
* ``random``: a second drawn uniformly inside the restorable window (oldest to newest
  restorable second, ``wal check``), so that over months every part of it is exercised;
* ``fingerprint``: the consistent point (an exact LSN) of the newest logical backup whose
  snapshot came from a temporary logical replication slot, inside the window; the drill then
  compares the restored databases with that backup's fingerprint row by row;
* an ISO 8601 time (``2026-11-23T02:00:00Z``): that second;
* an LSN (``0/1501D80``): that WAL position.

No ``point`` in the plan: ``fingerprint`` when such a backup exists in the window, else
``latest``.

The LSN semantics (pinned by tests/integration/test_drill_physical.py): a logical slot's
consistent point is the end of the WAL record at which its snapshot became consistent.  A
transaction is in the snapshot exactly when its commit record starts before that LSN.
Recovery with ``recovery_target_lsn = <point>`` and ``recovery_target_inclusive = off``
replays exactly the records that start before it, so the restore holds exactly the
transactions of the snapshot.  (``inclusive = on`` would also replay the record starting at
the point: one transaction too many when that record is a commit.)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic_core import PydanticCustomError

from drbackup.config.types import config_error
from drbackup.errors import UsageError
from drbackup.sources.postgres.wal import format_lsn, parse_lsn

POINT_MODES = ("latest", "random", "fingerprint", "time", "lsn")
_LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
_POINT_FORMS = (
    "expected 'latest', 'random', 'fingerprint', an ISO 8601 time or an LSN (e.g. 0/1501D80)"
)


@dataclass(frozen=True)
class PointChoice:
    """The ``point`` of a physical drill plan (see the module docstring)."""

    mode: str  # one of POINT_MODES
    time: datetime | None = None
    lsn: int | None = None

    def describe(self) -> str:
        if self.mode == "time":
            return f"time {self.time.isoformat()}"
        if self.mode == "lsn":
            return f"LSN {format_lsn(self.lsn)}"
        return self.mode


def parse_point(value: Any) -> PointChoice:
    """A :class:`PointChoice` from the plan's value; raises the plan's validation error."""
    if isinstance(value, PointChoice):
        return value
    if isinstance(value, datetime):  # YAML reads an unquoted timestamp itself
        return PointChoice("time", time=value if value.tzinfo else value.replace(tzinfo=UTC))
    text = str(value).strip() if isinstance(value, str) else ""
    if text in ("latest", "random", "fingerprint"):
        return PointChoice(text)
    if _LSN_RE.match(text):
        return PointChoice("lsn", lsn=parse_lsn(text.upper()))
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        when = None
    if when is None:
        raise config_error("point", _POINT_FORMS)
    return PointChoice("time", time=when if when.tzinfo else when.replace(tzinfo=UTC))


def point_from_option(text: str) -> PointChoice:
    """``--point TEXT`` of the CLI; UsageError (one line, the forms) when it is none."""
    try:
        return parse_point(text)
    except PydanticCustomError:
        raise UsageError(f"invalid point {text!r}", hint=_POINT_FORMS) from None


def random_second(oldest: datetime, newest: datetime, rng=None) -> datetime:
    """A whole second drawn uniformly from ``oldest`` to ``newest`` (both included)."""
    rng = rng or random.SystemRandom()
    first, last = oldest.replace(microsecond=0), newest.replace(microsecond=0)
    span = max(int((last - first).total_seconds()), 0)
    return first + timedelta(seconds=rng.randint(0, span))
