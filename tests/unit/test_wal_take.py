"""The bare client of the read-ahead spool (a restored server's restore_command): its answers
and PostgreSQL's exit codes, against a spool written as the fetcher writes it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

import pytest

from drbackup.actions import wal_take
from drbackup.actions.wal_take import FetchFailed, answer

NAME = "000000010000000000000007"


def test_a_fetched_file_is_moved_into_place(tmp_path):
    (tmp_path / NAME).write_bytes(b"wal")
    assert answer(str(tmp_path), NAME, str(tmp_path / "dest")) is True
    assert (tmp_path / "dest").read_bytes() == b"wal" and not (tmp_path / NAME).exists()


def test_missing_is_false_but_a_stale_read_ahead_missing_is_asked_again(tmp_path):
    missing = tmp_path / f"{NAME}.missing"
    missing.touch()
    assert answer(str(tmp_path), NAME, str(tmp_path / "dest")) is False
    assert not missing.exists()
    missing.touch()
    old = time.time() - wal_take.STALE_MISSING - 1
    os.utime(missing, (old, old))
    assert answer(str(tmp_path), NAME, str(tmp_path / "dest")) is None
    assert not missing.exists()
    assert answer(str(tmp_path), NAME, str(tmp_path / "dest")) is None  # nothing yet


def test_an_error_carries_its_message_and_hint(tmp_path):
    (tmp_path / f"{NAME}.error").write_text("WAL segment x is damaged\nhint: verify")
    with pytest.raises(FetchFailed) as raised:
        answer(str(tmp_path), NAME, str(tmp_path / "dest"))
    assert (raised.value.message, raised.value.hint) == ("WAL segment x is damaged", "hint: verify")


def run_script(spool, name, dest):
    argv = [sys.executable, "-I", "-S", wal_take.__file__, str(spool), name, str(dest)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, env={})


def test_the_script_answers_as_postgresql_expects_while_the_spool_is_served(tmp_path):
    (tmp_path / "lock").touch()
    with open(tmp_path / "lock", "rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a fetcher serves the spool
        (tmp_path / NAME).write_bytes(b"wal")
        done = run_script(tmp_path, NAME, tmp_path / "dest")
        assert (done.returncode, done.stderr) == (0, "")
        assert (tmp_path / "want").read_text() == NAME
        (tmp_path / "00000002.history.missing").touch()
        done = run_script(tmp_path, "00000002.history", tmp_path / "h")
        assert (done.returncode, done.stderr) == (1, "")  # quietly: not archived
    done = run_script(tmp_path, NAME, tmp_path / "dest")  # nobody serves it now
    assert done.returncode == 1
    assert done.stderr == f"drbackup: error: no WAL fetcher serves {tmp_path}\n"


def run_restore_command(spool, name, dest):
    """The restored server's restore_command, run as PostgreSQL runs it (``sh -c``)."""
    from drbackup.actions.restore_physical import _hosted_command

    command = _hosted_command(spool).replace("%f", name).replace("%p", str(dest))
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)


def test_the_restore_command_moves_a_read_ahead_file_without_the_client(tmp_path):
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / NAME).write_bytes(b"wal")
    # nobody serves the spool: only the shell's path can succeed
    done = run_restore_command(spool, NAME, tmp_path / "RECOVERYXLOG")
    assert (done.returncode, done.stderr) == (0, "")
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == b"wal" and not (spool / NAME).exists()
    assert (spool / "want").read_text().strip() == NAME  # the fetcher reads ahead from here
    done = run_restore_command(spool, "000000010000000000000008", tmp_path / "RECOVERYXLOG")
    assert done.returncode == 1  # not in the spool: the client asks, and nobody serves it
    assert done.stderr == f"drbackup: error: no WAL fetcher serves {spool}\n"
    assert (spool / "want").read_text().strip() == "000000010000000000000008"
