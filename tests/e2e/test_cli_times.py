"""A time given without a zone says which zone it was read in (issue 20): ``--point-in-time
2026-12-01T10:00:00`` is UTC, and the restore says so on stderr before anything else."""

from __future__ import annotations

NOTE = (
    "drbackup: note: {text} has no zone: read as UTC ({text}+00:00); "
    "add Z or an offset such as +01:00 to say so"
)


def test_a_point_in_time_without_a_zone_says_it_was_read_as_utc(local_repo_config, pg_db, run_cli):
    pg_db.execute("CREATE TABLE t (n integer); INSERT INTO t VALUES (1)")
    assert run_cli("backup", "postgres", "app").code == 0

    naive = "2000-01-01T10:00:00"
    result = run_cli("restore", "postgres", "app", "--into", pg_db.dsn, "--point-in-time", naive)
    assert (result.code, result.stdout) == (2, "")
    assert result.error_lines[0] == NOTE.format(text=naive)
    assert result.error_lines[1] == (
        "drbackup: error: no backup of app has a recovery point at or before "
        "2000-01-01T10:00:00+00:00"
    )

    zoned = run_cli(
        "restore", "postgres", "app", "--into", pg_db.dsn, "--point-in-time", naive + "Z"
    )
    assert zoned.code == 2
    assert "has no zone" not in zoned.stderr
    assert zoned.error_lines[0].startswith("drbackup: error: no backup of app has a recovery")

    bad = run_cli("restore", "postgres", "app", "--into", pg_db.dsn, "--point-in-time", "soon")
    assert (bad.code, bad.error_lines) == (
        2,
        ["drbackup: error: invalid time: 'soon'", "hint: use ISO 8601, e.g. 2026-11-23T02:00:00Z"],
    )
