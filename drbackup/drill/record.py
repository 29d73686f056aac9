"""The drill report as a record: typed, with ONE JSON form (``to_dict`` / ``from_dict``).

The JSON form is the report's schema (docs/drills.md, "The report"): what is signed
(``signing.py``), stored in the repository as ``reports/<target>/<drill id>``, kept in the
catalog's ``drills`` table and written to files.  ``from_dict(to_dict())`` gives the record
back, and ``to_dict(from_dict(d))`` gives ``d`` back for every report drbackup wrote (members
it does not know are kept as they are), so a report loaded and written again still verifies.

Everything that reads a report (the renderers, history, the health report, prune's drill
protection, the daemon's metrics) works on :class:`DrillReport`; only signing and files
see the JSON.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from drbackup import __version__
from drbackup.drill.checks import FAIL, STATUSES, CheckResult, worst
from drbackup.errors import IntegrityError
from drbackup.times import parse_iso_time

REPORT_FORMAT = "drbackup-drill-report"
REPORT_VERSION = 1


def _known(cls, data: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` split into the dataclass fields of ``cls`` and the members it does not know."""
    names = {f.name for f in fields(cls)} - {"extra"}
    return (
        {k: v for k, v in data.items() if k in names},
        {k: v for k, v in data.items() if k not in names},
    )


def _without_none(data: dict[str, Any], *optional: str) -> dict[str, Any]:
    """``data`` without the ``optional`` members that are None (absent from the JSON)."""
    return {k: v for k, v in data.items() if k not in optional or v is not None}


@dataclass
class Timings:
    """Seconds spent by one target's drill (pg_restore's phases are 0 for a bucket)."""

    restore_s: float = 0.0
    fetch_decrypt_s: float = 0.0
    pre_data_s: float = 0.0
    data_s: float = 0.0
    post_data_s: float = 0.0
    verification_s: float = 0.0
    total_s: float | None = None  # restore + verification: what the RTO is compared with
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**_without_none(data, "total_s"), **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Timings:
        known, extra = _known(cls, data)
        return cls(**known, extra=extra)


@dataclass
class Objectives:
    """The target's recovery objectives in seconds, as the drill used them."""

    rto_s: float | None = None
    rpo_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rto_s": self.rto_s, "rpo_s": self.rpo_s}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Objectives:
        return cls(data.get("rto_s"), data.get("rpo_s"))


@dataclass
class Scratch:
    """Where a database target was restored: ``kind`` ephemeral, server or source."""

    kind: str
    server: str = ""  # masked dsn
    kept: bool = False
    major: int | None = None  # the PostgreSQL major restored into (absent in older reports)

    def to_dict(self) -> dict[str, Any]:
        data = {"kind": self.kind, "server": self.server, "kept": self.kept, "major": self.major}
        return _without_none(data, "major")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scratch:
        return cls(
            data["kind"], data.get("server", ""), bool(data.get("kept", False)), data.get("major")
        )


@dataclass
class DatabaseRestore:
    """One database of the backup and the scratch database it was restored into."""

    database: str
    scratch_database: str
    restored: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"database": self.database, "scratch_database": self.scratch_database}
        return data if self.restored is None else {**data, "restored": self.restored}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatabaseRestore:
        return cls(data["database"], data["scratch_database"], data.get("restored"))


@dataclass
class BucketRestore:
    """One bucket of the snapshot and the scratch bucket it was restored into."""

    bucket: str
    scratch_bucket: str

    def to_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "scratch_bucket": self.scratch_bucket}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BucketRestore:
        return cls(data["bucket"], data["scratch_bucket"])


_TARGET_OPTIONAL = ("kind", "scratch", "buckets", "stale_scratch_removed", "timings", "objectives")


@dataclass
class TargetReport:
    """What the drill did with one target; ``status`` is the worst of its checks'.

    A database target has ``scratch``; a bucket target (``kind`` "bucket") has ``buckets``
    and ``stale_scratch_removed`` instead, and no databases.
    """

    target: str
    backup_id: str | None = None
    recovery_point: str | None = None  # as the backup's manifest states it
    selection: str = ""  # how the backup was chosen, said to the user
    databases: list[DatabaseRestore] = field(default_factory=list)
    timings: Timings | None = None
    objectives: Objectives | None = None
    status: str = ""  # set by DrillReport.build
    kind: str | None = None
    scratch: Scratch | None = None
    buckets: list[BucketRestore] | None = None
    stale_scratch_removed: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "target": self.target,
            "kind": self.kind,
            "backup_id": self.backup_id,
            "recovery_point": self.recovery_point,
            "selection": self.selection,
            "databases": [d.to_dict() for d in self.databases],
            "scratch": self.scratch.to_dict() if self.scratch else None,
            "buckets": [b.to_dict() for b in self.buckets] if self.buckets is not None else None,
            "stale_scratch_removed": self.stale_scratch_removed,
            "timings": self.timings.to_dict() if self.timings else None,
            "objectives": self.objectives.to_dict() if self.objectives else None,
            "status": self.status,
        }
        return {**_without_none(data, *_TARGET_OPTIONAL), **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TargetReport:
        known, extra = _known(cls, data)
        parts = {
            "databases": [DatabaseRestore.from_dict(d) for d in known.get("databases", [])],
            "timings": _maybe(Timings.from_dict, known.get("timings")),
            "objectives": _maybe(Objectives.from_dict, known.get("objectives")),
            "scratch": _maybe(Scratch.from_dict, known.get("scratch")),
            "buckets": _maybe(
                lambda bs: [BucketRestore.from_dict(b) for b in bs], known.get("buckets")
            ),
        }
        return cls(**{**known, **parts}, extra=extra)


def _maybe(parse, value):
    return None if value is None else parse(value)


@dataclass
class Signature:
    """An Ed25519 signature over the report's canonical JSON (``signing.py``)."""

    algorithm: str
    public_key: str  # base64
    key_id: str
    value: str  # base64
    canonical_form: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        known, extra = _known(cls, data)
        return cls(**known, extra=extra)


@dataclass
class Signer:
    """Who signed the report, with which key, where and when (part of what is signed)."""

    key_fingerprint: str  # ed25519:<sha256 hex of the raw public key>
    operator: str
    host: str
    signed_at: str  # ISO 8601, as written
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signer:
        known, extra = _known(cls, data)
        return cls(**known, extra=extra)


@dataclass
class DrillReport:
    """One drill: its targets and checks, its status (the worst check's) and times."""

    drill_id: str
    plan: str | None
    status: str
    started_at: datetime
    finished_at: datetime
    elapsed_s: float
    host: str
    drbackup_version: str
    repository: dict[str, str | None]  # {id, url (masked)}
    counts: dict[str, int]  # checks per status: {pass, warn, fail}
    targets: list[TargetReport]
    checks: list[CheckResult]
    signature: Signature | None = None
    signer: Signer | None = None
    format: str = REPORT_FORMAT
    version: int = REPORT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        *,
        drill_id: str,
        plan: str | None,
        started_at: datetime,
        finished_at: datetime,
        repository: dict[str, str | None],
        targets: list[TargetReport],
        checks: list[CheckResult],
    ) -> DrillReport:
        """A new report: counts, each target's status and the report's status from checks."""
        for target in targets:
            target.status = worst(c.status for c in checks if c.target == target.target)
        return cls(
            drill_id=drill_id,
            plan=plan,
            status=worst(c.status for c in checks),
            started_at=started_at,
            finished_at=finished_at,
            elapsed_s=round((finished_at - started_at).total_seconds(), 3),
            host=socket.gethostname(),
            drbackup_version=__version__,
            repository=repository,
            counts={status: sum(1 for c in checks if c.status == status) for status in STATUSES},
            targets=targets,
            checks=checks,
        )

    # -- reading ------------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        return self.status == FAIL

    def failed_checks(self, target: str | None = None) -> list[CheckResult]:
        """The failed checks (of ``target`` only, if given)."""
        return [c for c in self.checks_of(target) if c.status == FAIL]

    def checks_of(self, target: str | None) -> list[CheckResult]:
        """The checks of ``target``; every check for None."""
        return [c for c in self.checks if target is None or c.target == target]

    def target(self, name: str) -> TargetReport | None:
        return next((t for t in self.targets if t.target == name), None)

    # -- the JSON form ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = {
            "format": self.format,
            "version": self.version,
            "drill_id": self.drill_id,
            "plan": self.plan,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "elapsed_s": self.elapsed_s,
            "host": self.host,
            "drbackup_version": self.drbackup_version,
            "repository": self.repository,
            "counts": self.counts,
            "targets": [t.to_dict() for t in self.targets],
            "checks": [c.to_dict() for c in self.checks],
            "signer": self.signer.to_dict() if self.signer else None,
            "signature": self.signature.to_dict() if self.signature else None,
        }
        return {**_without_none(data, "signer", "signature"), **self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DrillReport:
        """The record of a report's JSON form; IntegrityError if it is not one."""
        try:
            return cls._from_dict(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            drill_id = data.get("drill_id") if isinstance(data, Mapping) else None
            raise IntegrityError(
                f"drill report {drill_id or '(no id)'} is not readable: {type(exc).__name__} {exc}"
            ) from None

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> DrillReport:
        if data.get("format", REPORT_FORMAT) != REPORT_FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        known, extra = _known(cls, data)
        started = parse_iso_time(known["started_at"])
        finished = known.get("finished_at")
        parts = {
            "started_at": started,
            "finished_at": parse_iso_time(finished) if finished else started,
            "targets": [TargetReport.from_dict(t) for t in known["targets"]],
            "checks": [CheckResult.from_dict(c) for c in known.get("checks", [])],
            "signature": _maybe(Signature.from_dict, known.get("signature")),
            "signer": _maybe(Signer.from_dict, known.get("signer")),
        }
        return cls(**{**_lenient(), **known, **parts}, extra=extra)


def _lenient() -> dict[str, Any]:
    """What a report needs at least is its id, start and targets: older or hand-made
    reports (tests, tools) may leave out the rest, which reads as this."""
    return {
        "plan": None,
        "status": "",
        "elapsed_s": 0.0,
        "host": "",
        "drbackup_version": "",
        "repository": {},
        "counts": {},
    }


def as_report(report: DrillReport | Mapping[str, Any]) -> DrillReport:
    """``report``, or the record of a report's JSON form (as read from a file or the
    repository): what the renderers and the history accept."""
    return report if isinstance(report, DrillReport) else DrillReport.from_dict(report)
