"""The health report as text (a table), JSON, Markdown and a Prometheus textfile.

The JSON form is the documented schema (docs/daemon.md, "Report JSON"); the Prometheus
form is for node-exporter's textfile collector, with ``drbackup_health_*`` series.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from drbackup import files
from drbackup.report.health import HealthReport, Status, TargetHealth, human_age, severity
from drbackup.units import human_size

FORMATS = ("text", "json", "markdown", "prometheus", "nagios", "html")


def render(report: HealthReport, fmt: str) -> str:
    """The report in ``fmt`` (one of :data:`FORMATS`), ending with a newline."""
    if fmt == "nagios":
        from drbackup.report.nagios import render_nagios

        return render_nagios(report)
    return {
        "text": render_text,
        "json": render_json,
        "markdown": render_markdown,
        "prometheus": render_prometheus,
    }[fmt](report)


# -- JSON ---------------------------------------------------------------------------------


def report_dict(report: HealthReport) -> dict:
    now = report.generated_at
    return {
        "format": "drbackup-health-report",
        "version": 1,
        "generated_at": _iso(now),
        "status": report.status.name,
        "exit_code": report.exit_code,
        "repository": {
            "url": report.repository.url,
            "id": report.repository.id,
            "reachable": report.repository.reachable,
            "wrong_key": report.repository.wrong_key,
            "error": report.repository.error,
            "size_bytes": report.repository.size,
        },
        "findings": [_finding(f) for f in report.findings],
        "targets": [_target_dict(t, now) for t in report.targets],
    }


def _target_dict(health: TargetHealth, now: datetime) -> dict:
    f = health.facts
    passing = [d for d in f.drills if d.passed]
    last = f.drills[-1] if f.drills else None
    return {
        "target": f.name,
        "kind": f.kind,
        "status": health.status.name,
        "findings": [_finding(x) for x in health.findings],
        "rpo_s": f.rpo.total_seconds(),
        "rto_s": f.rto.total_seconds(),
        "last_backup": None
        if f.newest is None
        else {
            "backup_id": f.newest.backup_id,
            "recovery_point": _iso(f.newest.recovery_point),
            "age_s": round((now - f.newest.recovery_point).total_seconds(), 3),
            "size_bytes": f.newest.size,
            "stored_bytes": f.newest.stored_size,
        },
        "restore_points": f.restore_points,
        "oldest_restore_point": _iso(f.oldest.recovery_point) if f.oldest else None,
        "last_drill": None
        if last is None
        else {
            "drill_id": last.drill_id,
            "started_at": _iso(last.started_at),
            "age_s": round((now - last.started_at).total_seconds(), 3),
            "status": last.status,
            "kind": last.kind,
            "restore_s": last.restore_s,
            "failed_checks": list(last.failed_checks),
        },
        "last_passing_drill": None
        if not passing
        else {"drill_id": passing[-1].drill_id, "started_at": _iso(passing[-1].started_at)},
        "rto_trend_s": [d.restore_s for d in f.drills if d.restore_s is not None],
        "rto_trend_by_kind_s": _trend_by_kind(f.drills),
        "failed_runs_24h": None if f.failed_runs is None else len(f.failed_runs),
        "interrupted_runs_24h": None if f.failed_runs is None else len(f.interrupted_runs),
        "refused_runs_24h": None if f.failed_runs is None else len(f.refused_runs),
        "unreadable": list(f.unreadable),
        "wal": _wal_dict(f.wal),
    }


def _wal_dict(wal) -> dict | None:
    if wal is None:
        return None
    return {
        "cluster": wal.cluster,
        "window": {"oldest": _iso(wal.oldest), "newest": _iso(wal.newest)},
        "gaps": list(wal.gaps),
        "breaks": list(wal.breaks),
        "archive_lag_s": wal.lag_seconds,
        "archive_lag_bytes": wal.lag_bytes,
        "archive_lag_error": wal.lag_error,
        "base_backups": wal.base_backups,
        "slot": wal.slot,
        "slot_max_retained_bytes": wal.slot_max_retained,
    }


def _finding(finding) -> dict:
    return {"status": finding.status.name, "message": finding.message}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def render_json(report: HealthReport) -> str:
    return json.dumps(report_dict(report), indent=2, sort_keys=False) + "\n"


# -- text and markdown ------------------------------------------------------------------------


def _trend_by_kind(drills) -> dict[str, list[float]]:
    """Restore-and-verify times per drill kind (logical, physical, bucket), oldest first."""
    trend: dict[str, list[float]] = {}
    for d in drills:
        if d.restore_s is not None:
            trend.setdefault(d.kind, []).append(d.restore_s)
    return trend


HEADERS = [
    "target",
    "status",
    "last backup",
    "age / rpo",
    "restore points",
    "last drill",
    "rto trend",
    "failed 24h",
]


def _rows(report: HealthReport) -> list[list[str]]:
    now = report.generated_at
    rows = []
    for t in report.targets:
        f = t.facts
        last = f.drills[-1] if f.drills else None
        trend = _trend_text(f.drills)
        rows.append(
            [
                f.name,
                t.status.name,
                f.newest.backup_id if f.newest else "-",
                f"{human_age(now - f.newest.recovery_point)} / {human_age(f.rpo)}"
                if f.newest
                else f"- / {human_age(f.rpo)}",
                f"{f.restore_points}"
                + (f" (oldest {f.oldest.recovery_point:%Y-%m-%d})" if f.oldest else ""),
                f"{last.status}{_kind_mark(last)} {human_age(now - last.started_at)} ago"
                if last
                else "never",
                trend + (f" / rto {human_age(f.rto)}" if trend else "") or "-",
                "?" if f.failed_runs is None else str(len(f.failed_runs)),
            ]
        )
    return rows


def _kind_mark(drill) -> str:
    return " (physical)" if drill.kind == "physical" else ""


def _trend_text(drills) -> str:
    """The last five restore times, per kind when physical and logical drills both exist."""
    by_kind = _trend_by_kind(drills)
    if len(by_kind) <= 1:
        series = next(iter(by_kind.values()), [])
        return " ".join(f"{s:.0f}s" for s in series[-5:])
    return "; ".join(
        f"{kind} " + " ".join(f"{s:.0f}s" for s in series[-5:])
        for kind, series in sorted(by_kind.items())
    )


def _summary(report: HealthReport) -> str:
    repo = report.repository
    if repo.wrong_key:
        where = f"repository {repo.url} WRONG KEY"
    elif repo.reachable:
        where = f"repository {repo.url} ({_size(repo.size)})"
    else:
        where = f"repository {repo.url} UNREACHABLE"
    return (
        f"drbackup health {report.status.name} at {report.generated_at:%Y-%m-%d %H:%M:%S}Z: {where}"
    )


def _all_findings(report: HealthReport) -> list[tuple[str, Status, str]]:
    """(where, status, message): the report's own findings once, then each target's."""
    out = [("(all)", f.status, f.message) for f in report.findings]
    shared = {f.message for f in report.findings}
    for t in report.targets:
        out += [(t.facts.name, f.status, f.message) for f in t.findings if f.message not in shared]
    return out


def render_text(report: HealthReport) -> str:
    rows = _rows(report)
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(HEADERS)
    ]
    lines = [_summary(report), ""]
    lines.append(
        "  ".join(h.upper().ljust(w) for h, w in zip(HEADERS, widths, strict=True)).rstrip()
    )
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    windows = [_window_line(t) for t in report.targets if t.facts.wal is not None]
    if windows:
        lines += ["", *windows]
    findings = _all_findings(report)
    if findings:
        lines.append("")
        lines += [f"{status.name:8}  {where}: {message}" for where, status, message in findings]
    return "\n".join(lines) + "\n"


def _window_line(t: TargetHealth) -> str:
    """``app: restorable 2026-11-23 02:00:00Z .. 2026-11-23 14:31:07Z, archive lag 0s``."""
    wal = t.facts.wal
    window = (
        f"restorable {wal.oldest:%Y-%m-%d %H:%M:%S}Z .. {wal.newest:%Y-%m-%d %H:%M:%S}Z"
        if wal.oldest and wal.newest
        else "nothing restorable from base backups and WAL"
    )
    if wal.lag_seconds is not None:
        lag = f"archive lag {wal.lag_seconds:.0f}s ({human_size(wal.lag_bytes or 0)})"
    else:
        lag = "archive lag unknown"
    gaps = f", {len(wal.gaps)} gap(s)" if wal.gaps else ""
    return f"{t.facts.name}: {window}, {lag}{gaps}"


def render_markdown(report: HealthReport) -> str:
    lines = [f"# drbackup health: **{report.status.name}**", "", _summary(report), ""]
    lines.append("| " + " | ".join(h.capitalize() for h in HEADERS) + " |")
    lines.append("|" + "---|" * len(HEADERS))
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in _rows(report)]
    findings = _all_findings(report)
    if findings:
        lines += ["", "## Findings", ""]
        lines += [f"- **{s.name}** {w}: {m}" for w, s, m in findings]
    return "\n".join(lines) + "\n"


def _size(n: int | None) -> str:
    return human_size(n, unknown="size unknown")


# -- prometheus ---------------------------------------------------------------------------


class _Collector:
    def __init__(self, report: HealthReport):
        self.report = report

    def collect(self):
        r = self.report
        yield _gauge(
            "report_severity",
            "Report status, higher is worse: 0 OK, 1 WARNING, 2 UNKNOWN, 3 CRITICAL",
            [],
            [([], severity(r.status))],
        )
        yield _gauge(
            "generated_timestamp_seconds",
            "When the report was made",
            [],
            [([], r.generated_at.timestamp())],
        )
        yield _gauge(
            "repository_up",
            "1 if the repository was reachable",
            [],
            [([], 1 if r.repository.reachable else 0)],
        )
        if r.repository.size is not None:
            yield _gauge(
                "repository_size_bytes",
                "Bytes stored in the repository",
                [],
                [([], r.repository.size)],
            )
        for name, help_text, value_of in _TARGET_SERIES:
            samples = [([t.facts.name], v) for t in r.targets if (v := value_of(t, r)) is not None]
            yield _gauge(name, help_text, ["target"], samples)
        yield _runs_counter(r)


def _gauge(name: str, help_text: str, labels: list[str], samples) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"drbackup_health_{name}", help_text, labels=labels)
    for label_values, value in samples:
        family.add_metric(label_values, float(value))
    return family


def _runs_counter(r: HealthReport) -> CounterMetricFamily:
    """Runs the catalog recorded per target and final status, ever (a counter: use
    ``increase()``); no samples when the catalog could not be read."""
    from drbackup.catalog.models import RUN_FINISHED

    family = CounterMetricFamily(
        "drbackup_health_runs",
        "Runs recorded in the catalog by final status (ok, failed, interrupted, refused)",
        labels=["target", "status"],
    )
    for t in r.targets:
        totals = t.facts.run_totals
        if totals is None or not r.repository.readable:
            continue
        for status in RUN_FINISHED:
            family.add_metric([t.facts.name, status], float(totals.get(status, 0)))
    return family


def _last_drill(t: TargetHealth):
    return t.facts.drills[-1] if t.facts.drills else None


def _last_pass(t: TargetHealth):
    return next((d for d in reversed(t.facts.drills) if d.passed), None)


_TARGET_SERIES = [
    (
        "severity",
        "Target status, higher is worse: 0 OK, 1 WARNING, 2 UNKNOWN, 3 CRITICAL",
        lambda t, r: severity(t.status),
    ),
    (
        "rpo_objective_seconds",
        "Recovery point objective (config rpo)",
        lambda t, r: t.facts.rpo.total_seconds(),
    ),
    (
        "rto_objective_seconds",
        "Recovery time objective (config rto)",
        lambda t, r: t.facts.rto.total_seconds(),
    ),
    (
        "last_backup_timestamp_seconds",
        "Recovery point of the newest good backup",
        lambda t, r: t.facts.newest.recovery_point.timestamp() if t.facts.newest else None,
    ),
    (
        "last_backup_age_seconds",
        "Age of the newest good backup's recovery point",
        lambda t, r: (
            (r.generated_at - t.facts.newest.recovery_point).total_seconds()
            if t.facts.newest
            else None
        ),
    ),
    (
        "restore_points",
        "Backups available in the repository",
        lambda t, r: t.facts.restore_points if r.repository.readable else None,
    ),
    (
        "oldest_restore_point_timestamp_seconds",
        "Recovery point of the oldest backup",
        lambda t, r: t.facts.oldest.recovery_point.timestamp() if t.facts.oldest else None,
    ),
    (
        "last_drill_timestamp_seconds",
        "Start of the last drill",
        lambda t, r: d.started_at.timestamp() if (d := _last_drill(t)) else None,
    ),
    (
        "last_drill_pass_timestamp_seconds",
        "Start of the last passing drill",
        lambda t, r: d.started_at.timestamp() if (d := _last_pass(t)) else None,
    ),
    (
        "last_drill_passed",
        "1 if the last drill passed, 0 if it failed",
        lambda t, r: (1 if d.passed else 0) if (d := _last_drill(t)) else None,
    ),
    (
        "last_drill_measured_rto_seconds",
        "Restore and verification time measured by the last drill (objective: "
        "drbackup_health_rto_objective_seconds)",
        lambda t, r: d.restore_s if (d := _last_drill(t)) else None,
    ),
]


_TARGET_SERIES += [
    (
        "wal_window_oldest_timestamp_seconds",
        "First second of the restorable window (base backups and WAL)",
        lambda t, r: w.oldest.timestamp() if (w := t.facts.wal) and w.oldest else None,
    ),
    (
        "wal_window_newest_timestamp_seconds",
        "Last second of the restorable window (base backups and WAL)",
        lambda t, r: w.newest.timestamp() if (w := t.facts.wal) and w.newest else None,
    ),
    (
        "wal_archive_lag_seconds",
        "Age of the oldest WAL not yet in the repository (0: nothing waiting)",
        lambda t, r: w.lag_seconds if (w := t.facts.wal) else None,
    ),
    (
        "wal_gaps",
        "Missing WAL segments and timeline breaks in the archive",
        lambda t, r: len(w.gaps) + len(w.breaks) if (w := t.facts.wal) else None,
    ),
    (
        "wal_slot_retained_bytes",
        "WAL the streaming replication slot keeps on the server",
        lambda t, r: (w.slot or {}).get("retained_bytes") if (w := t.facts.wal) else None,
    ),
]


def render_prometheus(report: HealthReport) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(report))
    return generate_latest(registry).decode()


# -- files --------------------------------------------------------------------------------


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path``: temp file in the same directory, fsync, rename."""
    return files.write_atomic(path, text, mode=0o644)  # textfile collectors run as another user
