"""Past drills from their reports, and the RTO trend (pure functions).

A history entry is the JSON listing of one target of one report (``drill history --json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from statistics import median
from typing import Any

from drbackup.drill.record import DrillReport, TargetReport, as_report

SPARKS = "▁▂▃▄▅▆▇█"


def history_entries(report: DrillReport | Mapping[str, Any]) -> list[dict]:
    """One listing entry per target of a report (a report may cover several targets)."""
    report = as_report(report)
    return [_entry(report, target) for target in report.targets]


def _entry(report: DrillReport, target: TargetReport) -> dict:
    timings, objectives = target.timings, target.objectives
    return {
        "drill_id": report.drill_id,
        "plan": report.plan,
        "target": target.target,
        "backup_id": target.backup_id,
        "status": target.status or report.status,
        "started_at": report.started_at.isoformat(),
        "restore_s": timings.restore_s if timings else None,
        "verification_s": timings.verification_s if timings else None,
        "total_s": timings.total_s if timings else None,
        "rto_s": objectives.rto_s if objectives else None,
        "failed": [c.name for c in report.failed_checks(target.target)],
        "signed": report.signature is not None,
    }


def sparkline(values: list[float]) -> str:
    """``▁▃▇``: each value's height between the smallest and largest."""
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    return "".join(SPARKS[round((v - low) / span * (len(SPARKS) - 1))] for v in values)


def rto_trend(entries: list[dict]) -> dict[str, dict]:
    """Per target: restore-and-verify times oldest first, median, last vs previous, sparkline.

    Drills whose restore failed have no time and are left out of the series.
    """
    trend: dict[str, dict] = {}
    for entry in sorted(entries, key=lambda e: (e["started_at"], e["drill_id"])):
        if entry["total_s"] is None:
            continue
        trend.setdefault(entry["target"], {"series": []})["series"].append(entry["total_s"])
    for target, info in trend.items():
        series = info["series"]
        info["drills"] = len(series)
        info["last_s"] = series[-1]
        info["median_s"] = median(series)
        info["min_s"], info["max_s"] = min(series), max(series)
        previous = series[-2] if len(series) > 1 else None
        info["change_pct"] = (
            round(100 * (series[-1] - previous) / previous, 1) if previous else None
        )
        info["sparkline"] = sparkline(series)
        rto = next((e["rto_s"] for e in reversed(entries) if e["target"] == target), None)
        info["rto_s"] = rto
        info["headroom_pct"] = round(100 * (1 - series[-1] / rto), 1) if rto else None
    return trend
