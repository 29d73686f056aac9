"""Schedules: ``schedules/*.yaml`` loaded, validated and turned into APScheduler triggers.

A schedule file holds ``jobs:``, a mapping of job name to job (see docs/daemon.md)::

    jobs:
      nightly-postgres:
        kind: backup            # backup | snapshot | drill | prune | verify | report | wal-check
        targets: all            # or a list of target names
        cron: "0 2 * * *"       # 5 fields, or 6 with seconds first
        timezone: Europe/Paris  # default UTC
        jitter: 10m             # random delay, 0 to this (seconds or a duration)
        timeout: 2h             # bound of one action run (one target, one attempt)
        retry: {attempts: 3, backoff: 5m}
        heartbeat: https://hc-ping.com/UUID   # pinged at /start, on success, at /fail

Every problem of every file is reported at once in one :class:`ConfigError`, each line naming
the file, the job and the field.  Cron expressions are parsed by APScheduler's
:class:`CronTrigger`; only the day-of-week field is rewritten first, because APScheduler 3
numbers weekdays from Monday (0) where crontab numbers them from Sunday (0 and 7).
"""

from __future__ import annotations

import difflib
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from drbackup.config.load import _UniqueKeyLoader
from drbackup.config.types import config_error, parse_duration, read_secret_file
from drbackup.errors import ConfigError
from drbackup.scheduler.heartbeat import Heartbeat

KINDS = ("backup", "snapshot", "drill", "prune", "verify", "report", "wal-check")
REPORT_FORMATS = ("text", "json", "markdown", "prometheus", "nagios", "html")
# Which targets `targets: all` means, and which a kind accepts: (postgres, minio).
KIND_TARGETS = {
    "backup": ("postgres",),
    "snapshot": ("minio",),
    "drill": ("postgres",),
    "verify": ("postgres", "minio"),
    "prune": ("postgres", "minio"),
    "report": ("postgres", "minio"),
    "wal-check": ("postgres",),
}
DEFAULT_TIMEOUT = timedelta(hours=6)
_JOB_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


# -- value types --------------------------------------------------------------------------


def _to_seconds(value: Any) -> timedelta:
    """Whole seconds (``30``) or a duration (``5m``, ``1h30m``); zero allowed."""
    if isinstance(value, bool):
        raise config_error("seconds", "expected seconds or a duration like 30s, 5m, 2h")
    if isinstance(value, int) and value >= 0:
        return timedelta(seconds=value)
    if isinstance(value, timedelta) and value >= timedelta(0):
        return value
    if isinstance(value, str):
        if value.strip() in ("0", "0s"):
            return timedelta(0)
        try:
            return parse_duration(value)
        except ValueError:
            pass
    template = "invalid duration '{value}' (use seconds or e.g. 30s, 5m, 2h)"
    raise config_error("seconds", template, value=str(value))


Seconds = Annotated[timedelta, BeforeValidator(_to_seconds)]


def _to_weekday_set(field: str) -> set[int]:
    """Crontab day-of-week (``0``-``7``, names, ranges, steps, lists) -> days, 0 = Sunday."""
    days: set[int] = set()
    for part in field.lower().split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        else:
            low, _, high = span.partition("-")
            first = _weekday_number(low)
            last = _weekday_number(high) if high else (6 if step_text else first)
        if step < 1 or last < first:
            raise ValueError(f"invalid day-of-week range '{part}'")
        days.update(d % 7 for d in range(first, last + 1, step))
    return days


def _weekday_number(text: str) -> int:
    if text in _DAYS:
        return _DAYS.index(text)
    if text.isdigit() and int(text) <= 7:
        return int(text)
    raise ValueError(f"invalid day of week '{text}' (use 0-7 or sun-sat)")


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field in APScheduler 3 terms (names, which both agree on)."""
    if field == "*":
        return "*"
    days = _to_weekday_set(field)
    return ",".join(_DAYS[d] for d in sorted(days))


def build_trigger(cron: str, timezone: str = "UTC") -> CronTrigger:
    """An APScheduler CronTrigger for 5 crontab fields, or 6 with seconds first.

    Raises ValueError with APScheduler's (or our day-of-week) message when invalid.
    """
    fields = cron.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"expected 5 fields (or 6 with seconds first), got {len(fields)}")
    second = fields.pop(0) if len(fields) == 6 else "0"
    minute, hour, day, month, dow = fields
    return CronTrigger(
        second=second,
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=crontab_weekdays(dow),
        timezone=ZoneInfo(timezone),
    )


_LOOKBACK = tuple(
    timedelta(days=d) for d in (1 / 1440, 1 / 24, 1, 32, 366, 5 * 366)
)  # a minute, an hour, a day, a month, a year, five years


def previous_fire_time(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The latest fire time of ``trigger`` at or before ``now`` (aware), or None.

    APScheduler 3 only computes next fire times: search forward from ever wider windows
    before ``now``, so a frequent schedule costs a few steps and a yearly one a few more.
    """
    for window in _LOOKBACK:
        fire = trigger.get_next_fire_time(None, now - window)
        if fire is None or fire > now:
            continue
        while True:
            following = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
            if following is None or following > now:
                return fire
            fire = following
    return None


# -- the schema ---------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class RetryPolicy(_Model):
    """Attempts of one action run; waits ``backoff``, doubled each time, at most ``max_backoff``."""

    attempts: int = Field(1, ge=1, le=20)
    backoff: Seconds = timedelta(seconds=60)
    max_backoff: Seconds = timedelta(hours=1)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        seconds = self.backoff.total_seconds() * (2 ** (attempt - 1))
        return min(seconds, self.max_backoff.total_seconds())


class HeartbeatSpec(_Model):
    """A healthchecks.io-style ping URL (scheduler/heartbeat.py); the URL names the check,
    so it may come from a file (a mounted secret)."""

    url: SecretStr | None = None
    url_file: Path | None = None
    timeout: Seconds = timedelta(seconds=10)

    @model_validator(mode="after")
    def _one_url(self) -> HeartbeatSpec:
        if (self.url is None) == (self.url_file is None):
            raise config_error("heartbeat", "give the heartbeat either url or url_file")
        if self.url_file is not None:
            self.url = read_secret_file(self.url_file.expanduser())
        if urlsplit(self.url.get_secret_value()).scheme not in ("http", "https"):
            raise config_error("heartbeat", "the heartbeat url must start with http:// or https://")
        return self

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(self.url.get_secret_value(), self.timeout.total_seconds())


def _url_shorthand(value: Any) -> Any:
    """``heartbeat: URL`` is ``heartbeat: {url: URL}``."""
    return {"url": value} if isinstance(value, str) else value


class JobSpec(_Model):
    """What every job has; the kind-specific subclasses add their arguments."""

    kind: str
    cron: str
    timezone: str = "UTC"
    targets: list[str] | Literal["all"] = "all"
    jitter: Seconds = timedelta(0)
    timeout: Seconds = DEFAULT_TIMEOUT
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    enabled: bool = True
    heartbeat: Annotated[HeartbeatSpec | None, BeforeValidator(_url_shorthand)] = None

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        try:
            build_trigger(value)
        except ValueError as exc:
            raise config_error(
                "cron", "invalid cron '{cron}': {reason}", cron=value, reason=_lower(str(exc))
            ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise config_error(
                "timezone", "unknown time zone '{tz}' (use e.g. UTC, Europe/Paris)", tz=value
            ) from None
        return value

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise config_error("timeout", "timeout must be greater than zero")
        return value

    def args(self) -> dict[str, Any]:
        """The kind-specific arguments (fields beyond the common ones)."""
        common = set(JobSpec.model_fields)
        return {k: getattr(self, k) for k in type(self).model_fields if k not in common}


class BackupJob(JobSpec):
    kind: Literal["backup"]


class SnapshotJob(JobSpec):
    kind: Literal["snapshot"]


class DrillJob(JobSpec):
    kind: Literal["drill"]
    plan: str | None = None
    """Drill plan file (relative to the schedule file); unset: the default plan."""


class PruneJob(JobSpec):
    kind: Literal["prune"]
    dry_run: bool = False


class VerifyJob(JobSpec):
    kind: Literal["verify"]
    backups: Literal["latest"] = "latest"


class ReportJob(JobSpec):
    kind: Literal["report"]
    format: Literal["text", "json", "markdown", "prometheus", "nagios", "html"] = "prometheus"
    output: str | None = None
    """File written atomically (e.g. a node-exporter textfile); unset: not written."""
    notify: Literal["never", "problems", "always"] = "problems"
    timeout: Seconds = timedelta(minutes=10)


class WalCheckJob(JobSpec):
    kind: Literal["wal-check"]


AnyJob = Annotated[
    BackupJob | SnapshotJob | DrillJob | PruneJob | VerifyJob | ReportJob | WalCheckJob,
    Field(discriminator="kind"),
]


class ScheduleFile(_Model):
    jobs: dict[str, AnyJob] = {}


# -- loaded jobs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One validated job: its name, the file it came from, its spec and resolved targets."""

    name: str
    source: str
    spec: JobSpec
    targets: tuple[str, ...]

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def timeout(self) -> float:
        return self.spec.timeout.total_seconds()

    @property
    def jitter(self) -> float:
        return self.spec.jitter.total_seconds()

    def jitter_delay(self) -> float:
        """A random wait in [0, jitter] seconds before a fire (spreads replicas' load)."""
        return random.uniform(0, self.jitter)  # noqa: S311 - spreading load, not security

    @property
    def retry(self) -> RetryPolicy:
        return self.spec.retry

    @property
    def heartbeat(self) -> Heartbeat | None:
        """Where the daemon pings at the start and end of each run of this job."""
        return self.spec.heartbeat.heartbeat() if self.spec.heartbeat else None

    def trigger(self) -> CronTrigger:
        return build_trigger(self.spec.cron, self.spec.timezone)


@dataclass(frozen=True)
class Schedule:
    """Every job of a schedules directory, in file then name order."""

    directory: str
    jobs: tuple[Job, ...]

    def job(self, name: str) -> Job:
        """The job called ``name``; raises ConfigError naming the known jobs."""
        for job in self.jobs:
            if job.name == name:
                return job
        known = [j.name for j in self.jobs]
        close = difflib.get_close_matches(name, known, n=1)
        message = f"no job '{name}' in {self.directory}" + (
            f" (did you mean '{close[0]}'?)" if close else ""
        )
        raise ConfigError(message, hint=f"known jobs: {', '.join(known) or '(none)'}")


def load_schedules(directory: str | Path, config) -> Schedule:
    """Load every ``*.yaml``/``*.yml`` in ``directory`` and check it against ``config``.

    Raises ConfigError listing every problem (``<file>: job '<name>': at '<field>': ...``):
    unreadable files, YAML errors, schema errors, unknown or unsuitable targets, job names
    used twice.  A directory without schedule files is an error too.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise ConfigError(f"schedules directory not found: {root}", hint="pass --schedules DIR")
    files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
    if not files:
        raise ConfigError(
            f"no schedule files (*.yaml) in {root}", hint="see schedules/default.yaml"
        )
    jobs: list[Job] = []
    findings: list[str] = []
    seen: dict[str, str] = {}
    for path in files:
        loaded, problems = load_file(path, config)
        findings += problems
        for job in loaded:
            if job.name in seen:
                findings.append(f"{path}: job '{job.name}': name also used in {seen[job.name]}")
                continue
            seen[job.name] = str(path)
            jobs.append(job)
    if findings:
        count = len(findings)
        head = f"schedules in {root} have {count} error{'' if count == 1 else 's'}"
        raise ConfigError(head + "\n" + "\n".join(findings))
    return Schedule(directory=str(root), jobs=tuple(jobs))


def load_file(path: Path, config) -> tuple[list[Job], list[str]]:
    """The jobs of one file and the problems found in it (each line names file, job, field)."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as exc:
        return [], [f"{path}: cannot read: {_lower(exc.strerror or str(exc))}"]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return [], [f"{path}: invalid yaml{where}: {getattr(exc, 'problem', None) or exc}"]
    data = data or {}
    if not isinstance(data, dict):
        return [], [f"{path}: expected a mapping with 'jobs:', got {type(data).__name__}"]
    findings = [
        f"{path}: job '{n}': invalid job name (use a-z, 0-9, '.', '_', '-')"
        for n in data.get("jobs") or {}
        if not (isinstance(n, str) and _JOB_NAME.match(n))
    ]
    try:
        parsed = ScheduleFile.model_validate(data)
    except ValidationError as exc:
        return [], findings + [_finding(path, err) for err in exc.errors()]
    jobs = []
    for name, spec in parsed.jobs.items():
        targets, problems = resolve_targets(spec, config)
        findings += [f"{path}: job '{name}': at 'targets': {p}" for p in problems]
        if isinstance(spec, DrillJob) and spec.plan:
            spec = spec.model_copy(update={"plan": str((path.parent / spec.plan).resolve())})
        jobs.append(Job(name=str(name), source=str(path), spec=spec, targets=tuple(targets)))
    return jobs, findings


def resolve_targets(spec: JobSpec, config) -> tuple[list[str], list[str]]:
    """The target names a job acts on, and the problems with the ones it lists."""
    kinds = KIND_TARGETS[spec.kind]
    by_kind = {"postgres": list(config.postgres), "minio": list(config.minio)}
    allowed = [name for kind in kinds for name in by_kind[kind]]
    if spec.targets == "all":
        return allowed, []
    problems = []
    for name in spec.targets:
        if name in allowed:
            continue
        other = next((k for k, names in by_kind.items() if name in names), None)
        if other:
            problems.append(
                f"'{name}' is a {other} target; kind {spec.kind} takes {' or '.join(kinds)} targets"
            )
        else:
            known = ", ".join(sorted(config.targets)) or "(none)"
            problems.append(f"unknown target '{name}' (known: {known})")
    return list(spec.targets), problems


def _finding(path: Path, err: dict) -> str:
    loc = list(err["loc"])
    if not loc or loc[0] != "jobs" or len(loc) < 2:
        field = ".".join(str(p) for p in loc) or "(file)"
        return f"{path}: at '{field}': {_message(err)}"
    name, rest = loc[1], loc[2:]
    if rest and rest[0] in KINDS:
        rest = rest[1:]  # the discriminated union's tag
    if err["type"] in ("union_tag_not_found", "union_tag_invalid"):
        rest = ["kind"]
    if err["type"] in ("model_type", "model_attributes_type") and not rest:
        return f"{path}: job '{name}': expected a mapping of job fields"
    field = ".".join(str(p) for p in rest) or "(job)"
    return f"{path}: job '{name}': at '{field}': {_message(err)}"


def _message(err: dict) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "union_tag_not_found":
        return f"required (one of {', '.join(KINDS)})"
    if kind == "union_tag_invalid":
        return f"unknown kind '{err['ctx']['tag']}' (one of {', '.join(KINDS)})"
    if kind == "literal_error":
        return f"expected {err['ctx']['expected']}"
    return _lower(err["msg"])


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]
