"""Running the checks of one restored database, in order, recording every result.

The restore itself and the scratch lifecycle are orchestrated by ``actions/drill.py``; this
module gets a connectable scratch database and the manifest's fingerprint, and returns
:class:`CheckResult` s.  Nothing here raises for a finding; only Ctrl-C stops it.

Order matters: the fingerprint (tables and inventory) is read first, before ``amcheck``
installs its extension in the scratch database.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from drbackup.drill import checks as c
from drbackup.drill.amcheck import check_amcheck
from drbackup.drill.assertions import check_assertion
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
    results: list[CheckResult] = []
    needs_fingerprint = any(plan.runs(n) for n in ("schema", "tables", "foreign_keys", "sequences"))
    actual, fp_seconds, fp_error = None, 0.0, None
    if db.expected is not None and needs_fingerprint:
        actual, fp_seconds, fp_error = _actual_fingerprint(conn, db)
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
        if plan.runs("foreign_keys"):
            results.append(c.timed("foreign_keys", c.check_foreign_keys, conn, db.expected, actual))
    if plan.runs("sequences"):
        results.append(c.timed("sequences", c.check_sequences, conn, db.expected, actual))
    if plan.runs("assertions"):
        for assertion in assertions:
            name = f"assertion:{assertion.name}"
            results.append(c.timed(name, check_assertion, conn, assertion))
    results += check_references(conn, db, getattr(plan, "references", ()))
    if plan.runs("amcheck"):
        heapallindexed = plan.amcheck.heapallindexed
        results.append(c.timed("amcheck", check_amcheck, conn, heapallindexed=heapallindexed))
    return results


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


def _actual_fingerprint(conn, db: DatabaseUnderTest) -> tuple[dict | None, float, str | None]:
    """The restored database's fingerprint at the level of the expected one.

    Tables already verified during the restore (see ``early``) are not hashed again: their
    entries are the expected ones, which they matched.
    """
    started = time.monotonic()
    try:
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
