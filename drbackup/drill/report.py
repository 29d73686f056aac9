"""Drill reports: the dict (schema in docs/drills.md), and its text, JSON and Markdown forms.

The dict is the record: it is signed (``signing``), stored in the repository as
``reports/<target>/<drill id>`` and in the catalog.  The Markdown form embeds the signed JSON
in a fenced block, so a readable report is also a verifiable one
(:func:`read_report_file` reads either form).
"""

from __future__ import annotations

import json
import re
import socket
from datetime import datetime
from pathlib import Path

from drbackup import __version__, files
from drbackup.drill.checks import FAIL, PASS, STATUSES, WARN, format_seconds, worst
from drbackup.errors import UsageError

REPORT_FORMAT = "drbackup-drill-report"
REPORT_VERSION = 1
_FENCE = "```json " + REPORT_FORMAT
_FENCE_RE = re.compile(r"^```json " + REPORT_FORMAT + r"\n(.*?)^```", re.MULTILINE | re.DOTALL)


def build_report(
    *,
    drill_id: str,
    plan: str | None,
    started_at: datetime,
    finished_at: datetime,
    repository: dict,
    targets: list[dict],
    checks: list[dict],
) -> dict:
    """Assemble the report; its status is the worst of its checks'."""
    counts = {status: sum(1 for c in checks if c["status"] == status) for status in STATUSES}
    for target in targets:
        own = [c["status"] for c in checks if c["target"] == target["target"]]
        target["status"] = worst(own)
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "drill_id": drill_id,
        "plan": plan,
        "status": worst(c["status"] for c in checks),
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "elapsed_s": round((finished_at - started_at).total_seconds(), 3),
        "host": socket.gethostname(),
        "drbackup_version": __version__,
        "repository": repository,
        "counts": counts,
        "targets": targets,
        "checks": checks,
    }


def failed_checks(report: dict) -> list[dict]:
    return [c for c in report["checks"] if c["status"] == FAIL]


def failure_summary(report: dict) -> str:
    """One line naming every failed check and its cause (the error message of a failed drill)."""
    failed = failed_checks(report)
    parts = [f"{_where(c)}{c['name']}: {c['summary']}" for c in failed]
    total = len(report["checks"])
    return f"drill {report['drill_id']} failed ({len(failed)} of {total} checks): " + "; ".join(
        parts
    )


def failure_details(report: dict) -> str:
    """:func:`failure_summary` followed by the objects failed bucket and reference checks
    name in their evidence: for the operator's terminal only (the summary alone is what is
    recorded and sent)."""
    details = [d for c in failed_checks(report) for d in object_details(c)]
    return failure_summary(report) + ("; " + "; ".join(details) if details else "")


def _where(check: dict) -> str:
    parts = [p for p in (check.get("target"), check.get("database")) if p]
    # A target's own checks (rto, rpo) carry no database.
    return "/".join(dict.fromkeys(parts)) + " " if parts else ""


DETAILS_SHOWN = 5  # objects a failed bucket check lists on the terminal

# -- text --------------------------------------------------------------------------------------


def render_text(report: dict) -> str:
    """The terminal summary: status line, one block per target, one line per check."""
    counts = report["counts"]
    lines = [
        f"drill {report['drill_id']}"
        + (f" (plan {report['plan']})" if report.get("plan") else "")
        + f": {report['status'].upper()} - {counts[PASS]} passed, {counts[WARN]} warned, "
        f"{counts[FAIL]} failed"
    ]
    width = max((len(c["name"]) for c in report["checks"]), default=8)
    for target in report["targets"]:
        lines += ["", *_target_lines(target)]
        for check in (c for c in report["checks"] if c["target"] == target["target"]):
            db = f"[{check['database']}] " if _many_databases(target) and check["database"] else ""
            lines.append(
                f"  {check['status'].upper():4}  {check['name']:<{width}}  {db}{check['summary']}"
            )
            lines += [f"{' ' * (width + 10)}{d}" for d in object_details(check)]
    lines += ["", _signature_line(report)]
    return "\n".join(lines)


def object_details(check: dict, limit: int = DETAILS_SHOWN) -> list[str]:
    """The objects a failed bucket check names in its evidence (its summary only counts
    them: summaries travel to the catalog, reports and chat), for the operator's screen."""
    evidence = check.get("evidence") or {}
    if check["status"] != FAIL:
        return []
    if "dangling_objects" in evidence:  # a reference check: rows naming missing objects
        found = [f"missing: {o}" for o in evidence["dangling_objects"]]
        more = evidence.get("dangling", len(found)) - min(len(found), limit)
        return found[:limit] + ([f"... and {more} more in the report's evidence"] if more else [])
    if "bucket" not in evidence:
        return []
    found = [
        f["message"] if f["key"] in f["message"] else f"object {f['key']}: {f['message']}"
        for f in evidence.get("failures", [])
    ]
    found += evidence.get("problems", [])
    found += [evidence["error"]] if evidence.get("error") else []
    more = len(found) - limit
    return found[:limit] + ([f"... and {more} more in the report's evidence"] if more > 0 else [])


def _many_databases(target: dict) -> bool:
    return len(target.get("databases", [])) > 1


def _target_lines(target: dict) -> list[str]:
    t = target.get("timings") or {}
    lines = [f"target {target['target']}: {target['status'].upper()}"]
    if target.get("backup_id"):
        selection = target["selection"]
        if target["backup_id"] not in selection:
            selection = f"backup {target['backup_id']} ({selection})"
        lines.append(f"  {selection}")
    scratch = target.get("scratch") or {}
    names = ", ".join(d["scratch_database"] for d in target.get("databases", []))
    if scratch:
        kept = " (kept)" if scratch.get("kept") else ""
        lines.append(f"  scratch {scratch['kind']} {scratch.get('server', '')}: {names}{kept}")
    if t:
        objective = (target.get("objectives") or {}).get("rto_s")
        lines.append(
            f"  restore {t['restore_s']:.1f}s (fetch/decrypt {t['fetch_decrypt_s']:.1f}s, "
            f"pre-data {t['pre_data_s']:.1f}s, data {t['data_s']:.1f}s, indexes and "
            f"constraints {t['post_data_s']:.1f}s), verification {t['verification_s']:.1f}s"
            + (f"; rto {format_seconds(objective)}" if objective else "")
        )
    return lines


def _signature_line(report: dict) -> str:
    sig = report.get("signature")
    if not sig:
        return "report not signed (no drill.signing_key_file)"
    return f"signed with ed25519 key {sig['key_id']} (public key {sig['public_key']})"


# -- markdown ----------------------------------------------------------------------------------


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict) -> str:
    """A readable report for tickets and audits, ending with the signed JSON."""
    counts = report["counts"]
    out = [
        f"# Drill report {report['drill_id']}",
        "",
        f"**Status: {report['status'].upper()}** - {counts[PASS]} passed, {counts[WARN]} "
        f"warned, {counts[FAIL]} failed",
        "",
        f"- Plan: {report.get('plan') or '-'}",
        f"- Started: {report['started_at']}, finished: {report['finished_at']} "
        f"({report['elapsed_s']:.1f}s)",
        f"- Repository: {report['repository'].get('url')} ({report['repository'].get('id')})",
        f"- Host: {report['host']}, drbackup {report['drbackup_version']}",
        f"- {_signature_line(report)}",
    ]
    for target in report["targets"]:
        out += ["", f"## Target {target['target']}: {target['status'].upper()}", ""]
        out += [f"- {line.strip()}" for line in _target_lines(target)[1:]]
        out += ["", "| Check | Database | Status | Summary | Seconds |", "|---|---|---|---|---|"]
        for c in (c for c in report["checks"] if c["target"] == target["target"]):
            out.append(
                f"| {_cell(c['name'])} | {_cell(c['database'] or '-')} | "
                f"{c['status'].upper()} | {_cell(c['summary'])} | {c['seconds']:.2f} |"
            )
    out += [
        "",
        "## Signed report",
        "",
        "Verify with `drbackup drill verify-report THIS_FILE --public-key KEY`.",
        "",
        _FENCE,
        render_json(report),
        "```",
        "",
    ]
    return "\n".join(out)


def render_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False)


def render(report: dict, fmt: str) -> str:
    """``text``, ``json`` or ``markdown``."""
    return {"text": render_text, "json": render_json, "markdown": render_markdown}[fmt](report)


# -- files -------------------------------------------------------------------------------------


def format_for_path(path: str | Path, configured: str | None = None) -> str:
    """The file format: as configured, else markdown for ``.md``/``.markdown``, else json."""
    if configured:
        return configured
    return "markdown" if Path(path).suffix.lower() in (".md", ".markdown") else "json"


def expand_output_path(template: str, *, drill_id: str, plan: str | None, when: datetime) -> Path:
    """Replace ``{drill_id}``, ``{date}`` (YYYY-MM-DD) and ``{plan}`` in an output path."""
    try:
        text = template.format(
            drill_id=drill_id, date=when.strftime("%Y-%m-%d"), plan=plan or "adhoc"
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(
            f"invalid report output path {template!r}: {exc}",
            hint="use only {drill_id}, {date} and {plan} as placeholders",
        ) from None
    return Path(text).expanduser()


def write_report_file(report: dict, path: Path, fmt: str) -> Path:
    """Write atomically (temp file, fsync, rename); returns the path."""
    text = render_markdown(report) if fmt == "markdown" else render_json(report) + "\n"
    files.write_atomic(path, text, mode=0o600)
    return path


def read_report_file(path: str | Path) -> dict:
    """The report in a JSON file, or embedded in a Markdown one; raises UsageError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"cannot read report {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not text.lstrip().startswith("{"):
        blocks = _FENCE_RE.findall(text)
        if not blocks:
            raise UsageError(
                f"{path}: no drill report found (neither json nor a drbackup markdown report)"
            )
        text = blocks[-1]
    try:
        report = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path}: the report is not valid json ({exc})") from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise UsageError(f"{path}: not a drbackup drill report")
    return report
