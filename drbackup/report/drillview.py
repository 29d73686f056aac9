"""The view of one drill report (docs/drills.md's schema): every check with its evidence,
the time each phase took against the RTO.  Pure: built from the report dict."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

EVIDENCE_CHARS = 20_000  # per evidence item shown; the signed report keeps all of it
PHASES = (  # timing key, label; their sum (with the rest of the restore) is total_s
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
    targets: tuple[DrillTargetView, ...]

    @property
    def anchor(self) -> str:
        return f"drill-{self.drill_id}"


def build_drill_view(report: dict) -> DrillPageView:
    """The view of a drill report (as ``drill.report.build_report`` makes it)."""
    repository = report.get("repository") or {}
    signature = report.get("signature") or {}
    checks = report.get("checks") or []
    return DrillPageView(
        drill_id=report["drill_id"],
        plan=report.get("plan"),
        status=report.get("status", "fail"),
        counts={s: int((report.get("counts") or {}).get(s, 0)) for s in ("pass", "warn", "fail")},
        started_at=_time(report["started_at"]),
        finished_at=_time(report.get("finished_at")),
        elapsed_s=report.get("elapsed_s"),
        host=report.get("host"),
        version=report.get("drbackup_version"),
        repository_url=repository.get("url"),
        repository_id=repository.get("id"),
        signature_key=signature.get("key_id"),
        public_key=signature.get("public_key"),
        targets=tuple(_target(t, checks) for t in report.get("targets") or []),
    )


def _target(target: dict, checks: list[dict]) -> DrillTargetView:
    timings = target.get("timings") or {}
    scratch = target.get("scratch") or {}
    return DrillTargetView(
        name=target["target"],
        status=target.get("status", "fail"),
        backup_id=target.get("backup_id"),
        selection=target.get("selection"),
        recovery_point=target.get("recovery_point"),
        scratch=" ".join(str(scratch[k]) for k in ("kind", "server") if scratch.get(k)) or None,
        phases=phases(timings),
        total_s=timings.get("total_s"),
        rto_s=(target.get("objectives") or {}).get("rto_s"),
        fetch_decrypt_s=timings.get("fetch_decrypt_s"),
        checks=tuple(_check(c) for c in checks if c.get("target") == target["target"]),
    )


def phases(timings: dict) -> tuple[Phase, ...]:
    """The restore's phases, the rest of the restore, and the verification (seconds > 0)."""
    found = [Phase(label, float(timings.get(key) or 0), key[:-2]) for key, label in PHASES]
    rest = float(timings.get("restore_s") or 0) - sum(p.seconds for p in found)
    found.append(Phase("other restore work", max(rest, 0.0), "other"))
    found.append(Phase("verification", float(timings.get("verification_s") or 0), "verify"))
    return tuple(p for p in found if p.seconds > 0)


def _check(check: dict) -> CheckView:
    return CheckView(
        name=str(check.get("name")),
        database=check.get("database"),
        status=check.get("status", "fail"),
        summary=str(check.get("summary") or ""),
        seconds=float(check.get("seconds") or 0),
        evidence=evidence_items(check.get("evidence") or {}),
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


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
