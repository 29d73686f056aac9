"""The read-ahead fetcher's plan against a spool (no archive needed for these cases)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from drbackup.actions.wal_fetch import Fetcher
from drbackup.actions.wal_spool import Spool


def test_a_name_no_archive_holds_is_never_fetched_even_once_its_answer_was_taken(tmp_path):
    """PostgreSQL asks for 00000001.history; the fetcher answers "missing" at once.  The
    client may take that answer between the plan and the submission (the status is gone
    again): the fetcher must not then try to fetch the name (it failed recovery as a
    "damaged" file)."""
    spool = Spool(tmp_path).prepare()
    fetcher = Fetcher(None, "pg15-1", spool, ahead=2)
    assert fetcher._plan("00000001.history") == ["00000001.history"]
    assert spool.status("00000001.history") is not None  # answered missing
    spool.clear("00000001.history")  # the client took the answer
    with ThreadPoolExecutor(1) as pool:
        fetcher._submit(pool, ["00000001.history"])
    assert fetcher.inflight == {}
