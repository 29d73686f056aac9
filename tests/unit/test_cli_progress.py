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


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    """A terminal wide enough for every bar below (a test that fits one narrower says so);
    a Terminal has no size of its own: $COLUMNS is what a bar fits into."""
    monkeypatch.setenv("COLUMNS", "120")


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
    *_, shown, ended = [s for s in screens(unknown.getvalue()) if s]
    assert shown.startswith("snapshot files") and shown.endswith("3.0 MiB, 1.5 MiB/s")
    assert "%" not in shown
    assert ended == "snapshot files: read 3.0 MiB in 2.0 s (1.5 MiB/s)"  # the bar's place


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
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    asked = []

    def total() -> int:
        asked.append(True)
        return 4 * MiB

    term = Terminal()
    assert Reporter("bar", term).wants_total and not Reporter("lines").wants_total
    with Reporter("bar", term).phase("backup app", "dumped", total, estimate=True) as tick:
        assert asked == []
        tick(MiB)
        assert "1.0 MiB of ~4.0 MiB" in term.getvalue()  # drawn when found
        clock[0] += 1.0  # a bar redraws at most every Reporter.REDRAW_S
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


def replay(monkeypatch, columns: int) -> Terminal:
    """The phases of the outside-in review, drawn on a terminal ``columns`` wide: a verify
    (a long label), a restore noting post-data, a backup whose estimate was too high, one
    whose data grew, a snapshot without a total; 20 ticks each, 0.5 s apart."""
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    monkeypatch.setenv("COLUMNS", str(columns))
    term = Terminal()
    report = Reporter("bar", term)
    post_data = "building indexes and constraints (post-data)"
    for label, verb, total, estimate, size, note in [
        ("verify app/20261123T010004Z-5d1e2f", "read", 2 << 30, False, 2 << 30, ""),
        ("restore app", "read", 1 << 30, False, 1 << 30, post_data),
        ("backup app", "dumped", 334 * MiB, True, 222 * MiB, ""),
        ("backup app", "dumped", 222 * MiB, True, 310 * MiB, ""),
        ("snapshot files", "read", None, False, 40 * MiB, ""),
    ]:
        with report.phase(label, verb, total, estimate=estimate) as tick:
            for n in range(20):
                clock[0] += 0.5
                tick(size // 20 if n < 19 else size - 19 * (size // 20))
            if note:
                report.note(label, note)
    return term


@pytest.mark.parametrize("columns", [80, 40])
def test_every_line_drawn_fits_the_terminal_less_a_column(monkeypatch, columns):
    drawn = [s for s in screens(replay(monkeypatch, columns).getvalue()) if s]
    assert len(drawn) > 5 * 20  # a redraw per tick, and each phase's last line
    assert max(len(s) for s in drawn) <= columns - 1, max(drawn, key=len)
    assert all(
        s.startswith(("verify app/2", "restore app", "backup app", "snapshot files")) for s in drawn
    )


def test_at_80_columns_the_bar_and_then_the_label_give_way_to_what_is_said(monkeypatch):
    drawn = [s for s in screens(replay(monkeypatch, 80).getvalue()) if s]
    assert "verify app/20261123T0...   54%  00:00:04  1.1 GiB of 2.0 GiB, 204.8 MiB/s" in drawn
    assert "restore app  1.0 GiB of 1.0 GiB; building indexes and constraints (post-data)" in drawn
    backup = [s for s in drawn if s.startswith("backup app  [")]
    assert len(backup) == 2 * 20 + 2 and all(re.search(r"\] +\d+%  ", s) for s in backup)
    assert "snapshot files  [" in drawn[-2]  # without a total, a mark comes and goes


def test_at_40_columns_the_sizes_stay(monkeypatch):
    drawn = [s for s in screens(replay(monkeypatch, 40).getvalue()) if s]
    assert "verify app/20...  1.1 GiB of 2.0 GiB" in drawn
    assert "verify app/2...: read 2.0 GiB in 10.0 s" in drawn
    assert "restore app  1.0 GiB of 1.0 GiB" in drawn
    assert "backup app  111.0 MiB of ~334.0 MiB" in drawn


def test_a_finished_bar_is_replaced_by_the_real_size_time_and_rate(monkeypatch):
    term = replay(monkeypatch, 80)
    ended = [screens(s)[-1] for s in term.getvalue().split("\n") if s]
    assert ended == [
        "verify app/20261123T010004Z-5d1e2f: read 2.0 GiB in 10.0 s (204.8 MiB/s)",
        "restore app: read 1.0 GiB in 10.0 s (102.4 MiB/s)",  # no note: it is done
        "backup app: dumped 222.0 MiB in 10.0 s (22.2 MiB/s)",  # not 66% of ~334.0 MiB
        "backup app: dumped 310.0 MiB in 10.0 s (31.0 MiB/s)",  # not 100% of ~222.0 MiB
        "snapshot files: read 40.0 MiB in 10.0 s (4.0 MiB/s)",
    ]
    assert term.getvalue().endswith("\x1b[?25h\n")  # the cursor is shown again


def test_a_bar_fits_a_terminal_resized_while_it_runs(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    term = Terminal()
    widths = (120, 120, 60, 60, 30, 100)
    with Reporter("bar", term).phase("backup app", "dumped", 100 * MiB, estimate=True) as tick:
        for columns in widths:
            monkeypatch.setenv("COLUMNS", str(columns))
            clock[0] += 1.0
            tick(10 * MiB)
    drawn = [s for s in screens(term.getvalue()) if s][1:]
    assert [len(s) <= c - 1 for s, c in zip(drawn, widths, strict=False)] == [True] * 6
    assert ["[" in s for s in drawn[:-1]] == [True, True, False, False, False, True]
    assert drawn[-1] == "backup app: dumped 60.0 MiB in 6.0 s (10.0 MiB/s)"


def test_a_failed_phase_erases_its_bar_for_the_error(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    term = Terminal()
    with pytest.raises(RuntimeError), Reporter("bar", term).phase("restore app", "read", 10):
        clock[0] += 1.0
        raise RuntimeError("the error says it")
    drawn = term.getvalue()
    assert screens(drawn)[-1] == "" and "\n" not in drawn  # the error starts a clean line
    assert "restore app:" not in drawn
    assert drawn.rfind("\x1b[?25h") > drawn.rfind("\x1b[?25l")  # the cursor is back


def test_a_line_fits_any_width():
    from drbackup.cli.render import _Count, bar_line, fit

    count = _Count(10 << 30, True)
    count.add(3 << 30)
    label = "verify app/20261123T010004Z-5d1e2f"
    for columns in range(1, 200):
        room = max(columns - 1, 1)
        for note in ("", "pg_restore --jobs 4: creating the schema (pre-data)"):
            count.note = note
            assert len(bar_line(label, count, columns)) <= room
        assert len(fit(label, ": ", ("read 1.0 GiB in 2.0 s (0.5 GiB/s)", "read 1"), room)) <= room
