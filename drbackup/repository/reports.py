"""Drill reports in the repository: ``reports/<target>/<drill id>``, encrypted documents.

The report's content (drill/report.py) is the drill's; where it lives is the repository's.
Drill ids sort by time, so the newest report of a target is the last key.
"""

from __future__ import annotations

REPORT_PREFIX = "reports/"


def report_key(target: str, drill_id: str) -> str:
    """The key of the report of drill ``drill_id`` of ``target``."""
    return f"{REPORT_PREFIX}{target}/{drill_id}"


def report_target(key: str) -> str:
    """The target a report key belongs to."""
    return key[len(REPORT_PREFIX) :].split("/", 1)[0]


def list_report_keys(storage, target: str | None = None, *, newest_first=False) -> list[str]:
    """Keys of every report (of ``target``, if given), oldest drill first (or newest)."""
    prefix = f"{REPORT_PREFIX}{target}/" if target else REPORT_PREFIX
    keys = [info.key for info in storage.list(prefix)]
    return sorted(keys, key=lambda k: k.rsplit("/", 1)[-1], reverse=newest_first)
