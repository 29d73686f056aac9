"""The view of one drill report (``drill.record.DrillReport``, docs/drills.md's schema):
every check with its evidence, the time each phase took against the RTO.  Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from drbackup.drill.checks import FAIL, PASS, WARN, CheckResult
from drbackup.drill.record import DrillReport, Signer, TargetReport, Timings, as_report

EVIDENCE_CHARS = 20_000  # per evidence item shown; the signed report keeps all of it
PHASES = (  # Timings field, label; their sum (with the rest of the restore) is total_s
    ("pre_data_s", "schema (pre-data)"),
    ("data_s", "data"),
    ("post_data_s", "indexes and constraints"),
)


@dataclass(frozen=True)
class EvidenceItem:
    key: str
    text: str
    block: bool  # structured: shown as indented JSON


@dataclass(frozen=True)
class CheckView:
    name: str
    database: str | None
    status: str  # pass warn fail
    summary: str
    seconds: float
    evidence: tuple[EvidenceItem, ...]


@dataclass(frozen=True)
class Phase:
    label: str
    seconds: float
    css: str


@dataclass(frozen=True)
class DrillTargetView:
    name: str
    status: str
    backup_id: str | None
    selection: str | None
    recovery_point: str | None
    scratch: str | None
    phases: tuple[Phase, ...]  # restore phases then verification, summing to total_s
    total_s: float | None
    rto_s: float | None
    fetch_decrypt_s: float | None  # overlaps the restore (streamed)
    checks: tuple[CheckView, ...]


@dataclass(frozen=True)
class DrillPageView:
    drill_id: str
    plan: str | None
    status: str
    counts: dict[str, int]
    started_at: datetime
    finished_at: datetime | None
    elapsed_s: float | None
    host: str | None
    version: str | None
    repository_url: str | None
    repository_id: str | None
    signature_key: str | None  # the signer's key id; None: unsigned
    public_key: str | None
    signer: Signer | None  # fingerprint, operator, host, time (reports since issue 20)
    targets: tuple[DrillTargetView, ...]

    @property
    def anchor(self) -> str:
        return f"drill-{self.drill_id}"


def build_drill_view(report: DrillReport | Mapping[str, Any]) -> DrillPageView:
    """The view of a drill report (the record, or its JSON form as stored and signed)."""
    report = as_report(report)
    signature = report.signature
    return DrillPageView(
        drill_id=report.drill_id,
        plan=report.plan,
        status=report.status,
        counts={s: int(report.counts.get(s, 0)) for s in (PASS, WARN, FAIL)},
        started_at=report.started_at,
        finished_at=report.finished_at,
        elapsed_s=report.elapsed_s,
        host=report.host,
        version=report.drbackup_version,
        repository_url=report.repository.get("url"),
        repository_id=report.repository.get("id"),
        signature_key=signature.key_id if signature else None,
        public_key=signature.public_key if signature else None,
        signer=report.signer if signature else None,
        targets=tuple(_target(t, report.checks_of(t.target)) for t in report.targets),
    )


def _target(target: TargetReport, checks: list[CheckResult]) -> DrillTargetView:
    timings = target.timings or Timings()
    scratch = target.scratch
    return DrillTargetView(
        name=target.target,
        status=target.status or FAIL,
        backup_id=target.backup_id,
        selection=target.selection or None,
        recovery_point=target.recovery_point,
        scratch=" ".join(p for p in (scratch.kind, scratch.server) if p) if scratch else None,
        phases=phases(timings) if target.timings else (),
        total_s=timings.total_s,
        rto_s=target.objectives.rto_s if target.objectives else None,
        fetch_decrypt_s=timings.fetch_decrypt_s or None,
        checks=tuple(_check(c) for c in checks),
    )


def phases(timings: Timings) -> tuple[Phase, ...]:
    """The restore's phases, the rest of the restore, and the verification (seconds > 0)."""
    found = [Phase(label, float(getattr(timings, key) or 0), key[:-2]) for key, label in PHASES]
    rest = float(timings.restore_s or 0) - sum(p.seconds for p in found)
    found.append(Phase("other restore work", max(rest, 0.0), "other"))
    found.append(Phase("verification", float(timings.verification_s or 0), "verify"))
    return tuple(p for p in found if p.seconds > 0)


def _check(check: CheckResult) -> CheckView:
    return CheckView(
        name=check.name,
        database=check.database,
        status=check.status,
        summary=check.summary,
        seconds=float(check.seconds or 0),
        evidence=evidence_items(check.to_dict()["evidence"]),
    )


def evidence_items(evidence: dict) -> tuple[EvidenceItem, ...]:
    """Each evidence key: scalars as text, lists and objects as indented JSON (capped)."""
    items = []
    for key, value in evidence.items():
        if isinstance(value, dict | list):
            text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
            if len(text) > EVIDENCE_CHARS:
                text = text[:EVIDENCE_CHARS] + "\n… (cut here; the signed report has it all)"
            items.append(EvidenceItem(str(key), text, True))
        else:
            items.append(EvidenceItem(str(key), "null" if value is None else str(value), False))
    return tuple(items)
