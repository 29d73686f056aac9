"""Checks that need no database: restore outcomes, fingerprint comparisons, objectives,
assertion value comparison."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from drbackup.drill.assertions import _same
from drbackup.drill.checks import (
    RestoreOutcome,
    check_restore,
    check_rpo,
    check_rto,
    check_schema,
    check_tables,
    format_seconds,
    json_value,
    timed,
)
from drbackup.errors import IntegrityError, ObjectNotFoundError, RestoreError
from drbackup.sources.postgres.restore import RestoreRun


def fingerprint(tables: dict, inventory: dict | None = None, level: str = "full") -> dict:
    return {
        "version": 1,
        "level": level,
        "tables": tables,
        "inventory": inventory or {"tables": {}, "indexes": {}},
        "large_objects": 0,
    }


def table(rows: int, digest: str = "0" * 32, kind: str = "table") -> dict:
    return {"rows": rows, "hash": digest, "kind": kind}


def test_restore_pass_and_each_failure_cause():
    run = RestoreRun({"pre_data": 0.1, "data": 1.0, "post_data": 0.4}, 0.2, 1234, 1.5)
    assert check_restore(RestoreOutcome(run=run, seconds=1.6)).summary == (
        "restored 1.2 KiB of archive in 1.5s with 0 pg_restore errors"
    )
    trap = RestoreError(
        "restore of app into x failed: pg_restore reported 1 error(s)\n"
        '  COPY failed for table "items": ERROR:  relation "codes" does not exist'
    )
    result = check_restore(RestoreOutcome(error=trap))
    assert result.status == "fail"
    assert result.summary == (
        'pg_restore reported 1 error(s): COPY failed for table "items": ERROR:  relation '
        '"codes" does not exist'
    )
    assert result.evidence["pg_restore_errors"] == [
        'COPY failed for table "items": ERROR:  relation "codes" does not exist'
    ]
    missing = check_restore(RestoreOutcome(error=ObjectNotFoundError("data/app/B/0000-00000")))
    assert missing.summary == "backup object missing: data/app/B/0000-00000"
    corrupt = IntegrityError("data/app/B/0000-00000: chunk 3 failed authentication (corrupted)")
    assert check_restore(RestoreOutcome(error=corrupt)).summary == (
        "backup object corrupted: data/app/B/0000-00000: chunk 3 failed authentication (corrupted)"
    )


def test_tables_name_the_differing_tables_with_both_counts():
    expected = fingerprint({"public.a": table(3), "public.b": table(5), "public.c": table(1)})
    actual = fingerprint(
        {"public.a": table(0), "public.b": table(5, "f" * 32), "public.d": table(2)}
    )
    result = check_tables(expected, actual)
    assert result.status == "fail"
    assert result.summary == (
        "4 table differences: row count of table public.a differs: expected 3, actual 0; "
        "content of table public.b differs (00000000… vs ffffffff…); table public.c is "
        "missing: expected 1 rows, actual none; and 1 more"
    )
    assert [d["object"] for d in result.evidence["differences"]] == [
        "public.a",
        "public.b",
        "public.c",
        "public.d",
    ]


def test_a_stale_materialized_view_only_warns():
    expected = fingerprint({"public.m": table(3, kind="matview")})
    result = check_tables(expected, fingerprint({"public.m": table(4, kind="matview")}))
    assert result.status == "warn" and "refreshed by the restore" in result.summary


def test_no_fingerprint_warns():
    assert check_tables(None, None).status == "warn"
    assert "fingerprint: off" in check_schema(None, None).summary


def test_schema_names_missing_and_extra_objects():
    inv = {"tables": {}, "indexes": {"public.t": {"t_pkey": "CREATE UNIQUE INDEX t_pkey ..."}}}
    result = check_schema(fingerprint({}, inv), fingerprint({}, {"tables": {}, "indexes": {}}))
    assert result.status == "fail"
    assert result.summary.startswith("1 schema difference: index public.t.t_pkey is missing")


def test_rto_by_phase_against_the_objective():
    timings = {
        "restore_s": 4.0,
        "fetch_decrypt_s": 0.2,
        "pre_data_s": 0.5,
        "data_s": 2.5,
        "post_data_s": 1.0,
        "verification_s": 1.5,
    }
    over = check_rto(timings, timedelta(milliseconds=1), restored=True)
    assert over.status == "fail"
    assert over.summary == (
        "restore and verification took 5.5s, over the objective of 1ms (fetch/decrypt 0.2s, "
        "data 2.5s, indexes and constraints 1.0s, verification 1.5s)"
    )
    assert check_rto(timings, timedelta(seconds=6), restored=True).status == "warn"
    assert check_rto(timings, timedelta(minutes=15), restored=True).status == "pass"
    failed = check_rto(timings, timedelta(minutes=15), restored=False)
    assert failed.status == "fail" and failed.summary.startswith("not met: the restore failed")


def test_rto_of_a_restore_without_pg_restore_phases_names_restore_and_verification():
    timings = {"restore_s": 4.0, "verification_s": 1.5}  # a bucket drill's
    over = check_rto(timings, timedelta(milliseconds=1), restored=True)
    assert (over.status, over.summary) == (
        "fail",
        "restore and verification took 5.5s, over the objective of 1ms "
        "(restore 4.0s, verification 1.5s)",
    )
    assert over.evidence == {
        "restore_s": 4.0,
        "verification_s": 1.5,
        "total_s": 5.5,
        "objective_s": 0.001,
    }
    ok = check_rto(timings, timedelta(minutes=15), restored=True)
    assert ok.summary == "5.5s, 1% of the objective of 15m (restore 4.0s, verification 1.5s)"
    failed = check_rto(timings, timedelta(minutes=15), restored=False)
    assert failed.summary == "not met: the restore failed after 5.5s (objective 15m)"


def test_rpo_uses_the_newest_backup():
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    fresh = check_rpo(
        now - timedelta(hours=2), now - timedelta(hours=2), now, timedelta(hours=24), "latest"
    )
    assert (
        fresh.status == "pass"
        and fresh.summary == "restored backup is 2h old, within the objective of 24h"
    )
    old = now - timedelta(days=3)
    stale = check_rpo(old, old, now, timedelta(hours=24), "latest")
    assert stale.summary == "newest backup is 3d old, over the objective of 24h"
    random_old = check_rpo(old, now - timedelta(hours=1), now, timedelta(hours=24), "random")
    assert random_old.status == "pass" and "newest backup is 60m old" in random_old.summary


def test_assertion_values_compare_by_value_and_type():
    assert _same(json_value([[Decimal("500")]]), [[500]])
    assert _same([[500.0]], [[500]])
    assert not _same([[True]], [[1]])
    assert _same(json_value([[datetime(2026, 1, 1, tzinfo=UTC)]]), [["2026-01-01T00:00:00+00:00"]])
    assert not _same([[1], [2]], [[1]])


def test_json_value_and_format_seconds():
    assert json_value({"a": (Decimal("1.5"), b"\x00\x01", float("nan"))}) == {
        "a": [1.5, "\\x0001", "nan"]
    }
    assert [format_seconds(s) for s in (0.001, 42.25, 5400, 200000)] == [
        "1ms",
        "42.2s",
        "90m",
        "2d7h",
    ]


def test_a_crashing_check_is_recorded_not_raised():
    def broken():
        raise ValueError("boom")

    result = timed("schema", broken)
    assert result.status == "fail" and result.summary == "check could not run: ValueError: boom"
