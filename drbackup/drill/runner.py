"""Running the checks of one restored database, in order, recording every result.

The restore itself and the scratch lifecycle are orchestrated by ``actions/drill.py``; this
module gets a connectable scratch database and the manifest's fingerprint, and returns
:class:`CheckResult` s.  Nothing here raises for a finding; only Ctrl-C stops it.

The fingerprint (tables and inventory) is read on one connection in one REPEATABLE READ
snapshot; amcheck and the foreign keys (with the assertions) run beside it on connections of
their own (:mod:`beside`), started once that snapshot is taken, so the extension amcheck
installs in the scratch database is never in the inventory compared.  Results come in one
fixed order whichever check finishes first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from drbackup.drill import checks as c
from drbackup.drill.amcheck import check_amcheck
from drbackup.drill.assertions import check_assertion
from drbackup.drill.beside import BesideChecks
from drbackup.drill.checks import FAIL, CheckResult
from drbackup.drill.references import check_references
from drbackup.drill.upgrade import check_schema_across_majors
from drbackup.sources.postgres.connection import connect
from drbackup.sources.postgres.fingerprint import take_fingerprint, take_inventory


@dataclass
class DatabaseUnderTest:
    """A restored scratch database and what it must match."""

    target: str
    database: str  # the database name in the backup
    scratch_database: str
    dsn: str
    password: str | None
    expected: dict | None  # the manifest's fingerprint (None: taken with fingerprint off)
    scope: dict = field(default_factory=dict)  # include/exclude schemas and tables
    verified_early: set[str] = field(default_factory=set)  # tables hashed during the restore
    early_seconds: float = 0.0
    backup: object = None  # the drilled Manifest (for the cross-service reference checks)
    repository: object = None  # the Repository it is read from
    source_major: int | None = None  # the PostgreSQL major the backup was taken on


@dataclass
class Verification:
    results: list[CheckResult]
    seconds: float


def verify_database(db: DatabaseUnderTest, plan, assertions=()) -> Verification:
    """Run the plan's per-database checks against ``db``; returns every result, tagged."""
    started = time.monotonic()
    with connect(db.dsn, db.password) as conn:
        results = _run_checks(conn, db, plan, assertions)
    for result in results:
        result.target, result.database = db.target, db.database
    return Verification(results, time.monotonic() - started)


def _run_checks(conn, db: DatabaseUnderTest, plan, assertions) -> list[CheckResult]:
    """Every check of ``db``: the fingerprint's on ``conn``, amcheck and the foreign keys
    (with the assertions) beside it on connections of their own (:mod:`beside`), started
    once ``conn`` holds the snapshot the fingerprint describes; results in a fixed order."""
    needs_fingerprint = any(plan.runs(n) for n in ("schema", "tables", "foreign_keys", "sequences"))
    beside = _Beside(db, plan, assertions)
    actual, fp_seconds, fp_error = None, 0.0, None
    if db.expected is not None and needs_fingerprint:
        actual, fp_seconds, fp_error = _actual_fingerprint(conn, db, beside.start)
    beside.start()  # no-op once started
    results: list[CheckResult] = []
    if fp_error is not None:
        for name in ("schema", "tables", "foreign_keys"):
            if plan.runs(name):
                summary = f"not compared: the restored database could not be read: {fp_error}"
                results.append(CheckResult(name, FAIL, summary, {"error": fp_error}))
    else:
        if plan.runs("schema"):
            results.append(_schema_check(conn, db, actual))
        if plan.runs("tables"):
            result = c.timed("tables", c.check_tables, db.expected, actual)
            result.seconds += fp_seconds  # reading the fingerprint is the bulk of the work
            result.evidence["hashed_during_restore"] = len(db.verified_early)
            result.evidence["hashed_during_restore_s"] = round(db.early_seconds, 3)
            results.append(result)
    keys_and_assertions = beside.keys_and_assertions()
    if fp_error is None:
        results += [r for r in keys_and_assertions if r.name == "foreign_keys"]
    if plan.runs("sequences"):
        results.append(c.timed("sequences", c.check_sequences, conn, db.expected, actual))
    results += [r for r in keys_and_assertions if r.name != "foreign_keys"]
    results += check_references(conn, db, getattr(plan, "references", ()))
    results += beside.amcheck()
    return results


class _Beside:
    """The checks of ``db`` run beside the fingerprint: amcheck on one connection, the
    foreign keys and the assertions on another (each group in the order of today's report)."""

    def __init__(self, db: DatabaseUnderTest, plan, assertions):
        self.db, self.plan, self.assertions = db, plan, list(assertions)
        self._amcheck: BesideChecks | None = None
        self._keys: BesideChecks | None = None
        self._started = False

    def start(self) -> None:
        """Start both groups (once): call it when installing amcheck may no longer change
        what the fingerprint sees."""
        if self._started:
            return
        self._started = True
        db, plan = self.db, self.plan
        self._amcheck = start_amcheck(db, plan)
        names = ["foreign_keys"] if plan.runs("foreign_keys") else []
        if plan.runs("assertions"):
            names += [f"assertion:{a.name}" for a in self.assertions]
        if names:
            run = partial(_keys_and_assertions, db, plan, self.assertions)
            self._keys = BesideChecks(db.database, db.dsn, db.password, names, run)

    def keys_and_assertions(self) -> list[CheckResult]:
        return self._keys.results() if self._keys is not None else []

    def amcheck(self) -> list[CheckResult]:
        return self._amcheck.results() if self._amcheck is not None else []


def start_amcheck(db: DatabaseUnderTest, plan) -> BesideChecks | None:
    """The plan's amcheck of ``db``, started on a connection of its own (None: not run)."""
    if not plan.runs("amcheck"):
        return None
    run = partial(_amcheck, heapallindexed=plan.amcheck.heapallindexed)
    return BesideChecks(db.database, db.dsn, db.password, ["amcheck"], run)


def _amcheck(conn, *, heapallindexed: bool) -> list[CheckResult]:
    return [c.timed("amcheck", check_amcheck, conn, heapallindexed=heapallindexed)]


def _keys_and_assertions(db: DatabaseUnderTest, plan, assertions, conn) -> list[CheckResult]:
    """The foreign keys (orphan queries) against the restored inventory read on ``conn``,
    then the assertions."""
    results = []
    if plan.runs("foreign_keys"):
        results.append(c.timed("foreign_keys", _foreign_keys, conn, db))
    if plan.runs("assertions"):
        for assertion in assertions:
            name = f"assertion:{assertion.name}"
            results.append(c.timed(name, check_assertion, conn, assertion))
    return results


def _foreign_keys(conn, db: DatabaseUnderTest) -> CheckResult:
    if db.expected is None:
        return c.check_foreign_keys(conn, None, None)
    restored = {"inventory": take_inventory(conn, **db.scope)}
    return c.check_foreign_keys(conn, db.expected, restored)


def _schema_check(conn, db: DatabaseUnderTest, actual: dict | None) -> CheckResult:
    """The schema check; across majors when the backup was taken on another one."""
    restored_major = conn.info.server_version // 10000
    if db.source_major is None or db.source_major == restored_major:
        return c.timed("schema", c.check_schema, db.expected, actual)
    return c.timed(
        "schema",
        check_schema_across_majors,
        conn,
        db.expected,
        actual,
        db.source_major,
        restored_major,
    )


def _actual_fingerprint(
    conn, db: DatabaseUnderTest, on_snapshot: Callable[[], None]
) -> tuple[dict | None, float, str | None]:
    """The restored database's fingerprint at the level of the expected one, read in one
    REPEATABLE READ snapshot; ``on_snapshot`` is called as soon as that snapshot is taken
    (amcheck may then install its extension on another connection unseen).

    Tables already verified during the restore (see ``early``) are not hashed again: their
    entries are the expected ones, which they matched.
    """
    started = time.monotonic()
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            conn.execute("SELECT 1")  # takes the transaction's snapshot
            on_snapshot()
            actual = _fingerprint_rest(conn, db)
    except Exception as exc:  # noqa: BLE001 - recorded as the failure of the checks needing it
        return None, time.monotonic() - started, " ".join(str(exc).split())[:300]
    return actual, time.monotonic() - started, None


def _fingerprint_rest(conn, db: DatabaseUnderTest) -> dict:
    if not db.verified_early:
        return take_fingerprint(conn, db.expected["level"], like=db.expected, **db.scope)
    excluded = set(db.scope.get("exclude_tables") or ()) | db.verified_early
    actual = take_fingerprint(
        conn, db.expected["level"], like=db.expected, **{**db.scope, "exclude_tables": excluded}
    )
    inventory = take_inventory(conn, **db.scope)  # the whole inventory, verified tables too
    actual["large_objects"] = inventory.pop("large_objects")
    actual["inventory"] = inventory
    early = {name: db.expected["tables"][name] for name in db.verified_early}
    actual["tables"] = dict(sorted({**early, **actual["tables"]}.items()))
    return actual


def applicable_assertions(plan, target: str, database: str) -> list:
    """The plan's assertions for one database of one target."""
    return [
        a
        for a in plan.assertions
        if (a.target is None or a.target == target)
        and (a.database is None or a.database == database)
    ]
