"""The health report as a nagios/Icinga plugin's output.

The plugin convention (Nagios plugin guidelines, also Icinga's and Sensu's)::

    DRBACKUP CRITICAL - ledger: last drill ... failed: tables; 1 more | 'orders backup_age'=...
    ledger CRITICAL: last drill ... failed: tables
    orders OK

The first line is the service state and a summary, then ``|`` and the performance data;
the following lines are the long output, one per target and finding.  The exit code (the
report's) is the state: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

Performance data per target: ``backup_age`` (seconds, critical above the rpo),
``drill_rto`` (the last drill's measured restore and verification seconds, warning above
80% of the rto, critical above it), ``restore_points``; and the repository's size.
"""

from __future__ import annotations

from drbackup.report.health import (
    RTO_WARN_FRACTION,
    HealthReport,
    Status,
    TargetHealth,
    severity,
)

SHOWN_FINDINGS = 3  # findings quoted on the first line; all are in the long output


def render_nagios(report: HealthReport) -> str:
    """The plugin output: the state line with perfdata, then the long output."""
    lines = [f"DRBACKUP {report.status.name} - {_summary(report)} | {perfdata(report)}"]
    lines += [f"{where} {status.name}: {message}" for where, status, message in _findings(report)]
    lines += [f"{t.facts.name} OK" for t in report.targets if t.status == Status.OK]
    return "\n".join(lines) + "\n"


def _findings(report: HealthReport) -> list[tuple[str, Status, str]]:
    """Every finding worth a line, worst first (the report's own, then each target's)."""
    shared = {f.message for f in report.findings}
    found = [("drbackup", f.status, f.message) for f in report.findings]
    for t in report.targets:
        found += [
            (t.facts.name, f.status, f.message)
            for f in t.findings
            if f.message not in shared and f.status != Status.OK
        ]
    return sorted(found, key=lambda item: -severity(item[1]))


def _summary(report: HealthReport) -> str:
    found = _findings(report)
    if not found:
        count = len(report.targets)
        return f"{count} target{'s' if count != 1 else ''} OK"
    shown = "; ".join(f"{where}: {message}" for where, _, message in found[:SHOWN_FINDINGS])
    more = len(found) - SHOWN_FINDINGS
    return shown + (f"; {more} more" if more > 0 else "")


def perfdata(report: HealthReport) -> str:
    """``'label'=value[unit];warn;crit;min;max`` items, space separated."""
    items = []
    now = report.generated_at
    for t in report.targets:
        items += _target_perfdata(t, now)
    if report.repository.size is not None:
        items.append(_item("repository_size", report.repository.size, "B"))
    return " ".join(items)


def _target_perfdata(t: TargetHealth, now) -> list[str]:
    f = t.facts
    items = []
    if f.newest is not None:
        age = (now - f.newest.recovery_point).total_seconds()
        items.append(_item(f"{f.name} backup_age", age, "s", crit=f.rpo.total_seconds()))
    measured = next((d.restore_s for d in reversed(f.drills) if d.restore_s is not None), None)
    if measured is not None:
        rto = f.rto.total_seconds()
        items.append(
            _item(f"{f.name} drill_rto", measured, "s", warn=RTO_WARN_FRACTION * rto, crit=rto)
        )
    items.append(_item(f"{f.name} restore_points", f.restore_points, ""))
    return items


def _item(label: str, value: float, unit: str, warn=None, crit=None) -> str:
    """One perfdata item; the label quoted (quotes doubled, '=' is not allowed in it)."""
    quoted = "'" + label.replace("=", "_").replace("'", "''") + "'"
    return f"{quoted}={_number(value)}{unit};{_number(warn)};{_number(crit)};0;"


def _number(value) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}".rstrip("0")
