"""psycopg's "error ignored in rollback" line (logged while another exception unwinds a
transaction, e.g. Ctrl-C) does not reach the terminal; psycopg's other warnings do."""

from __future__ import annotations

import logging

from drbackup.cli.main import main


def test_an_ignored_rollback_is_not_printed_and_other_warnings_are(capsys, caplog):
    assert main(["--version"]) == 0
    log = logging.getLogger("psycopg")
    with caplog.at_level(logging.WARNING, logger="psycopg"):
        log.warning("error ignored in rollback on %s: %s", "<psycopg.Connection>", "forbidden")
        log.warning("connection %s was deleted while still open", "<psycopg.Connection>")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["connection <psycopg.Connection> was deleted while still open"]
    main(["--version"])  # a second run adds no second filter
    assert log.filters.count(log.filters[0]) == 1 and len(log.filters) == 1
