"""Recovery targets as PostgreSQL settings, and what a recovering server's log says."""

from __future__ import annotations

from datetime import UTC, datetime

from drbackup.sources.postgres.recovery import (
    LATEST,
    LSN,
    NAME,
    XID,
    RecoveryTarget,
    parse_recovery_log,
    write_recovery_config,
)


def test_a_whole_second_covers_the_second_and_a_fraction_is_exact():
    second = RecoveryTarget.at_time(datetime(2026, 11, 23, 14, 31, 7, tzinfo=UTC))
    assert second.settings() == {
        "recovery_target_timeline": "latest",
        "recovery_target_time": "2026-11-23 14:31:07.999999+00:00",
        "recovery_target_inclusive": "on",
    }
    exact = RecoveryTarget.at_time(
        datetime(2026, 11, 23, 14, 31, 7, 250000, tzinfo=UTC), inclusive=False
    )
    assert exact.settings()["recovery_target_time"] == "2026-11-23 14:31:07.250000+00:00"
    assert exact.settings()["recovery_target_inclusive"] == "off"


def test_the_other_targets():
    assert RecoveryTarget(LSN, lsn=0x16B374D8).settings()["recovery_target_lsn"] == "0/16B374D8"
    assert RecoveryTarget(XID, xid=88213).settings()["recovery_target_xid"] == "88213"
    assert (
        RecoveryTarget(NAME, name="before migration").settings()["recovery_target_name"]
        == "before migration"
    )
    assert RecoveryTarget(LATEST, timeline="2").settings() == {"recovery_target_timeline": "2"}


def test_recovery_settings_replace_an_earlier_block_and_keep_the_rest(tmp_path):
    (tmp_path / "postgresql.auto.conf").write_text("work_mem = '64MB'\n")
    write_recovery_config(tmp_path, {"restore_command": "x %f %p", "recovery_target_name": "it's"})
    write_recovery_config(tmp_path, {"restore_command": "y %f %p"})
    text = (tmp_path / "postgresql.auto.conf").read_text()
    assert text.startswith("work_mem = '64MB'\n")
    assert "restore_command = 'y %f %p'" in text and "x %f" not in text and "it''s" not in text
    assert (tmp_path / "recovery.signal").exists()


LOG = """\
2026-11-23 14:40:01.100 UTC [17] LOG:  starting point-in-time recovery to 2026-11-23 14:31:07.999999+00
2026-11-23 14:40:02.917 UTC [17] LOG:  restored log file "000000010000000000000003" from archive
2026-11-23 14:40:03.223 UTC [17] LOG:  consistent recovery state reached at 0/31163B0
2026-11-23 14:40:04.723 UTC [17] LOG:  recovery stopping before commit of transaction 745, time 2026-11-23 14:31:08.023609+00
2026-11-23 14:40:04.723 UTC [17] LOG:  redo done at 0/3000478 system usage: CPU: user: 0.00 s
2026-11-23 14:40:04.723 UTC [17] LOG:  last completed transaction was at log time 2026-11-23 14:31:07.770325+00
2026-11-23 14:40:04.800 UTC [17] LOG:  selected new timeline ID: 2
"""


def test_the_log_says_where_recovery_stopped():
    log = parse_recovery_log(LOG)
    assert log.reached_target and log.stop_xid == 745
    assert log.stop_time == datetime(2026, 11, 23, 14, 31, 8, 23609, tzinfo=UTC)
    assert log.last_commit == datetime(2026, 11, 23, 14, 31, 7, 770325, tzinfo=UTC)
    assert (log.redo_done, log.consistent_at, log.new_timeline) == (0x3000478, 0x31163B0, 2)


def test_a_recovery_that_ran_out_of_wal_reached_nothing():
    fatal = "FATAL:  recovery ended before configured recovery target was reached"
    log = parse_recovery_log(f"2026-11-23 14:40:04 UTC [17] {fatal}\n")
    assert not log.reached_target
    assert log.fatal == ["recovery ended before configured recovery target was reached"]
    lsn = parse_recovery_log('LOG:  recovery stopping after WAL location (LSN) "0/3000060"\n')
    assert lsn.reached_target and lsn.stop_lsn == 0x3000060
