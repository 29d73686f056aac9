"""drbackup.report.health and render: status rules on synthetic facts, and every renderer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from drbackup.report.health import (
    BackupFact,
    DrillFact,
    RepositoryFacts,
    Status,
    TargetFacts,
    build_report,
    evaluate_target,
    human_age,
    worst,
)
from drbackup.report.render import render

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
REPO = RepositoryFacts("s3://bucket/repo", True, id="abc", size=123456)


def backup(hours_ago: float, backup_id: str = "20261123T000000Z-aaaaaa") -> BackupFact:
    return BackupFact(backup_id, NOW - timedelta(hours=hours_ago), 1000, 400)


def drill(days_ago: float, status: str = "pass", restore_s: float = 60.0, failed=()) -> DrillFact:
    started = NOW - timedelta(days=days_ago)
    drill_id = started.strftime("%Y%m%dT%H%M%SZ") + "-d00000"
    return DrillFact(drill_id, started, status, restore_s, tuple(failed))


def healthy(**changes) -> TargetFacts:
    facts = TargetFacts(
        name="app",
        kind="postgres",
        rpo=timedelta(hours=24),
        rto=timedelta(hours=1),
        restore_points=7,
        newest=backup(2),
        oldest=backup(24 * 7, "20261116T000000Z-bbbbbb"),
        drills=[drill(40), drill(3)],
        failed_runs=[],
    )
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def messages(facts: TargetFacts) -> tuple[Status, list[str]]:
    health = evaluate_target(facts, NOW)
    return health.status, [f"{f.status.name}: {f.message}" for f in health.findings]


# -- rules ------------------------------------------------------------------------------------


def test_fresh_backup_and_recent_passing_drill_is_ok():
    assert messages(healthy()) == (Status.OK, [])


def test_backup_older_than_rpo_is_critical():
    assert messages(healthy(newest=backup(25))) == (
        Status.CRITICAL,
        ["CRITICAL: last backup is 1d1h old, older than the rpo 1d"],
    )


def test_no_backup_is_critical():
    status, found = messages(healthy(newest=None, oldest=None, restore_points=0))
    assert status == Status.CRITICAL and found[0] == "CRITICAL: no backup in the repository"


def test_backups_all_damaged_are_not_reported_as_none():
    """Backups exist but verify marked them damaged (or they cannot be read): the page must
    say so, not send the operator looking for a backup job that never ran."""
    status, found = messages(healthy(newest=None, oldest=None, restore_points=3))
    assert status == Status.CRITICAL
    assert found[0] == (
        "CRITICAL: none of the 3 backups is usable (damaged as 'drbackup verify' found, or unreadable)"
    )


def test_failed_last_drill_is_critical_even_after_a_passing_one():
    facts = healthy(drills=[drill(10), drill(1, "fail", None, ["foreign_keys", "rto"])])
    assert messages(facts) == (
        Status.CRITICAL,
        [f"CRITICAL: last drill {facts.drills[-1].drill_id} failed: foreign_keys, rto"],
    )


def test_no_passing_drill_in_35_days_is_a_warning():
    assert messages(healthy(drills=[drill(36)])) == (
        Status.WARNING,
        ["WARNING: no passing drill in 35 days (last 36d ago)"],
    )
    assert messages(healthy(drills=[])) == (Status.WARNING, ["WARNING: no passing drill on record"])


def test_bucket_targets_need_no_drill():
    assert messages(healthy(kind="minio", drills=[]))[0] == Status.OK


def test_failed_runs_in_24h_are_a_warning():
    facts = healthy(failed_runs=["backup at 2026-11-23 01:30Z: pg_dump failed"])
    assert messages(facts) == (
        Status.WARNING,
        [
            "WARNING: 1 failed run in the last 24h (latest: backup at 2026-11-23 01:30Z: pg_dump failed)"
        ],
    )


def test_interrupted_runs_are_named_and_refused_runs_do_not_page():
    facts = healthy(
        interrupted_runs=["backup at 2026-11-23 01:30Z: interrupted (Ctrl-C or SIGTERM)"],
        refused_runs=[
            "backup at 2026-11-23 02:00Z: another backup of target app is running",
            "backup at 2026-11-23 03:00Z: another backup of target app is running",
        ],
    )
    assert messages(facts) == (
        Status.WARNING,
        [
            "WARNING: 1 interrupted run in the last 24h (latest: backup at 2026-11-23 01:30Z: "
            "interrupted (Ctrl-C or SIGTERM))",
            "OK: 2 runs refused while another held the lock in the last 24h (latest: backup at "
            "2026-11-23 03:00Z: another backup of target app is running)",
        ],
    )
    refused_only = healthy(refused_runs=facts.refused_runs)
    assert messages(refused_only)[0] == Status.OK  # a correct refusal pages nobody


def test_a_wrong_key_is_critical_for_every_target():
    error = "wrong passphrase: it opens none of the repository's access slots"
    repo = RepositoryFacts("s3://bucket/repo", True, error, wrong_key=True)
    report = build_report(repo, [healthy(newest=None), healthy(name="crm", newest=None)], NOW)
    assert (report.status, report.exit_code) == (Status.CRITICAL, 2)
    assert [t.status for t in report.targets] == [Status.CRITICAL, Status.CRITICAL]
    assert report.findings[0].message == f"wrong key: {error}"
    assert render(report, "text").splitlines()[0].endswith("repository s3://bucket/repo WRONG KEY")


def test_restore_close_to_rto_and_drill_warnings():
    assert messages(healthy(drills=[drill(2, restore_s=3000)]))[1] == [
        "WARNING: last drill restored in 50m, over 80% of the rto 1h"
    ]
    warned = healthy(drills=[drill(2, "warn")])
    assert messages(warned)[1] == [
        f"WARNING: last drill {warned.drills[-1].drill_id} passed with warnings"
    ]


def test_unknown_catalog_is_a_warning():
    assert messages(healthy(failed_runs=None)) == (
        Status.WARNING,
        ["WARNING: catalog unavailable: failed runs unknown"],
    )


def test_unreachable_repository_makes_everything_unknown():
    report = build_report(
        RepositoryFacts("s3://bucket/repo", False, "cannot reach http://127.0.0.1:1"),
        [healthy(newest=None)],
        NOW,
    )
    assert report.status == Status.UNKNOWN and report.exit_code == 3
    assert [t.status for t in report.targets] == [Status.UNKNOWN]
    assert report.findings[0].message == "repository unreachable: cannot reach http://127.0.0.1:1"


def test_report_status_is_the_worst_target_and_ranks_critical_over_unknown():
    report = build_report(REPO, [healthy(), healthy(name="crm", drills=[])], NOW)
    assert (report.status, report.exit_code) == (Status.WARNING, 1)
    assert worst([Status.WARNING, Status.UNKNOWN]) == Status.UNKNOWN
    assert worst([Status.UNKNOWN, Status.CRITICAL]) == Status.CRITICAL
    assert worst([]) == Status.OK


@pytest.mark.parametrize(
    "delta, text",
    [
        (timedelta(seconds=30), "30s"),
        (timedelta(minutes=61), "1h1m"),
        (timedelta(days=2, hours=3, minutes=4), "2d3h"),
    ],
)
def test_human_age(delta, text):
    assert human_age(delta) == text


# -- renderers ----------------------------------------------------------------------------


def sample_report():
    return build_report(
        REPO,
        [
            healthy(),
            healthy(name="crm", newest=backup(30), drills=[drill(1, "fail", None, ["rto"])]),
        ],
        NOW,
    )


def test_text_is_a_table_with_findings():
    lines = render(sample_report(), "text").splitlines()
    assert lines[0] == (
        "drbackup health CRITICAL at 2026-11-23 12:00:00Z: repository s3://bucket/repo (120.6 KiB)"
    )
    assert lines[2].split() == [
        "TARGET", "STATUS", "LAST", "BACKUP", "AGE", "/", "RPO", "RESTORE", "POINTS",
        "LAST", "DRILL", "RTO", "TREND", "FAILED", "24H",
    ]  # fmt: skip
    assert lines[3].split()[:6] == ["app", "OK", "20261123T000000Z-aaaaaa", "2h", "/", "1d"]
    assert lines[4].split()[:2] == ["crm", "CRITICAL"]
    assert "CRITICAL  crm: last backup is 1d6h old, older than the rpo 1d" in lines


def test_json_follows_the_documented_schema():
    data = json.loads(render(sample_report(), "json"))
    assert (data["format"], data["version"], data["status"], data["exit_code"]) == (
        "drbackup-health-report",
        1,
        "CRITICAL",
        2,
    )
    assert data["repository"] == {
        "url": "s3://bucket/repo",
        "id": "abc",
        "reachable": True,
        "wrong_key": False,
        "error": None,
        "size_bytes": 123456,
    }
    app = data["targets"][0]
    assert set(app) == {
        "target", "kind", "status", "findings", "rpo_s", "rto_s", "last_backup",
        "restore_points", "oldest_restore_point", "last_drill", "last_passing_drill",
        "rto_trend_s", "failed_runs_24h", "interrupted_runs_24h", "refused_runs_24h",
        "unreadable", "wal",
    }  # fmt: skip
    assert app["wal"] is None  # a target without a WAL archive
    assert app["last_backup"]["age_s"] == 7200 and app["restore_points"] == 7
    assert app["last_drill"]["status"] == "pass" and app["rto_trend_s"] == [60.0, 60.0]
    crm = data["targets"][1]
    assert crm["last_passing_drill"] is None and crm["last_drill"]["failed_checks"] == ["rto"]


def test_markdown_has_a_table_and_findings():
    text = render(sample_report(), "markdown")
    assert text.startswith("# drbackup health: **CRITICAL**\n")
    assert "| app | OK | 20261123T000000Z-aaaaaa | 2h / 1d |" in text
    assert "- **CRITICAL** crm: last backup is 1d6h old, older than the rpo 1d" in text


def test_prometheus_textfile_parses_back():
    text = render(sample_report(), "prometheus")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    # severities rank higher-is-worse: 0 OK, 1 WARNING, 2 UNKNOWN, 3 CRITICAL
    assert samples[("drbackup_health_report_severity", ())] == 3
    assert samples[("drbackup_health_repository_up", ())] == 1
    assert samples[("drbackup_health_repository_size_bytes", ())] == 123456
    assert samples[("drbackup_health_severity", (("target", "crm"),))] == 3
    assert samples[("drbackup_health_severity", (("target", "app"),))] == 0
    assert samples[("drbackup_health_last_backup_age_seconds", (("target", "app"),))] == 7200
    assert samples[("drbackup_health_restore_points", (("target", "app"),))] == 7
    assert samples[("drbackup_health_last_drill_passed", (("target", "crm"),))] == 0
    assert samples[("drbackup_health_rpo_objective_seconds", (("target", "app"),))] == 86400
    assert samples[("drbackup_health_rto_objective_seconds", (("target", "app"),))] == 3600
    # measured and objective are separate series; a drill without a time has no measurement
    assert samples[("drbackup_health_last_drill_measured_rto_seconds", (("target", "app"),))] == 60
    assert ("drbackup_health_last_drill_measured_rto_seconds", (("target", "crm"),)) not in samples
    last_pass = ("drbackup_health_last_drill_pass_timestamp_seconds", (("target", "app"),))
    assert samples[last_pass] == (NOW - timedelta(days=3)).timestamp()


def test_prometheus_runs_are_a_counter_per_status_without_created_series():
    facts = healthy(run_totals={"ok": 12, "failed": 2})
    text = render(
        build_report(REPO, [facts, healthy(name="crm", run_totals=None)], NOW), "prometheus"
    )
    (family,) = [
        f for f in text_string_to_metric_families(text) if f.name == "drbackup_health_runs"
    ]
    assert family.type == "counter"
    assert {(s.name, s.labels["status"]): s.value for s in family.samples} == {
        ("drbackup_health_runs_total", "ok"): 12,
        ("drbackup_health_runs_total", "failed"): 2,
        ("drbackup_health_runs_total", "interrupted"): 0,
        ("drbackup_health_runs_total", "refused"): 0,
    }  # crm's catalog was unreadable: no samples rather than zeros
    assert "_created" not in text and "24h" not in text


def test_prometheus_of_an_unreachable_repository():
    report = build_report(RepositoryFacts("/mnt/gone", False, "missing"), [healthy()], NOW)
    names = {f.name for f in text_string_to_metric_families(render(report, "prometheus"))}
    assert "drbackup_health_report_severity" in names and "drbackup_health_repository_up" in names
    samples = {
        s.name: s.value
        for f in text_string_to_metric_families(render(report, "prometheus"))
        for s in f.samples
    }
    assert samples["drbackup_health_report_severity"] == 2  # UNKNOWN ranks below CRITICAL
    assert samples["drbackup_health_repository_up"] == 0
