"""Checks run beside the content hashing, each group on a connection of its own.

Verifying a restored database is mostly reading it: the fingerprint hashes every row, the
foreign keys' orphan queries join every child table with its parent, amcheck reads every
index and heap page.  They are independent, so :func:`drbackup.drill.runner.verify_database`
runs amcheck and the foreign keys (with the assertions) on two more connections while its own
hashes the tables, and the server spreads the three backends over the cores.

A group's results come back in the order its function made them; the caller assembles the
groups in a fixed order, so a report does not depend on which finished first.  Each check
keeps its own ``seconds`` (its wall time on its connection, which may overlap the others').
A group that cannot even connect returns one failed check per name it was to run, naming
the database: a worker's error is a finding, never an exception in the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import psycopg

from drbackup.drill.checks import FAIL, CheckResult, pg_message
from drbackup.errors import DrbackupError
from drbackup.sources.postgres.connection import connect
from drbackup.threads import Background

Group = Callable[[psycopg.Connection], list[CheckResult]]


class BesideChecks:
    """A group of checks of database ``database`` (at ``dsn``), run from construction in a
    thread on a connection of its own; :meth:`results` waits for them.

    ``names`` are the checks the group runs: the names of the failed checks it returns when
    the connection fails or the group raises past its checks' own recording.
    """

    def __init__(
        self, database: str, dsn: str, password: str | None, names: Sequence[str], run: Group
    ):
        self.database, self.names = database, list(names)
        self._dsn, self._password, self._run = dsn, password, run
        self._work = Background(self._connected, name=f"drill-{database}-{self.names[0]}")

    def _connected(self) -> list[CheckResult]:
        try:
            with connect(self._dsn, self._password) as conn:
                return self._run(conn)
        except Exception as exc:  # noqa: BLE001 - a drill records every failure as a check
            return self._failed(exc)

    def _failed(self, exc: Exception) -> list[CheckResult]:
        if isinstance(exc, DrbackupError):
            reason = exc.message
        elif isinstance(exc, psycopg.Error):
            reason = pg_message(exc)
        else:
            reason = f"{type(exc).__name__}: {exc}"
        summary = f"could not run on database {self.database}: {reason}"
        return [CheckResult(name, FAIL, summary, {"error": reason}) for name in self.names]

    def results(self) -> list[CheckResult]:
        """The group's results, in the order it made them (waits for the thread)."""
        return self._work.result() or []
