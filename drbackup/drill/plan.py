"""Drill plans: what a drill restores, where, which checks it runs, where its report goes.

A plan is a YAML file (``drills/*.yaml``; ``drills/monthly.yaml`` is a working example)
validated against :class:`DrillPlan`.  Like the config, every problem is reported at once,
each with its path (``at 'scratch.server': ...``), in one :class:`ConfigError`.
``drbackup drill run --target T`` builds the default plan with :func:`default_plan`.
Targets are postgres targets (restored into scratch databases) or minio targets (their
snapshot restored into scratch buckets: ``drill/bucket.py``), in any mix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)

from drbackup.config.load import dotted, read_yaml_mapping
from drbackup.config.schema import ScratchDsn
from drbackup.config.types import config_error, parse_duration
from drbackup.errors import ConfigError, DrbackupError
from drbackup.times import parse_iso_time

# Every check a drill knows, in the order it runs them.  ``restore`` always runs.
CHECK_NAMES = (
    "restore",
    "schema",
    "tables",
    "foreign_keys",
    "sequences",
    "assertions",
    "amcheck",
    "rto",
    "rpo",
)
_MS_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*ms\s*$")


# -- value types -------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupChoice:
    """Which backup a drill restores: ``latest``, ``random``, ``point_in_time`` or ``id``."""

    mode: Literal["latest", "random", "point_in_time", "id"]
    point_in_time: datetime | None = None
    backup_id: str | None = None

    def describe(self) -> str:
        if self.mode == "point_in_time":
            return f"point in time {self.point_in_time.isoformat()}"
        if self.mode == "id":
            return f"backup {self.backup_id}"
        return self.mode


_BACKUP_FORMS = "expected 'latest', 'random', {point_in_time: <ISO 8601 time>} or {id: <backup id>}"


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):  # YAML reads an unquoted timestamp itself
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return parse_iso_time(str(value))
    except ValueError:
        raise config_error(
            "point_in_time",
            "invalid time '{value}' (use ISO 8601, e.g. 2026-11-23T02:00:00Z)",
            value=str(value),
        ) from None


def _backup_choice(value: Any) -> BackupChoice:
    if isinstance(value, BackupChoice):
        return value
    if value in ("latest", "random"):
        return BackupChoice(value)
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if key == "point_in_time":
            return BackupChoice("point_in_time", point_in_time=_parse_time(inner))
        if key == "id" and isinstance(inner, str) and inner:
            return BackupChoice("id", backup_id=inner)
    raise config_error("backup", _BACKUP_FORMS)


def parse_objective(value: Any) -> timedelta:
    """``1ms``, ``250ms``, ``30s``, ``15m``, ``1h30m``, ``7d`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return timedelta(seconds=value)
    text = value if isinstance(value, str) else ""
    match = _MS_RE.match(text)
    try:
        delta = timedelta(milliseconds=float(match.group(1))) if match else parse_duration(text)
    except ValueError:
        delta = None
    if not delta or delta <= timedelta(0):
        raise config_error("duration", "invalid duration (use e.g. 500ms, 30s, 15m, 1h30m, 7d)")
    return delta


def _check_names(value: Any) -> Literal["all"] | tuple[str, ...]:
    if value == "all":
        return "all"
    if not isinstance(value, list) or not value:
        raise config_error("checks", "expected 'all' or a non-empty list of check names")
    unknown = [str(v) for v in value if v not in CHECK_NAMES]
    if unknown:
        raise config_error(
            "checks",
            "unknown check '{name}' (known checks: {known})",
            name=unknown[0],
            known=", ".join(CHECK_NAMES),
        )
    return tuple(dict.fromkeys(value))


BackupField = Annotated[BackupChoice, PlainValidator(_backup_choice)]
Checks = Annotated[Literal["all"] | tuple[str, ...], PlainValidator(_check_names)]
Objective = Annotated[timedelta, PlainValidator(parse_objective)]


def _none_as_empty(value: Any) -> Any:
    return {} if value is None else value


# -- sections ------------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)


class ScratchPlan(_Section):
    """Where the drill restores: a server, or an ephemeral local cluster."""

    server: ScratchDsn | None = None
    """A server on which drbackup may create and drop databases named with the prefix."""
    ephemeral: bool = False
    """Start a private local cluster (initdb on a free port) for the drill."""
    base_dir: Path | None = None
    """Where ephemeral clusters live (default: $TMPDIR/drbackup-drill)."""
    with_globals: bool | None = None
    """Recreate the backup's roles first; default: true on an ephemeral cluster only."""
    no_owner: bool = False
    """Restore without object ownership (pg_restore --no-owner)."""

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if self.server and self.ephemeral:
            raise config_error("one_of", "set either 'server' or 'ephemeral: true', not both")
        if self.base_dir is not None and not self.ephemeral:
            raise config_error("one_of", "'base_dir' needs 'ephemeral: true'")
        return self

    @property
    def kind(self) -> str:
        return "ephemeral" if self.ephemeral else "server"


class Assertion(_Section):
    """A custom SQL assertion run in the restored database."""

    name: str = Field(min_length=1, max_length=200)
    sql: str = Field(min_length=1)
    expect: Any
    """A scalar (one row, one column) or a list of rows (each a list, or a scalar)."""
    target: str | None = None
    """Only for this target (default: every target of the plan)."""
    database: str | None = None
    """Only for this database of the backup (default: every database)."""

    @field_validator("expect")
    @classmethod
    def _scalar_or_rows(cls, value: Any) -> Any:
        if isinstance(value, dict):
            raise config_error("expect", "expected a scalar or a list of rows, not a mapping")
        if isinstance(value, list) and any(isinstance(r, dict) for r in value):
            raise config_error("expect", "rows must be lists of values or scalars")
        return value


class ReferenceCheck(_Section):
    """A cross-service check: every object a query's rows name must be in the paired snapshot."""

    name: str = Field(min_length=1, max_length=200)
    target: str
    """The postgres target (of the plan) whose restored database is queried."""
    query: str = Field(min_length=1)
    """Returns two columns, bucket and key (e.g. ``SELECT bucket, key FROM attachments``)."""
    snapshot_target: str
    """The minio target whose snapshot must hold the objects."""
    database: str | None = None
    """Only this database of the backup (default: every database)."""
    tolerance: Objective = timedelta(minutes=10)
    """Without a recovery point: pair the newest snapshot at or before the database's
    recovery point plus this."""


class ReportPlan(_Section):
    format: Literal["json", "markdown", "html"] | None = None
    """Format of the output file; default from its extension (.md: markdown, .html: html,
    else json)."""
    output: str | None = None
    """File to write the signed report to; {drill_id}, {date} and {plan} are replaced."""


class AmcheckPlan(_Section):
    heapallindexed: bool = False
    """Also check that every heap tuple has an index entry (slower, more thorough)."""


class DrillPlan(_Section):
    """A drill plan (see docs/drills.md)."""

    name: str | None = None
    """Shown in reports; default: the file's name without extension."""
    targets: list[str] = Field(min_length=1)
    """Names of postgres or minio targets in the config (minio: a bucket drill)."""
    backup: BackupField = BackupChoice("latest")
    scratch: Annotated[ScratchPlan, BeforeValidator(_none_as_empty)] | None = None
    """Default: drill.scratch_dsn of the config, else the target's own server."""
    rto: Objective | None = None
    """Overrides the targets' rto."""
    checks: Checks = "all"
    """``all``, or the names of the checks to run (``restore`` always runs)."""
    assertions: list[Assertion] = []
    amcheck: Annotated[AmcheckPlan, BeforeValidator(_none_as_empty)] = AmcheckPlan()
    report: Annotated[ReportPlan, BeforeValidator(_none_as_empty)] = ReportPlan()
    keep: bool = False
    """Keep the scratch databases (or cluster) for inspection."""
    hash_during_restore: bool = True
    """Hash each table as soon as it is loaded, while pg_restore builds indexes (on 1 core)."""
    references: list[ReferenceCheck] = []
    """Cross-service checks, run whenever declared (see docs/drills.md)."""
    into_major: int | None = Field(None, ge=10, le=99)
    """Restore into this PostgreSQL major (an ephemeral cluster of it, or a scratch server
    that must be of it): an upgrade rehearsal, compared across majors and timed.  Default:
    the backup's own major when its server is installed, else the nearest newer one."""

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise config_error("duplicate", "a target is listed twice")
        return value

    @field_validator("assertions", "references")
    @classmethod
    def _unique_names(cls, value: list) -> list:
        names = [a.name for a in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            kind = "assertion" if isinstance(value[0], Assertion) else "reference check"
            raise config_error("duplicate", f"{kind} name '{{name}}' is used twice", name=twice[0])
        return value

    def runs(self, check: str) -> bool:
        """Whether ``check`` is selected (``restore`` always is)."""
        return check == "restore" or self.checks == "all" or check in self.checks

    def with_overrides(self, **changes: Any) -> DrillPlan:
        """A copy with the given fields replaced (None values are ignored)."""
        return self.model_copy(update={k: v for k, v in changes.items() if v is not None})


# -- loading ---------------------------------------------------------------------------------


def load_plan(path: str | Path, config) -> DrillPlan:
    """Read and validate the plan at ``path`` against ``config`` (target names must exist).

    Raises ConfigError listing every problem with its path.
    """
    source = str(path)
    data = _read_yaml(Path(path))
    findings: list[str] = []
    plan = None
    try:
        plan = DrillPlan.model_validate(data)
    except ValidationError as exc:
        findings += [_finding(e) for e in exc.errors(include_input=False, include_url=False)]
    if plan is not None:
        findings += _config_findings(plan, config)
    elif isinstance(data.get("targets"), list):  # still name unknown targets
        findings += _target_findings([t for t in data["targets"] if isinstance(t, str)], config)
    if findings:
        count = len(findings)
        head = f"drill plan {source} has {count} error{'' if count == 1 else 's'}"
        raise ConfigError("\n".join([head, *findings]))
    if plan.name is None:
        plan = plan.model_copy(update={"name": Path(path).stem})
    return plan


def default_plan(targets: list[str], config, **overrides: Any) -> DrillPlan:
    """The plan of ``drill run --target T``: latest backup, all checks, default scratch."""
    plan = DrillPlan(targets=targets, name="adhoc").with_overrides(**overrides)
    findings = _config_findings(plan, config)
    if findings:
        raise ConfigError("; ".join(f.split(": ", 1)[-1] for f in findings))
    return plan


def _read_yaml(path: Path) -> dict:
    data = read_yaml_mapping(
        path,
        "drill plan",
        not_found="drill plan not found",
        hint="drills/monthly.yaml shows the format",
    )
    if not isinstance(data, dict):
        raise ConfigError(f"drill plan {path}: expected a mapping, got {type(data).__name__}")
    return data


def _finding(error: dict) -> str:
    path = tuple(p for p in error["loc"] if not _is_union_tag(p))
    kind, msg = error["type"], error["msg"]
    if kind == "missing":
        text = "required key is missing"
    elif kind == "extra_forbidden":
        text = f"unknown key (known keys: {', '.join(_known_keys(path[:-1]))})"
    else:
        text = msg[:1].lower() + msg[1:]
        text = text.removeprefix("value error, ")
    return f"at '{dotted(path)}': {text}" if path else text


def _is_union_tag(part: Any) -> bool:
    # pydantic names the member of a union it tried, e.g. "function-after[...]".
    return isinstance(part, str) and "[" in part


_SECTIONS = {
    "scratch": ScratchPlan,
    "assertions": Assertion,
    "report": ReportPlan,
    "amcheck": AmcheckPlan,
    "references": ReferenceCheck,
}


def _known_keys(path: tuple) -> list[str]:
    model: type[BaseModel] = DrillPlan
    for part in path:
        if isinstance(part, str) and part in _SECTIONS:
            model = _SECTIONS[part]
    return list(model.model_fields)


def _config_findings(plan: DrillPlan, config) -> list[str]:
    findings = _target_findings(plan.targets, config)
    for index, assertion in enumerate(plan.assertions):
        if assertion.target is not None and assertion.target not in plan.targets:
            findings.append(
                f"at 'assertions[{index}].target': '{assertion.target}' is not among the "
                f"plan's targets ({', '.join(plan.targets)})"
            )
        elif assertion.target is not None and assertion.target not in config.postgres:
            findings.append(
                f"at 'assertions[{index}].target': '{assertion.target}' is not a postgres "
                "target (assertions run in restored databases)"
            )
    return findings + _reference_findings(plan, config)


def _reference_findings(plan: DrillPlan, config) -> list[str]:
    findings = []
    for index, ref in enumerate(plan.references):
        if ref.target not in plan.targets:
            findings.append(
                f"at 'references[{index}].target': '{ref.target}' is not among the "
                f"plan's targets ({', '.join(plan.targets)})"
            )
        elif ref.target not in config.postgres:
            findings.append(
                f"at 'references[{index}].target': '{ref.target}' is not a postgres target"
            )
        if ref.snapshot_target not in config.minio:
            findings.append(
                f"at 'references[{index}].snapshot_target': '{ref.snapshot_target}' is not "
                "a minio target"
            )
    return findings


def _target_findings(targets: list[str], config) -> list[str]:
    findings = []
    for index, name in enumerate(targets):
        try:
            config.target(name)
        except DrbackupError as exc:
            hint = f"; {exc.hint}" if exc.hint else ""
            findings.append(f"at 'targets[{index}]': {exc.message}{hint}")
            continue
        if name not in config.postgres and name not in config.minio:
            findings.append(
                f"at 'targets[{index}]': target '{name}' is neither a postgres nor a minio target"
            )
    return findings
