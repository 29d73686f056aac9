"""The ``retention:`` section of a target: the policy and how leftovers are treated.

``RetentionSettings`` is the ``retention`` field of ``PostgresTarget`` and ``MinioTarget``;
its defaults are an empty policy, which prune refuses to apply.
"""

from __future__ import annotations

from datetime import UTC, timedelta, tzinfo
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from drbackup.config.types import DocType, Duration, config_error
from drbackup.retention.policy import COUNT_RULES, UNLIMITED, RetentionPolicy

DEFAULT_LEFTOVER_GRACE = timedelta(hours=24)


def _to_count(value: Any) -> int:
    if value == "unlimited":
        return UNLIMITED
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        template = "expected a number of periods (0 or more) or 'unlimited', got '{value}'"
        raise config_error("count", template, value=str(value))
    return value


def _check_timezone(name: str) -> str:
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise config_error("timezone", "unknown time zone '{name}'", name=name) from None
    return name


def _zone(name: str) -> tzinfo:
    return UTC if name.upper() == "UTC" else ZoneInfo(name)


KeepCount = Annotated[
    int,
    BeforeValidator(_to_count),
    PlainSerializer(lambda v: "unlimited" if v == UNLIMITED else v, when_used="json"),
    DocType("count or `unlimited`"),
]
TimeZoneName = Annotated[str, AfterValidator(_check_timezone), DocType("time zone")]


class RetentionSettings(BaseModel):
    """Which backups of a target ``drbackup prune`` keeps (restic ``forget`` rules)."""

    # Same behaviour as config.schema.Section (not imported: schema imports this module).
    model_config = ConfigDict(
        extra="forbid", hide_input_in_errors=True, use_attribute_docstrings=True
    )

    keep_last: KeepCount = 0
    """Keep the newest N backups."""
    keep_hourly: KeepCount = 0
    """Keep the newest backup of each of the last N hours that have one."""
    keep_daily: KeepCount = 0
    """Keep the newest backup of each of the last N days that have one."""
    keep_weekly: KeepCount = 0
    """Keep the newest backup of each of the last N ISO weeks that have one."""
    keep_monthly: KeepCount = 0
    """Keep the newest backup of each of the last N months that have one."""
    keep_yearly: KeepCount = 0
    """Keep the newest backup of each of the last N years that have one."""
    keep_within: Duration | None = None
    """Keep every backup less than this older than the newest backup (not than now)."""
    timezone: TimeZoneName = "UTC"
    """Time zone of the hours, days, weeks, months and years above."""
    leftover_grace: Duration = DEFAULT_LEFTOVER_GRACE
    """Data of unfinished backups untouched this long is removed (longer than any backup)."""

    def policy(self) -> RetentionPolicy:
        """The pure policy these settings describe."""
        counts = {rule: getattr(self, rule) for rule in COUNT_RULES}
        return RetentionPolicy(**counts, keep_within=self.keep_within, tz=_zone(self.timezone))


def retention_settings(target_cfg: object) -> RetentionSettings:
    """The ``retention`` section of a target's config; the defaults if it has none."""
    settings = getattr(target_cfg, "retention", None)
    return settings if isinstance(settings, RetentionSettings) else RetentionSettings()
