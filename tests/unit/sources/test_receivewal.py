"""pg_receivewal's argv, and reading the directory it writes."""

from __future__ import annotations

from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from drbackup.sources.postgres.receivewal import ReceiveDir, is_routine_line, receivewal_argv
from drbackup.sources.postgres.slots import default_slot_name

BIN = Path("/usr/lib/postgresql/15/bin")
SEG = 16 << 20


def test_the_argv_streams_through_the_slot_without_looping_or_a_password():
    argv = receivewal_argv(
        BIN,
        "postgresql://app:hunter2@db:5433/postgres",
        Path("/spool/wal"),
        slot="drbackup_app",
        status_interval=2,
    )
    assert argv[:-1] == [
        "/usr/lib/postgresql/15/bin/pg_receivewal",
        "--directory=/spool/wal",
        "--slot=drbackup_app",
        "--no-loop",
        "--no-password",
        "--verbose",
        "--status-interval=2",
    ]
    assert not [a for a in argv if "hunter2" in a]
    conninfo = conninfo_to_dict(argv[-1].removeprefix("--dbname="))
    assert conninfo == {
        "user": "app",
        "host": "db",
        "port": "5433",
        "dbname": "postgres",
        "application_name": "drbackup_app",  # what synchronous_standby_names names
    }
    synchronous = receivewal_argv(BIN, "host=db", Path("/w"), slot="s", synchronous=True)
    assert "--synchronous" in synchronous


def test_default_slot_names_are_valid_slot_names():
    assert default_slot_name("app") == "drbackup_app"
    assert default_slot_name("billing-eu.1") == "drbackup_billing_eu_1"
    assert len(default_slot_name("x" * 63)) == 63


def test_progress_lines_are_routine_and_errors_are_not():
    assert is_routine_line("pg_receivewal: finished segment at 0/2000000 (timeline 1)")
    assert not is_routine_line("pg_receivewal: error: could not connect to server")


def _touch(directory: Path, name: str, size: int = SEG) -> None:
    with (directory / name).open("wb") as f:
        f.truncate(size)


def test_the_directory_orders_files_as_pg_receivewal_resumes(tmp_path):
    for name in (
        "000000010000000000000003",
        "000000010000000000000004",
        "000000010000000000000005.partial",  # timeline 1 ended here
        "000000020000000000000005.partial",  # timeline 2 is written now
        "00000002.history",
        "notes.txt",
        ".snapshot",
    ):
        _touch(tmp_path, name, 100 if "history" in name else SEG)
    spool = ReceiveDir(tmp_path)
    assert [n.name for n in spool.completed()] == [
        "00000002.history",
        "000000010000000000000003",
        "000000010000000000000004",
    ]
    assert [n.name for n in spool.partials()] == [
        "000000010000000000000005.partial",
        "000000020000000000000005.partial",
    ]
    assert spool.waiting_bytes() == 2 * SEG
    assert not spool.is_empty()


def test_a_seed_marks_the_start_and_an_unused_one_is_removed(tmp_path):
    spool = ReceiveDir(tmp_path)
    assert spool.is_empty() and spool.waiting_bytes() == 0
    seed = spool.seed("000000010000000000000009")
    assert seed.name == "000000010000000000000009.partial" and seed.stat().st_size == 0
    _touch(tmp_path, "00000001000000000000000A.partial")  # written into: kept
    assert spool.remove_empty_partials() == ["000000010000000000000009.partial"]
    assert [n.name for n in spool.partials()] == ["00000001000000000000000A.partial"]


def test_a_partial_left_half_padded_is_emptied_so_that_pg_receivewal_resumes(tmp_path):
    _touch(tmp_path, "000000010000000000000007.partial", 5 << 20)  # killed while padding
    _touch(tmp_path, "000000010000000000000006.partial")  # ended timeline? full size: kept
    spool = ReceiveDir(tmp_path)
    assert spool.truncate_unpadded(SEG) == ["000000010000000000000007.partial"]
    assert (tmp_path / "000000010000000000000007.partial").stat().st_size == 0
    assert (tmp_path / "000000010000000000000006.partial").stat().st_size == SEG
