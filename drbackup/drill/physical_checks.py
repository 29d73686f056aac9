"""The checks of a physical drill: recovery, point, per-database checks, rto and rpo.

``recovery`` reads where PostgreSQL stopped (the restore's :class:`RecoveryOutcome`, or the
error naming the missing or damaged segment); ``point`` sums up the row-by-row comparison
of the restored databases with a logical backup's fingerprint at its exact LSN (the
``schema``/``tables``/``foreign_keys``/``sequences`` checks of :mod:`runner` do the work);
a database without a fingerprint to compare with still gets its foreign keys (orphan
queries over the restored inventory), sequences, assertions and amcheck.  Nothing here
raises for a finding.
"""

from __future__ import annotations

import copy
import datetime as dt
import time
from concurrent.futures import ThreadPoolExecutor

from drbackup.drill import checks as c
from drbackup.drill.assertions import check_assertion
from drbackup.drill.checks import FAIL, PASS, WARN, CheckResult
from drbackup.drill.runner import (
    DatabaseUnderTest,
    Verification,
    start_amcheck,
    verify_database,
)
from drbackup.errors import DrbackupError
from drbackup.sources.postgres import heartbeat
from drbackup.sources.postgres.connection import connect
from drbackup.sources.postgres.fingerprint import format_table_hash, take_inventory

# Databases of a restored cluster verified at once.  Each uses up to three connections (the
# fingerprint's, amcheck's, the foreign keys'): two databases keep a 2-core machine busy
# without one database's checks starving the other's.
VERIFY_JOBS = 2


def check_recovery(outcome, error: DrbackupError | None, point) -> CheckResult:
    """Recovery reached ``point`` and stopped there; evidence: where it stopped."""
    evidence = outcome.to_dict() if outcome is not None else {}
    if error is not None:
        evidence["error"] = error.message
        if error.hint:
            evidence["hint"] = error.hint
        return CheckResult("recovery", FAIL, error.message.splitlines()[0], evidence)
    late = _after_target(outcome, point)
    if late:
        return CheckResult("recovery", FAIL, late, evidence)
    return CheckResult(
        "recovery", PASS, f"recovery reached {outcome.target}: {outcome.describe()}", evidence
    )


def _after_target(outcome, point) -> str | None:
    """A sentence when the last replayed commit lies after a time target (never expected)."""
    if point.kind != "time" or outcome.last_commit is None:
        return None
    if outcome.last_commit <= point.time:
        return None
    return (
        f"recovery replayed past {outcome.target}: last replayed commit "
        f"{outcome.last_commit.isoformat()}"
    )


def verify_restored(db: DatabaseUnderTest, plan, assertions) -> Verification:
    """The per-database checks of a database of the restored cluster.

    With the fingerprint of the backup whose LSN the drill restored to (``db.expected``):
    :func:`verify_database`, every check.  Without: foreign keys against the restored
    inventory itself, sequences and assertions, with amcheck beside them on a connection
    of its own.
    """
    if db.expected is not None:
        return verify_database(db, plan, assertions)
    started = time.monotonic()
    results = []
    with connect(db.dsn, db.password) as conn:
        amcheck = start_amcheck(db, plan)
        if plan.runs("foreign_keys"):
            results.append(c.timed("foreign_keys", _foreign_keys, conn))
        if plan.runs("sequences"):
            results.append(c.timed("sequences", c.check_sequences, conn, None, None))
        if plan.runs("assertions"):
            for assertion in assertions:
                name = f"assertion:{assertion.name}"
                results.append(c.timed(name, check_assertion, conn, assertion))
        if amcheck is not None:
            results += amcheck.results()
    for result in results:
        result.target, result.database = db.target, db.database
    return Verification(results, time.monotonic() - started)


def verify_cluster(
    databases: list[tuple[DatabaseUnderTest, list]], plan, jobs: int = VERIFY_JOBS
) -> tuple[list[Verification], float]:
    """Every database of a restored cluster through :func:`verify_restored`, ``jobs`` at a
    time; ``databases`` are ``(database, its assertions)``.

    Returns the verifications in the order of ``databases`` and the wall time of them all
    (their own ``seconds`` overlap).  A database that cannot be verified (e.g. it refuses
    connections) gets one failed ``verification`` check naming it.
    """
    started = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="drill-db")
    try:
        verified = list(pool.map(lambda item: _verify_one(*item, plan), databases))
    finally:
        # Not waiting: after Ctrl-C the drill stops the server at once, which ends the
        # checks still running (with the pool's default, it would wait for them first).
        pool.shutdown(wait=False, cancel_futures=True)
    return verified, time.monotonic() - started


def _verify_one(db: DatabaseUnderTest, assertions: list, plan) -> Verification:
    try:
        return verify_restored(db, plan, assertions)
    except DrbackupError as exc:  # e.g. the restored database refuses connections
        summary = f"could not verify {db.database}: {exc.message}"
        failure = CheckResult("verification", FAIL, summary, {})
        failure.target, failure.database = db.target, db.database
        return Verification([failure], 0.0)


def _foreign_keys(conn) -> CheckResult:
    inventory = {"inventory": take_inventory(conn)}
    return c.check_foreign_keys(conn, inventory, inventory)


def physical_expectation(fingerprint: dict) -> tuple[dict, list[str]]:
    """What a physical restore of ``fingerprint``'s snapshot must hold, and the unlogged
    tables in it: PostgreSQL does not log an unlogged table's rows, so a physical restore
    has it empty (its definition is compared as usual)."""
    tables = fingerprint.get("inventory", {}).get("tables", {})
    unlogged = sorted(name for name, table in tables.items() if table.get("unlogged"))
    if not unlogged:
        return fingerprint, []
    expected = copy.deepcopy(fingerprint)
    for name in unlogged:
        entry = expected["tables"].get(name)
        if entry is not None:
            entry["rows"] = 0
            entry["hash"] = format_table_hash(0) if entry.get("hash") is not None else None
    return expected, unlogged


def check_point(point_info: dict | None, results: list[CheckResult]) -> CheckResult:
    """The exact state at a known LSN: the compared database's tables and schema are equal
    to the fingerprint of the logical backup taken at that LSN."""
    if point_info is None:
        return CheckResult(
            "point",
            WARN,
            "not compared: no logical backup with a slot LSN in the window "
            "(needs wal_level = logical on the source; docs/drills.md)",
            {},
        )
    database = point_info["database"]
    mine = [r for r in results if r.database == database]
    compared = [r for r in mine if r.name in ("schema", "tables", "foreign_keys", "sequences")]
    failed = [r for r in compared if r.status == FAIL]
    evidence = {**point_info, "compared": [r.name for r in compared]}
    where = (
        f"LSN {point_info['lsn']}, the snapshot of logical backup {point_info['backup_id']} "
        f"of database {database}"
    )
    if failed:
        named = "; ".join(f"{r.name}: {r.summary}" for r in failed)
        return CheckResult("point", FAIL, f"restored state differs at {where}: {named}", evidence)
    if not any(r.name == "tables" for r in compared):
        return CheckResult("point", WARN, f"tables not compared at {where}", evidence)
    tables = next(r for r in compared if r.name == "tables")
    return CheckResult(
        "point", PASS, f"exact state at {where}: {tables.summary}", evidence, tables.seconds
    )


def check_archive_lag(lag_s: float | None, error: str | None, objective: dt.timedelta, window):
    """The archive lag at drill time (what a disaster now would lose) against the RPO."""
    limit = objective.total_seconds()
    evidence = {"archive_lag_s": lag_s, "objective_s": limit, "window": window}
    if lag_s is None:
        why = error or "the source server was not reachable"
        evidence["error"] = why
        return CheckResult("rpo", WARN, f"archive lag not measured: {why}", evidence)
    shown = c.format_seconds(lag_s) if lag_s else "0s"
    if lag_s > limit:
        summary = f"archive lag {shown}, over the objective of {c.format_seconds(limit)}"
        return CheckResult("rpo", FAIL, summary, evidence)
    summary = f"archive lag {shown}, within the objective of {c.format_seconds(limit)}"
    return CheckResult("rpo", PASS, summary, evidence)


def check_heartbeat(conn, when: dt.datetime, interval: dt.timedelta) -> CheckResult:
    """The restored heartbeats bracket ``when``: the newest is at or before it (and within
    two intervals of it), and none after it was restored."""
    found = heartbeat.bracket(conn, when)
    evidence = {
        "target_time": when.isoformat(),
        "newest": found.newest.isoformat() if found.newest else None,
        "first_after": found.after.isoformat() if found.after else None,
        "interval_s": interval.total_seconds(),
    }
    if not found.present:
        summary = "no drbackup.heartbeat table in the restore (is the daemon writing heartbeats?)"
        return CheckResult("heartbeat", WARN, summary, evidence)
    if found.after is not None:
        summary = (
            f"the restore holds a heartbeat of {found.after.isoformat()}, after the target "
            f"{when.isoformat()}: recovery went past its target"
        )
        return CheckResult("heartbeat", FAIL, summary, evidence)
    if found.newest is None or when - found.newest > 2 * interval:
        newest = found.newest.isoformat() if found.newest else "none"
        summary = (
            f"newest restored heartbeat {newest} is more than two intervals before the "
            f"target {when.isoformat()}: heartbeats missing, or recovery stopped early"
        )
        return CheckResult("heartbeat", WARN, summary, evidence)
    gap = (when - found.newest).total_seconds()
    summary = (
        f"heartbeats bracket the target: newest {found.newest.isoformat()} ({gap:.1f}s "
        "before it), none after"
    )
    return CheckResult("heartbeat", PASS, summary, evidence)
