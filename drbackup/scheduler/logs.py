"""The daemon's logs: one JSON object per line on stderr, ``emit(event, **fields)``."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("drbackup.daemon")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, event, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or record.name,
        }
        if not hasattr(record, "event"):  # a library's record (apscheduler)
            entry["message"] = record.getMessage()
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.levelno >= logging.ERROR:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, sort_keys=False)


def setup_logging(stream=None, level: int = logging.INFO) -> logging.Handler:
    """Send ``drbackup.*`` and ``apscheduler`` logs as JSON lines to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name, lvl in (("drbackup", level), ("apscheduler", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(lvl)
        logger.propagate = False
    return handler


def emit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with ``fields`` (job, target, run_id, duration_s, error, ...)."""
    fields = {k: v for k, v in fields.items() if v is not None}
    log.log(level, event, extra={"event": event, "fields": fields})
