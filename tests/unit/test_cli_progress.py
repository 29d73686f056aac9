"""The progress reporter (cli/render.py): a bar with sizes, rate and time left on a
terminal; one line per phase otherwise; nothing when off."""

from __future__ import annotations

import io
import re
import time

import pytest

from drbackup.actions.progress import SILENT, CountingReader
from drbackup.cli.render import Reporter

MiB = 1 << 20


class Terminal(io.StringIO):
    """What a bar is drawn on: a stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def screens(text: str) -> list[str]:
    """The successive states of a redrawn line (click draws each after a carriage return)."""
    return [s.strip() for s in re.split(r"[\r\n]", re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", text))]


def test_a_bar_with_a_total_shows_sizes_rate_percentage_and_time_left(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "time", lambda: clock[0])
    term = Terminal()
    with Reporter("bar", term).phase("restore app", "read", 100 * MiB) as tick:
        for _ in range(4):
            clock[0] += 1.0
            tick(10 * MiB)
        drawn = screens(term.getvalue())
    last = [s for s in drawn if s][-1]
    assert last.startswith("restore app")
    assert "40%" in last
    assert "40.0 MiB of 100.0 MiB, 10.0 MiB/s" in last
    assert "00:00:06" in last  # 60 MiB left at 10 MiB/s
    assert "~" not in last  # an exact total


def test_an_estimated_total_is_marked_and_a_bar_without_one_shows_no_percentage(monkeypatch):
    clock = [50.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(time, "time", lambda: clock[0])
    estimated, unknown = Terminal(), Terminal()
    with Reporter("bar", estimated).phase("backup app", "dumped", 3 << 30, estimate=True) as t:
        clock[0] += 2.0
        t(1536 * MiB)
    with Reporter("bar", unknown).phase("snapshot files", "read") as t:
        clock[0] += 2.0
        t(3 * MiB)
    assert "1.5 GiB of ~3.0 GiB, 768.0 MiB/s" in estimated.getvalue()
    shown = [s for s in screens(unknown.getvalue()) if s][-1]
    assert shown.startswith("snapshot files") and shown.endswith("3.0 MiB, 1.5 MiB/s")
    assert "%" not in shown


def test_without_a_terminal_each_phase_prints_one_line_at_its_end(monkeypatch):
    clock = [10.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    report = Reporter("lines", out)
    with report.phase("backup app", "dumped", 1 << 30, estimate=True) as tick:
        tick(600 * MiB)
        assert out.getvalue() == ""  # nothing while it runs
        clock[0] += 14.2
        tick(629 * MiB)
        clock[0] += 5.0  # after the last bytes (an upload, pg_restore's indexes): not counted
    with report.phase("backup other", "dumped") as tick:
        clock[0] += 0.5
    assert out.getvalue().splitlines() == [
        "backup app: dumped 1.2 GiB in 14.2 s (86.5 MiB/s)",
        "backup other: dumped 0 B in 0.5 s (0 B/s)",
    ]


def test_a_failed_phase_prints_nothing_and_off_prints_nothing():
    out = io.StringIO()
    with pytest.raises(RuntimeError), Reporter("lines", out).phase("restore app", "read") as t:
        t(5)
        raise RuntimeError("the error says it")
    with Reporter("off", out).phase("restore app", "read", 10) as t:
        t(10)
    with SILENT.phase("restore app", "read", 10) as t:
        t(10)
    assert out.getvalue() == ""


def test_a_counting_reader_ticks_what_it_reads():
    seen = []
    reader = CountingReader(io.BytesIO(b"x" * 2500), seen.append)
    assert len(reader.read(1000)) + len(reader.read()) == 2500
    assert reader.read(10) == b""
    assert seen == [1000, 1500]


def test_a_total_found_beside_the_work_is_asked_at_the_first_bytes(monkeypatch):
    asked = []

    def total() -> int:
        asked.append(True)
        return 4 * MiB

    term = Terminal()
    assert Reporter("bar", term).wants_total and not Reporter("lines").wants_total
    with Reporter("bar", term).phase("backup app", "dumped", total, estimate=True) as tick:
        assert asked == []
        tick(MiB)
        tick(MiB)
    assert asked == [True]
    assert "2.0 MiB of ~4.0 MiB" in term.getvalue() and "50%" in term.getvalue()


def test_an_estimate_that_cannot_be_found_leaves_the_fallback():
    from drbackup.actions.progress import estimate_beside
    from drbackup.errors import StorageError

    def unreachable() -> int:
        raise StorageError("cannot list the repository")

    assert estimate_beside(unreachable, 123)() == 123
    assert estimate_beside(lambda: None, 123)() == 123
    assert estimate_beside(lambda: 456, 123)() == 456


def test_a_note_shows_beside_the_bar_and_nowhere_else():
    term, log = Terminal(), io.StringIO()
    with Reporter("bar", term).phase("restore app", "read", 10) as tick:
        tick(10)
        Reporter("bar", term).note("restore app", "elsewhere")  # another reporter: no bar
        report = Reporter("lines", log)
        with report.phase("restore other", "read") as other:
            other(1)
            report.note("restore other", "building indexes and constraints (post-data)")
    assert "elsewhere" not in term.getvalue()
    assert log.getvalue().splitlines()[0].startswith("restore other: read 1 B in ")
    assert "post-data" not in log.getvalue()  # the summary line has its time
    term = Terminal()
    report = Reporter("bar", term)
    with report.phase("restore app", "read", 10) as tick:
        tick(10)
        before = term.getvalue()
        report.note("restore app", "building indexes and constraints (post-data)")
        redrawn = term.getvalue()[len(before) :]  # drawn at once, not at the next bytes
    last = [s for s in screens(redrawn) if s][-1]
    assert last.startswith("restore app") and "100%" in last and "10 B of 10 B, " in last
    assert last.endswith("/s; building indexes and constraints (post-data)")


def test_bytes_read_after_a_bar_ended_are_ignored():
    term = Terminal()
    with Reporter("bar", term).phase("restore app", "read", 10) as tick:
        tick(10)
    drawn = term.getvalue()
    tick(5)  # a stream's last bytes, read after pg_restore moved on
    assert term.getvalue() == drawn
