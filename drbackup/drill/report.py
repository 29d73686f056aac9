"""Drill reports: their text, JSON and Markdown forms, and report files.

The record is :class:`~drbackup.drill.record.DrillReport` (``record.py``), whose JSON form
is signed (``signing``), stored in the repository as ``reports/<target>/<drill id>`` and in
the catalog.  The Markdown form embeds the signed JSON in a fenced block, so a readable
report is also a verifiable one (:func:`read_report_file` reads either form).

The functions here take a report as its record or as its JSON form (a report read from a
file or the repository): :func:`~drbackup.drill.record.as_report`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from drbackup.drill.checks import FAIL, PASS, WARN, CheckResult, format_seconds
from drbackup.drill.documents import read_document, signature_path, verify_document, write_signed
from drbackup.drill.record import (
    REPORT_FORMAT,
    REPORT_VERSION,  # noqa: F401 - the schema version, named where the format is
    DrillReport,
    TargetReport,
    as_report,
)
from drbackup.drill.signing import KeyRing, Verified, verify_report
from drbackup.drill.upgrade import describe_majors
from drbackup.errors import UsageError

Report = DrillReport | Mapping[str, Any]  # the record, or its JSON form
_FENCE = "```json " + REPORT_FORMAT
_FENCE_RE = re.compile(r"^```json " + REPORT_FORMAT + r"\n(.*?)^```", re.MULTILINE | re.DOTALL)
_HTML_BLOCK_RE = re.compile(  # report/templates/drill.html's data block
    r'<script type="application/json" id="' + REPORT_FORMAT + r'">(.*?)</script>', re.DOTALL
)


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
    """The JSON form of a new report (:meth:`DrillReport.build`) from the JSON forms of its
    targets and checks; its status is the worst of its checks'."""
    return DrillReport.build(
        drill_id=drill_id,
        plan=plan,
        started_at=started_at,
        finished_at=finished_at,
        repository=repository,
        targets=[TargetReport.from_dict(t) for t in targets],
        checks=[CheckResult.from_dict(c) for c in checks],
    ).to_dict()


def failure_summary(report: Report) -> str:
    """One line naming every failed check and its cause (the error message of a failed drill)."""
    report = as_report(report)
    failed = report.failed_checks()
    parts = [f"{_where(c)}{c.name}: {c.summary}" for c in failed]
    total = len(report.checks)
    return f"drill {report.drill_id} failed ({len(failed)} of {total} checks): " + "; ".join(parts)


def failure_details(report: Report) -> str:
    """:func:`failure_summary` followed by the objects failed bucket and reference checks
    name in their evidence: for the operator's terminal only (the summary alone is what is
    recorded and sent)."""
    report = as_report(report)
    details = [d for c in report.failed_checks() for d in object_details(c)]
    return failure_summary(report) + ("; " + "; ".join(details) if details else "")


def _where(check: CheckResult) -> str:
    parts = [p for p in (check.target, check.database) if p]
    # A target's own checks (rto, rpo) carry no database.
    return "/".join(dict.fromkeys(parts)) + " " if parts else ""


DETAILS_SHOWN = 5  # objects a failed bucket check lists on the terminal

# -- text --------------------------------------------------------------------------------------


def _status_line(report: DrillReport) -> str:
    counts = report.counts
    return f"{counts[PASS]} passed, {counts[WARN]} warned, {counts[FAIL]} failed"


def render_text(report: Report) -> str:
    """The terminal summary: status line, one block per target, one line per check."""
    report = as_report(report)
    plan = f" (plan {report.plan})" if report.plan else ""
    lines = [f"drill {report.drill_id}{plan}: {report.status.upper()} - {_status_line(report)}"]
    width = max((len(c.name) for c in report.checks), default=8)
    for target in report.targets:
        lines += ["", *_target_lines(target)]
        many = len(target.databases) > 1
        for check in report.checks_of(target.target):
            db = f"[{check.database}] " if many and check.database else ""
            lines.append(f"  {check.status.upper():4}  {check.name:<{width}}  {db}{check.summary}")
            lines += [f"{' ' * (width + 10)}{d}" for d in object_details(check)]
    lines += ["", _signature_line(report)]
    return "\n".join(lines)


def object_details(check: CheckResult, limit: int = DETAILS_SHOWN) -> list[str]:
    """The objects a failed bucket check names in its evidence (its summary only counts
    them: summaries travel to the catalog, reports and chat), for the operator's screen."""
    evidence = check.evidence or {}
    if check.status != FAIL:
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


def _target_lines(target: TargetReport) -> list[str]:
    lines = [f"target {target.target}: {target.status.upper()}"]
    if target.backup_id:
        selection = target.selection
        if target.backup_id not in selection:
            selection = f"backup {target.backup_id} ({selection})"
        lines.append(f"  {selection}")
    if target.scratch:
        names = ", ".join(d.scratch_database for d in target.databases)
        kept = " (kept)" if target.scratch.kept else ""
        lines.append(f"  scratch {target.scratch.kind} {target.scratch.server}: {names}{kept}")
    t = target.timings
    if t:
        objective = target.objectives.rto_s if target.objectives else None
        lines.append(
            f"  restore {t.restore_s:.1f}s (fetch/decrypt {t.fetch_decrypt_s:.1f}s, "
            f"pre-data {t.pre_data_s:.1f}s, data {t.data_s:.1f}s, indexes and "
            f"constraints {t.post_data_s:.1f}s), verification {t.verification_s:.1f}s"
            + (f"; rto {format_seconds(objective)}" if objective else "")
        )
    majors = describe_majors(target.extra.get("postgresql"), t.to_dict() if t else {})
    return lines + ([f"  {majors}"] if majors else [])


def _signature_line(report: DrillReport) -> str:
    sig, signer = report.signature, report.signer
    if not sig:
        return "report not signed (no drill.signing_key_file)"
    if not signer:  # signed before reports named their signer
        return f"signed with ed25519 key {sig.key_id} (public key {sig.public_key})"
    return (
        f"signed with ed25519 key {signer.key_fingerprint} by {signer.operator} on "
        f"{signer.host} at {signer.signed_at} (public key {sig.public_key})"
    )


# -- markdown ----------------------------------------------------------------------------------


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report) -> str:
    """A readable report for tickets and audits, ending with the signed JSON."""
    record = as_report(report)
    out = [
        f"# Drill report {record.drill_id}",
        "",
        f"**Status: {record.status.upper()}** - {_status_line(record)}",
        "",
        f"- Plan: {record.plan or '-'}",
        f"- Started: {record.started_at.isoformat()}, finished: "
        f"{record.finished_at.isoformat()} ({record.elapsed_s:.1f}s)",
        f"- Repository: {record.repository.get('url')} ({record.repository.get('id')})",
        f"- Host: {record.host}, drbackup {record.drbackup_version}",
        f"- {_signature_line(record)}",
    ]
    for target in record.targets:
        out += ["", f"## Target {target.target}: {target.status.upper()}", ""]
        out += [f"- {line.strip()}" for line in _target_lines(target)[1:]]
        out += ["", "| Check | Database | Status | Summary | Seconds |", "|---|---|---|---|---|"]
        out += [
            f"| {_cell(c.name)} | {_cell(c.database or '-')} | "
            f"{c.status.upper()} | {_cell(c.summary)} | {c.seconds:.2f} |"
            for c in record.checks_of(target.target)
        ]
    out += ["", "## Signed report", "", *_VERIFY_MARKDOWN, "", _FENCE, render_json(report)]
    return "\n".join([*out, "```", ""])


_VERIFY_MARKDOWN = [
    "Every byte of this file is signed: the detached signature is THIS_FILE.sig.",
    "Verify with `drbackup drill verify-report THIS_FILE --public-key signer.pem`, or with",
    "OpenSSL 3 alone: `openssl pkeyutl -verify -pubin -inkey signer.pem -rawin -in THIS_FILE",
    "-sigfile THIS_FILE.sig` (signer.pem: `drbackup drill public-key --pem`; docs/drills.md).",
]


def render_json(report: Report) -> str:
    """The JSON form as given (a report read from a file is written back unchanged)."""
    data = report.to_dict() if isinstance(report, DrillReport) else report
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)


def render(report: Report, fmt: str) -> str:
    """``text``, ``json`` or ``markdown`` (``html`` is drawn by report/html.py, a layer up)."""
    return {"text": render_text, "json": render_json, "markdown": render_markdown}[fmt](report)


# -- files -------------------------------------------------------------------------------------


def format_for_path(path: str | Path, configured: str | None = None) -> str:
    """The file format: as configured, else markdown for ``.md``/``.markdown``, html for
    ``.html``/``.htm``, else json."""
    if configured:
        return configured
    suffix = Path(path).suffix.lower()
    if suffix in (".html", ".htm"):
        return "html"
    return "markdown" if suffix in (".md", ".markdown") else "json"


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


def write_report_file(
    report: Report,
    path: Path,
    fmt: str,
    key: Ed25519PrivateKey | None = None,
    *,
    text: str | None = None,
) -> Path:
    """Write ``report`` in ``fmt`` atomically (temp file, fsync, rename) and, with ``key``,
    the detached signature of its exact bytes to ``path.sig``; returns the path.
    ``text``: the report already rendered (the html form is drawn above this layer).
    Raises OSError."""
    if text is None:
        text = render_markdown(report) if fmt == "markdown" else render_json(report) + "\n"
    return write_signed(path, text.encode("utf-8"), key)


def read_report_file(path: str | Path) -> dict:
    """The report in a JSON file, or embedded in a Markdown or HTML one; raises UsageError."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"cannot read report {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    return parse_report_text(text, path)


def parse_report_text(text: str, path: str | Path) -> dict:
    """The report of a JSON or Markdown document's text; raises UsageError."""
    if not text.lstrip().startswith("{"):
        blocks = _FENCE_RE.findall(text) or _HTML_BLOCK_RE.findall(text)
        if not blocks:
            raise UsageError(
                f"{path}: no drill report found (neither json nor a drbackup markdown or html report)"
            )
        text = blocks[-1]
    try:
        report = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{path}: the report is not valid json ({exc})") from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise UsageError(f"{path}: not a drbackup drill report")
    return report


# -- verification --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportVerification:
    """What ``drill verify-report`` proved: every byte of the file (``document``; None for
    a JSON file without ``.sig``) and the signed record inside it (``record``; None for a
    form that carries none)."""

    report: dict | None
    document: Verified | None
    record: Verified | None

    @property
    def key(self) -> Verified:
        return self.document or self.record


def verify_report_file(
    path: str | Path, ring: KeyRing, signature: str | Path | None = None
) -> ReportVerification:
    """Verify a report file: the detached signature over its bytes, then the signed record
    it carries.  A JSON report without ``.sig`` (as stored in the repository) is accepted
    on its record's signature alone: its content is covered, its layout is not.  Any other
    form needs its ``.sig``: its readable text is covered by nothing else.

    Raises CheckFailedError naming what failed, UsageError for what cannot be read.
    """
    path = Path(path)
    if signature is None and not signature_path(path).exists() and _is_json(path):
        report = read_report_file(path)
        return ReportVerification(report, None, verify_report(report, ring))
    data, sig = read_document(path, signature)
    document = verify_document(path.name, data, sig, ring)
    text = data.decode("utf-8", errors="replace")
    if not text.lstrip().startswith("{") and not _carries_record(text):
        return ReportVerification(None, document, None)  # a form without the record
    report = parse_report_text(text, path)
    return ReportVerification(report, document, verify_report(report, ring))


def _carries_record(text: str) -> bool:
    return bool(_FENCE_RE.search(text) or _HTML_BLOCK_RE.search(text))


def _is_json(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(64).lstrip().startswith(b"{")
    except OSError:
        return False
