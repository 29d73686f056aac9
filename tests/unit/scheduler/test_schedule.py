"""drbackup.scheduler.schedule: validation messages, cron via APScheduler, jitter/timeout/retry."""

from __future__ import annotations

import re
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drbackup.config import Config, load_config
from drbackup.errors import ConfigError
from drbackup.scheduler import jobs
from drbackup.scheduler.schedule import (
    build_trigger,
    crontab_weekdays,
    load_schedules,
    previous_fire_time,
)

ROOT = Path(__file__).resolve().parents[3]
CONFIG = Config.model_validate(
    {
        "postgres": {
            "app": {"dsn": "postgresql://backup@db/app", "databases": ["app"]},
            "crm": {"dsn": "postgresql://backup@db/crm", "databases": ["crm"]},
        },
        "minio": {"media": {"endpoint": "http://minio:9000", "buckets": ["media"]}},
    }
)


def write(directory: Path, text: str, name: str = "jobs.yaml") -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def errors_of(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_schedules(directory, CONFIG)
    head, *lines = info.value.message.splitlines()
    assert head.startswith(f"schedules in {directory} have {len(lines)} error")
    return lines


# -- loading --------------------------------------------------------------------------------


def test_a_valid_job_gets_defaults_and_resolved_targets(tmp_path):
    write(
        tmp_path,
        """
        jobs:
          nightly:
            kind: backup
            cron: "30 1 * * *"
        """,
    )
    job = load_schedules(tmp_path, CONFIG).job("nightly")
    assert (job.kind, job.targets, job.spec.timezone) == ("backup", ("app", "crm"), "UTC")
    assert (job.jitter, job.timeout, job.retry.attempts) == (0, 6 * 3600, 1)
    assert job.source == str(tmp_path / "jobs.yaml")


def test_targets_all_means_the_targets_of_the_kind(tmp_path):
    write(
        tmp_path,
        """
        jobs:
          snap: {kind: snapshot, cron: "5 * * * *"}
          verify: {kind: verify, cron: "5 * * * *"}
          some: {kind: backup, cron: "5 * * * *", targets: [crm]}
        """,
    )
    schedule = load_schedules(tmp_path, CONFIG)
    assert schedule.job("snap").targets == ("media",)
    assert schedule.job("verify").targets == ("app", "crm", "media")
    assert schedule.job("some").targets == ("crm",)


def test_every_error_names_file_job_and_field(tmp_path):
    path = write(
        tmp_path,
        """
        jobs:
          bad-cron: {kind: backup, cron: "61 * * * *"}
          bad-tz: {kind: backup, cron: "0 1 * * *", timezone: Mars/Olympus}
          no-kind: {cron: "0 1 * * *"}
          odd-kind: {kind: dance, cron: "0 1 * * *"}
          extra: {kind: backup, cron: "0 1 * * *", colour: red}
          bad-retry: {kind: backup, cron: "0 1 * * *", retry: {attempts: 0}}
          bad-jitter: {kind: backup, cron: "0 1 * * *", jitter: soon}
          drill-arg: {kind: backup, cron: "0 1 * * *", plan: x.yaml}
          no-cron: {kind: report}
        """,
    )
    assert errors_of(tmp_path) == [
        f"{path}: job 'bad-cron': at 'cron': invalid cron '61 * * * *': "
        "error validating expression '61': the last value (61) is higher than the maximum value (59)",
        f"{path}: job 'bad-tz': at 'timezone': unknown time zone 'Mars/Olympus' "
        "(use e.g. UTC, Europe/Paris)",
        f"{path}: job 'no-kind': at 'kind': required (one of backup, snapshot, drill, prune, "
        "verify, report, wal-check)",
        f"{path}: job 'odd-kind': at 'kind': unknown kind 'dance' (one of backup, snapshot, "
        "drill, prune, verify, report, wal-check)",
        f"{path}: job 'extra': at 'colour': unknown field",
        f"{path}: job 'bad-retry': at 'retry.attempts': input should be greater than or equal to 1",
        f"{path}: job 'bad-jitter': at 'jitter': invalid duration 'soon' "
        "(use seconds or e.g. 30s, 5m, 2h)",
        f"{path}: job 'drill-arg': at 'plan': unknown field",
        f"{path}: job 'no-cron': at 'cron': required",
    ]


def test_targets_are_checked_against_the_config(tmp_path):
    path = write(
        tmp_path,
        """
        jobs:
          wrong: {kind: backup, cron: "0 1 * * *", targets: [media, nope, app]}
        """,
    )
    assert errors_of(tmp_path) == [
        f"{path}: job 'wrong': at 'targets': 'media' is a minio target; kind backup takes "
        "postgres targets",
        f"{path}: job 'wrong': at 'targets': unknown target 'nope' (known: app, crm, media)",
    ]


def test_errors_of_several_files_are_reported_together(tmp_path):
    a = write(tmp_path, "jobs:\n  same: {kind: backup, cron: '0 1 * * *'}\n", "a.yaml")
    b = write(tmp_path, "jobs:\n  same: {kind: verify, cron: '0 2 * * *'}\n", "b.yaml")
    c = write(tmp_path, "jobs: [\n", "c.yaml")
    d = write(tmp_path, "- just a list\n", "d.yml")
    lines = errors_of(tmp_path)
    assert lines[0] == f"{b}: job 'same': name also used in {a}"
    assert re.fullmatch(rf"{c}: invalid yaml at line \d+, column \d+: .+", lines[1])
    assert lines[2] == f"{d}: expected a mapping with 'jobs:', got list"


def test_a_missing_or_empty_directory_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="schedules directory not found"):
        load_schedules(tmp_path / "nope", CONFIG)
    with pytest.raises(ConfigError, match=r"no schedule files \(\*\.yaml\) in"):
        load_schedules(tmp_path, CONFIG)


def test_unknown_job_name_suggests(tmp_path):
    write(tmp_path, "jobs:\n  nightly: {kind: backup, cron: '0 1 * * *'}\n")
    with pytest.raises(ConfigError, match=r"no job 'nightyl' in .* \(did you mean 'nightly'\?\)"):
        load_schedules(tmp_path, CONFIG).job("nightyl")


def test_drill_plan_is_relative_to_the_schedule_file(tmp_path):
    write(tmp_path, "jobs:\n  d: {kind: drill, cron: '0 5 1 * *', plan: ../drills/m.yaml}\n")
    job = load_schedules(tmp_path, CONFIG).job("d")
    assert job.spec.args() == {"plan": str((tmp_path.parent / "drills" / "m.yaml").resolve())}


# -- jitter, timeout, retry -----------------------------------------------------------------


def test_jitter_timeout_and_retry_accept_seconds_and_durations(tmp_path):
    write(
        tmp_path,
        """
        jobs:
          j:
            kind: backup
            cron: "0 1 * * *"
            jitter: 90
            timeout: 1h30m
            retry: {attempts: 4, backoff: 30s, max_backoff: 2m}
        """,
    )
    job = load_schedules(tmp_path, CONFIG).job("j")
    assert (job.jitter, job.timeout) == (90, 5400)
    assert [job.retry.delay(n) for n in (1, 2, 3)] == [30, 60, 120]
    assert job.retry.delay(4) == 120  # capped by max_backoff


def test_zero_timeout_is_refused(tmp_path):
    path = write(tmp_path, "jobs:\n  j: {kind: backup, cron: '0 1 * * *', timeout: 0}\n")
    assert errors_of(tmp_path) == [
        f"{path}: job 'j': at 'timeout': timeout must be greater than zero"
    ]


# -- cron -----------------------------------------------------------------------------------


def test_cron_weekdays_follow_crontab_not_apscheduler3():
    assert crontab_weekdays("0") == "sun"
    assert crontab_weekdays("7") == "sun"
    assert crontab_weekdays("1-5") == "mon,tue,wed,thu,fri"
    assert crontab_weekdays("*/2") == "sun,tue,thu,sat"
    assert crontab_weekdays("sat,sun") == "sun,sat"
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday
    fire = build_trigger("0 3 * * 0").get_next_fire_time(None, now)
    assert fire == datetime(2026, 11, 29, 3, 0, tzinfo=UTC) and fire.strftime("%a") == "Sun"


def test_six_fields_put_seconds_first_and_timezone_applies():
    now = datetime(2026, 11, 23, 12, 0, 1, tzinfo=UTC)
    assert build_trigger("*/5 * * * * *").get_next_fire_time(None, now) == now + timedelta(
        seconds=4
    )
    paris = build_trigger("0 2 * * *", "Europe/Paris").get_next_fire_time(None, now)
    assert paris.astimezone(UTC) == datetime(2026, 11, 24, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "cron, reason",
    [
        ("* * * *", "expected 5 fields (or 6 with seconds first), got 4"),
        ("0 0 32 * *", "the last value (32) is higher than the maximum value (31)"),
        ("0 0 * * 8", "invalid day of week '8' (use 0-7 or sun-sat)"),
    ],
)
def test_invalid_cron_reasons(cron, reason):
    with pytest.raises(ValueError) as info:
        build_trigger(cron)
    assert reason in str(info.value)


def test_previous_fire_time():
    now = datetime(2026, 11, 23, 3, 0, 7, tzinfo=UTC)
    assert previous_fire_time(build_trigger("*/5 * * * * *"), now) == now - timedelta(seconds=2)
    assert previous_fire_time(build_trigger("0 3 * * 0"), now) == datetime(
        2026, 11, 22, 3, 0, tzinfo=UTC
    )
    assert previous_fire_time(build_trigger("0 0 1 1 *"), now) == datetime(2026, 1, 1, tzinfo=UTC)
    assert previous_fire_time(build_trigger("0 3 23 11 *"), now) == datetime(
        2026, 11, 23, 3, 0, tzinfo=UTC
    )


# -- the shipped schedule and the kind registry -----------------------------------------------


def test_default_schedule_works_with_the_example_config(tmp_path):
    text = (ROOT / "drbackup.example.yaml").read_text()
    for name in set(re.findall(r"/run/secrets/([\w.-]+)", text)):
        (tmp_path / name).write_text("secret\n")
    config_path = tmp_path / "drbackup.yaml"
    config_path.write_text(text.replace("/run/secrets/", f"{tmp_path}/"))
    config = load_config(config_path, env={"HOME": str(tmp_path)})
    schedule = load_schedules(ROOT / "schedules", config)
    kinds = {job.kind: job for job in schedule.jobs}
    assert set(kinds) == {"backup", "snapshot", "verify", "prune", "drill", "report"}
    assert kinds["backup"].targets == ("app",) and kinds["snapshot"].targets == ("media",)


def test_a_kind_whose_action_is_missing_is_a_load_error(monkeypatch):
    spec = jobs.REGISTRY["snapshot"]
    monkeypatch.setitem(
        jobs.REGISTRY, "snapshot", jobs.KindSpec("snapshot", "drbackup.actions.nope", spec.adapter)
    )
    with pytest.raises(ConfigError) as info:
        jobs.check_available(["backup", "snapshot"])
    assert info.value.message == "job kind 'snapshot' needs drbackup.actions.nope, not available"


def test_every_kind_has_an_adapter():
    from drbackup.scheduler.schedule import KINDS

    assert set(jobs.REGISTRY) == set(KINDS)


# -- heartbeats -----------------------------------------------------------------------------


def test_a_heartbeat_url_or_file_per_job(tmp_path):
    secret = tmp_path / "hc-url"
    secret.write_text("https://hc.example.com/ping/0f9e-uuid\n")
    write(
        tmp_path / "s",
        f"""
        jobs:
          nightly:
            kind: backup
            cron: "30 1 * * *"
            heartbeat: https://hc.example.com/ping/abc?create=1
          weekly:
            kind: backup
            cron: "0 3 * * 0"
            heartbeat: {{url_file: {secret}, timeout: 3s}}
          quiet:
            kind: backup
            cron: "0 4 * * *"
        """,
    )
    nightly, weekly, quiet = load_schedules(tmp_path / "s", CONFIG).jobs
    assert nightly.heartbeat.url_for("start") == "https://hc.example.com/ping/abc/start?create=1"
    assert nightly.heartbeat.url_for("success") == "https://hc.example.com/ping/abc?create=1"
    assert nightly.heartbeat.url_for("fail") == "https://hc.example.com/ping/abc/fail?create=1"
    assert (weekly.heartbeat.url, weekly.heartbeat.timeout) == (
        "https://hc.example.com/ping/0f9e-uuid",
        3.0,
    )
    assert "0f9e" not in repr(weekly.heartbeat)  # the url names the check: a secret
    assert quiet.heartbeat is None


def test_a_heartbeat_needs_one_http_url(tmp_path):
    write(
        tmp_path,
        """
        jobs:
          both:
            kind: backup
            cron: "30 1 * * *"
            heartbeat: {url: "https://a.example/x", url_file: /nonexistent}
          ftp:
            kind: backup
            cron: "30 1 * * *"
            heartbeat: ftp://a.example/x
        """,
    )
    lines = [line.removeprefix(f"{tmp_path}/") for line in errors_of(tmp_path)]
    assert lines == [
        "jobs.yaml: job 'both': at 'heartbeat': give the heartbeat either url or url_file",
        "jobs.yaml: job 'ftp': at 'heartbeat': the heartbeat url must start with http:// or https://",
    ]
