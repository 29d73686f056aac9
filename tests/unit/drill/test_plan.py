"""Drill plans: the shipped example, every form of each key, and errors named by their path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from drbackup.config import Config
from drbackup.drill.plan import CHECK_NAMES, BackupChoice, default_plan, load_plan, parse_objective
from drbackup.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[3] / "drills" / "monthly.yaml"


@pytest.fixture
def config() -> Config:
    return Config.model_validate(
        {
            "postgres": {
                "app": {"dsn": "postgresql://backup@db/app", "databases": ["app"]},
                "billing": {"dsn": "postgresql://backup@db/billing", "databases": ["billing"]},
            },
            "minio": {"media": {"endpoint": "http://minio:9000", "buckets": ["media"]}},
        }
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def errors_of(tmp_path: Path, text: str, config) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_plan(write(tmp_path, text), config)
    return info.value.message.splitlines()


def test_the_shipped_example_is_valid(config):
    plan = load_plan(EXAMPLE, config)
    assert plan.name == "monthly"
    assert plan.targets == ["app"]
    assert plan.backup == BackupChoice("random")
    assert plan.scratch.ephemeral and plan.scratch.kind == "ephemeral"
    assert plan.rto == timedelta(minutes=15)
    assert [a.name for a in plan.assertions] == ["the database holds tables", "server encoding"]
    assert plan.report.format == "markdown"
    assert all(plan.runs(name) for name in CHECK_NAMES)


def test_the_shipped_example_with_its_minio_target_is_valid(tmp_path, config):
    # The comment of drills/monthly.yaml: add media (a minio target of drbackup.example.yaml).
    text = EXAMPLE.read_text().replace("targets: [app] ", "targets: [app, media] ", 1)
    assert "targets: [app, media] " in text
    assert load_plan(write(tmp_path, text), config).targets == ["app", "media"]


def test_minimal_plan_defaults(tmp_path, config):
    plan = load_plan(write(tmp_path, "targets: [app]\n"), config)
    assert plan.name == "plan"  # the file name
    assert plan.backup.mode == "latest"
    assert plan.scratch is None and plan.rto is None and plan.checks == "all"
    assert not plan.keep and plan.assertions == [] and plan.hash_during_restore
    off = load_plan(write(tmp_path, "targets: [app]\nhash_during_restore: false\n"), config)
    assert not off.hash_during_restore


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("latest", BackupChoice("latest")),
        ("random", BackupChoice("random")),
        ("{id: 20261123T020000Z-abcdef}", BackupChoice("id", backup_id="20261123T020000Z-abcdef")),
        (
            "{point_in_time: '2026-11-01T02:00:00Z'}",
            BackupChoice("point_in_time", point_in_time=datetime(2026, 11, 1, 2, tzinfo=UTC)),
        ),
        (  # unquoted: YAML makes it a datetime itself; naive means UTC
            "{point_in_time: 2026-11-01 02:00:00}",
            BackupChoice("point_in_time", point_in_time=datetime(2026, 11, 1, 2, tzinfo=UTC)),
        ),
    ],
)
def test_backup_choices(tmp_path, config, text, expected):
    plan = load_plan(write(tmp_path, f"targets: [app]\nbackup: {text}\n"), config)
    assert plan.backup == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1ms", 0.001), ("250ms", 0.25), ("30s", 30), ("15m", 900), ("1h30m", 5400), (90, 90)],
)
def test_objectives_accept_milliseconds(text, seconds):
    assert parse_objective(text).total_seconds() == pytest.approx(seconds)


def test_checks_subset_always_includes_restore(tmp_path, config):
    plan = load_plan(write(tmp_path, "targets: [app]\nchecks: [tables, rto]\n"), config)
    assert plan.runs("restore") and plan.runs("tables") and plan.runs("rto")
    assert not plan.runs("amcheck")


def test_every_error_is_reported_with_its_path(tmp_path, config):
    text = """
targets: [app, ap, media]
backup: newest
scratch: {server: "postgresql://u:secret@h/db", base_dir: /x}
rto: soon
checks: [tables, tabels]
assertions:
  - {name: a, sql: SELECT 1}
  - {name: b, sql: SELECT 1, expect: {x: 1}}
report: {fmt: json}
colour: blue
"""
    lines = errors_of(tmp_path, text, config)
    assert lines == [
        f"drill plan {tmp_path / 'plan.yaml'} has 9 errors",
        "at 'backup': expected 'latest', 'random', {point_in_time: <ISO 8601 time>} "
        "or {id: <backup id>}",
        "at 'scratch.server': contains a password; inline secrets are not allowed "
        "(use PGPASSWORD or ~/.pgpass)",
        "at 'rto': invalid duration (use e.g. 500ms, 30s, 15m, 1h30m, 7d)",
        "at 'checks': unknown check 'tabels' (known checks: restore, schema, tables, "
        "foreign_keys, sequences, assertions, amcheck, rto, rpo)",
        "at 'assertions[0].expect': required key is missing",
        "at 'assertions[1].expect': expected a scalar or a list of rows, not a mapping",
        "at 'report.fmt': unknown key (known keys: format, output)",
        "at 'colour': unknown key (known keys: name, targets, backup, scratch, rto, checks, "
        "assertions, amcheck, report, keep, hash_during_restore, references, into_major)",
        "at 'targets[1]': unknown target 'ap' (did you mean 'app'?); known targets: app, "
        "billing, media",
    ]


def test_targets_are_checked_against_the_config(tmp_path, config):
    lines = errors_of(tmp_path, "targets: [app, ap, media]\n", config)
    assert lines[1:] == [
        "at 'targets[1]': unknown target 'ap' (did you mean 'app'?); known targets: app, "
        "billing, media",
    ]


def test_minio_targets_are_drilled_as_buckets(tmp_path, config):
    plan = load_plan(write(tmp_path, "targets: [app, media]\nbackup: random\n"), config)
    assert plan.targets == ["app", "media"]
    assert default_plan(["media"], config).targets == ["media"]


def test_assertions_and_references_need_a_postgres_target(tmp_path, config):
    text = """
targets: [app, media]
assertions: [{name: a, sql: SELECT 1, expect: 1, target: media}]
references: [{name: r, target: media, query: SELECT 1, snapshot_target: media}]
"""
    assert errors_of(tmp_path, text, config)[1:] == [
        "at 'assertions[0].target': 'media' is not a postgres target (assertions run in "
        "restored databases)",
        "at 'references[0].target': 'media' is not a postgres target",
    ]


def test_scratch_kinds_are_exclusive(tmp_path, config):
    text = "targets: [app]\nscratch: {server: 'postgresql://h/postgres', ephemeral: true}\n"
    assert errors_of(tmp_path, text, config)[1:] == [
        "at 'scratch': set either 'server' or 'ephemeral: true', not both"
    ]


def test_assertion_target_must_be_in_the_plan(tmp_path, config):
    text = "targets: [app]\nassertions: [{name: a, sql: SELECT 1, expect: 1, target: billing}]\n"
    assert errors_of(tmp_path, text, config)[1:] == [
        "at 'assertions[0].target': 'billing' is not among the plan's targets (app)"
    ]


def test_duplicate_keys_and_bad_yaml(tmp_path, config):
    lines = errors_of(tmp_path, "targets: [app]\ntargets: [app]\n", config)
    assert "duplicate key 'targets'" in lines[0]
    with pytest.raises(ConfigError, match="drill plan not found"):
        load_plan(tmp_path / "missing.yaml", config)


def test_default_plan(config):
    plan = default_plan(["app"], config, keep=True)
    assert plan.targets == ["app"] and plan.keep and plan.backup.mode == "latest"
    with pytest.raises(ConfigError, match="unknown target 'nope'"):
        default_plan(["nope"], config)
