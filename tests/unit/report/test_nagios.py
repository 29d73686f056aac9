"""``report --format nagios``: the plugin convention's state line, perfdata and long output."""

from __future__ import annotations

import re
from datetime import timedelta

from drbackup.report.health import RepositoryFacts, build_report
from drbackup.report.nagios import perfdata
from drbackup.report.render import render
from tests.unit.report.test_health import NOW, REPO, backup, drill, healthy

# 'label'=value[UOM];[warn];[crit];[min];[max] (Nagios plugin development guidelines)
PERF_ITEM = re.compile(r"'(?:[^'=]|'')+'=-?[0-9.]+(?:s|B|%)?;[0-9.]*;[0-9.]*;[0-9.]*;[0-9.]*")


def test_ok_is_one_state_line_with_perfdata_and_the_targets():
    report = build_report(REPO, [healthy(), healthy(name="crm")], NOW)
    lines = render(report, "nagios").splitlines()
    state, _, perf = lines[0].partition(" | ")
    assert state == "DRBACKUP OK - 2 targets OK"
    assert lines[1:] == ["app OK", "crm OK"]
    assert perf.split() == [
        "'app",
        "backup_age'=7200s;;86400;0;",
        "'app",
        "drill_rto'=60s;2880;3600;0;",
        "'app",
        "restore_points'=7;;;0;",
        "'crm",
        "backup_age'=7200s;;86400;0;",
        "'crm",
        "drill_rto'=60s;2880;3600;0;",
        "'crm",
        "restore_points'=7;;;0;",
        "'repository_size'=123456B;;;0;",
    ]
    assert all(PERF_ITEM.fullmatch(item) for item in _items(perf))


def test_critical_names_the_worst_findings_first_and_lists_all_below():
    crm = healthy(name="crm", newest=backup(30), drills=[drill(1, "fail", None, ["tables"])])
    slow = healthy(name="web", drills=[drill(1, restore_s=3000)])
    report = build_report(REPO, [healthy(), slow, crm], NOW)
    text = render(report, "nagios")
    first = text.splitlines()[0]
    assert first.startswith(
        "DRBACKUP CRITICAL - crm: last backup is 1d6h old, older than the rpo 1d; "
        "crm: last drill 20261122T120000Z-d00000 failed: tables; "
        "web: last drill restored in 50m, over 80% of the rto 1h; 1 more | "
    )
    assert text.splitlines()[1:] == [
        "crm CRITICAL: last backup is 1d6h old, older than the rpo 1d",
        "crm CRITICAL: last drill 20261122T120000Z-d00000 failed: tables",
        "web WARNING: last drill restored in 50m, over 80% of the rto 1h",
        "crm WARNING: no passing drill on record",
        "app OK",
    ]
    assert "'web drill_rto'=3000s;2880;3600;0;" in first
    assert "'crm drill_rto'" not in first  # the failed drill has no time
    assert report.exit_code == 2


def test_unknown_when_the_repository_is_unreachable():
    report = build_report(RepositoryFacts("/mnt/gone", False, "missing"), [healthy()], NOW)
    lines = render(report, "nagios").splitlines()
    assert lines[0] == (
        "DRBACKUP UNKNOWN - drbackup: repository unreachable: missing | "
        "'app backup_age'=7200s;;86400;0; 'app drill_rto'=60s;2880;3600;0; "
        "'app restore_points'=7;;;0;"
    )
    assert report.exit_code == 3


def test_labels_are_quoted_and_values_plain_numbers():
    facts = healthy(rpo=timedelta(minutes=90), newest=backup(0.5))
    items = _items(perfdata(build_report(REPO, [facts], NOW)))
    assert items[0] == "'app backup_age'=1800s;;5400;0;"
    assert all(PERF_ITEM.fullmatch(item) for item in items)


def _items(perf: str) -> list[str]:
    return re.findall(r"'(?:[^']|'')+'=\S+", perf)


def test_the_prometheus_textfile_follows_the_naming_conventions():
    """Every series of ``report --format prometheus``: names, types, units (the daemon's
    /metrics passes the same check in tests/integration/test_deploy.py)."""
    from tests.fixtures.prometheus import convention_problems
    from tests.unit.report.test_health_wal import wal

    facts = [healthy(run_totals={"ok": 3, "failed": 1}, wal=wal()), healthy(name="crm")]
    text = render(build_report(REPO, facts, NOW), "prometheus")
    assert convention_problems(text) == []
    assert "drbackup_health_runs_total{" in text
