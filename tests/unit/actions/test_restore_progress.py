"""What a logical restore shows (actions/restore_postgres._Shown): the archive read as a
phase, and notes of what pg_restore does once it reads nothing more."""

from __future__ import annotations

from contextlib import contextmanager

import pytest

from drbackup.actions.progress import Progress
from drbackup.actions.restore_postgres import _Shown
from drbackup.sources.postgres.restore import PhaseClock


class Recorded(Progress):
    def __init__(self):
        self.events: list[str] = []

    @contextmanager
    def phase(self, label, verb, total=None, *, estimate=False):
        self.events.append(f"start {label} {verb} {total}")
        try:
            yield lambda n: self.events.append(f"tick {n}")
        except BaseException:
            self.events.append(f"failed {verb}")
            raise
        self.events.append(f"end {verb}")

    def note(self, label, text):
        self.events.append(f"note {label}: {text}")


def shown_through(jobs: int, phases: list[str]) -> list[str]:
    progress = Recorded()
    with _Shown(progress, "restore app", 100, jobs) as shown:
        shown.tick(60)
        for phase in phases:
            shown.on_phase(phase)
    return progress.events


def test_streamed_post_data_is_noted_inside_the_read():
    assert shown_through(1, ["pre_data", "data", "post_data"]) == [
        "start restore app read 100",
        "tick 60",
        "note restore app: building indexes and constraints (post-data)",
        "end read",
    ]


def test_spooled_each_of_pg_restore_s_phases_is_noted():
    assert shown_through(4, ["pre_data", "data", "post_data"])[2:] == [
        "note restore app: pg_restore --jobs 4: creating the schema (pre-data)",
        "note restore app: pg_restore --jobs 4: loading data",
        "note restore app: building indexes and constraints (post-data)",
        "end read",
    ]


def test_a_failed_restore_ends_the_phase_as_failed():
    progress = Recorded()
    with pytest.raises(RuntimeError), _Shown(progress, "restore app", 100, 1) as shown:
        shown.on_phase("post_data")
        raise RuntimeError("pg_restore reported 1 error")
    assert progress.events[-1] == "failed read"


def test_the_clock_tells_data_and_post_data_once_each():
    told = []
    clock = PhaseClock(on_phase=told.append)
    for line in (
        "pg_restore: creating TABLE public.t",
        "pg_restore: processing data for table public.t",
        "pg_restore: processing data for table public.u",
        "pg_restore: creating INDEX public.t_i",
        "pg_restore: creating CONSTRAINT public.t_pkey",
    ):
        clock.feed(line)
    assert told == ["data", "post_data"]
