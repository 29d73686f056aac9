"""Report assembly and rendering, failure summaries, history and the RTO trend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from drbackup.drill.checks import CheckResult
from drbackup.drill.history import history_entries, rto_trend, sparkline
from drbackup.drill.report import (
    build_report,
    expand_output_path,
    failure_summary,
    format_for_path,
    read_report_file,
    render_text,
    write_report_file,
)

STARTED = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


def sample_report(drill_id: str = "20261123T020000Z-a1b2c3", total: float = 5.3) -> dict:
    checks = [
        CheckResult("restore", "pass", "restored 100 archive bytes in 4.0s", {}, 4.0, "app", "app"),
        CheckResult(
            "tables",
            "fail",
            "1 table difference: row count of table public.items differs: expected 3, actual 0",
            {"differences": []},
            0.5,
            "app",
            "app",
        ),
        CheckResult(
            "foreign_keys", "warn", "1 pre-existing inconsistency: x", {}, 0.1, "app", "app"
        ),
        CheckResult("rto", "pass", "5.3s, 1% of the objective of 15m", {}, 0.0, "app", None),
    ]
    targets = [
        {
            "target": "app",
            "backup_id": "20261123T010000Z-000001",
            "recovery_point": "2026-11-23T01:00:00+00:00",
            "selection": "latest backup",
            "databases": [{"database": "app", "scratch_database": "drbackup_drill_app_x"}],
            "scratch": {"kind": "server", "server": "postgresql://drill@h/postgres", "kept": False},
            "timings": {
                "restore_s": 4.0,
                "fetch_decrypt_s": 0.2,
                "pre_data_s": 0.5,
                "data_s": 2.5,
                "post_data_s": 1.0,
                "verification_s": total - 4.0,
                "total_s": total,
            },
            "objectives": {"rto_s": 900.0, "rpo_s": 86400.0},
        }
    ]
    return build_report(
        drill_id=drill_id,
        plan="monthly",
        started_at=STARTED,
        finished_at=STARTED + timedelta(seconds=6),
        repository={"id": "r1", "url": "/srv/repo"},
        targets=targets,
        checks=[c.to_dict() for c in checks],
    )


def test_report_status_and_counts():
    report = sample_report()
    assert report["format"] == "drbackup-drill-report" and report["version"] == 1
    assert report["status"] == "fail"
    assert report["counts"] == {"pass": 2, "warn": 1, "fail": 1}
    assert report["targets"][0]["status"] == "fail"
    assert report["elapsed_s"] == 6.0


def test_failure_summary_names_every_failed_check():
    assert failure_summary(sample_report()) == (
        "drill 20261123T020000Z-a1b2c3 failed (1 of 4 checks): app tables: 1 table difference: "
        "row count of table public.items differs: expected 3, actual 0"
    )


def test_text_rendering():
    text = render_text(sample_report())
    lines = text.splitlines()
    assert lines[0] == (
        "drill 20261123T020000Z-a1b2c3 (plan monthly): FAIL - 2 passed, 1 warned, 1 failed"
    )
    assert "  FAIL  tables        1 table difference: row count of table public.items" in text
    assert (
        "  restore 4.0s (fetch/decrypt 0.2s, pre-data 0.5s, data 2.5s, indexes and constraints "
        "1.0s), verification 1.3s; rto 15m" in lines
    )
    assert lines[-1] == "report not signed (no drill.signing_key_file)"


def test_output_paths_and_formats(tmp_path):
    path = expand_output_path(
        str(tmp_path / "{plan}-{date}-{drill_id}.md"), drill_id="D", plan="monthly", when=STARTED
    )
    assert path.name == "monthly-2026-11-23-D.md"
    assert format_for_path(path) == "markdown" and format_for_path("r.json") == "json"
    assert format_for_path("r.txt", "markdown") == "markdown"
    written = write_report_file(sample_report(), tmp_path / "sub" / "r.json", "json")
    assert read_report_file(written) == sample_report() | {
        "host": read_report_file(written)["host"]
    }


def test_history_and_rto_trend():
    reports = [
        sample_report(f"2026112{i}T020000Z-00000{i}", total)
        for i, total in enumerate((4.0, 5.0, 6.0))
    ]
    entries = [e for r in reports for e in history_entries(r)]
    assert [e["total_s"] for e in entries] == [4.0, 5.0, 6.0]
    assert entries[0]["failed"] == ["tables"] and entries[0]["status"] == "fail"
    trend = rto_trend(entries)["app"]
    assert trend["series"] == [4.0, 5.0, 6.0] and trend["drills"] == 3
    assert trend["change_pct"] == 20.0 and trend["median_s"] == 5.0
    assert trend["headroom_pct"] == round(100 * (1 - 6 / 900), 1)
    assert trend["sparkline"] == "▁▅█"
    assert sparkline([]) == "" and sparkline([3.0, 3.0]) == "▁▁"
