"""Drill checks: each looks at one property of a restore and returns a :class:`CheckResult`.

A check never raises for what it finds: problems become ``fail`` (or ``warn``) results with
their evidence, so a drill records everything and fails at the end.  Summaries are one
lowercase line naming what differs; evidence is JSON-able and holds the details.

Comparisons are against the fingerprint stored in the manifest, taken from the dump's own
snapshot (see :mod:`drbackup.sources.postgres.fingerprint`): a backup of a database under
writes compares equal after a correct restore.  The amcheck check is in :mod:`amcheck`, the
custom assertions in :mod:`assertions`; :mod:`runner` runs them all in order.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from drbackup.errors import DrbackupError, IntegrityError, ObjectNotFoundError, RestoreError
from drbackup.sources.postgres.fingerprint import (
    Difference,
    compare_inventories,
    compare_tables,
    foreign_keys,
    orphan_query,
    sequence_checks,
)
from drbackup.units import human_size

PASS, WARN, FAIL = "pass", "warn", "fail"
STATUSES = (PASS, WARN, FAIL)
SHOWN_IN_SUMMARY = 3  # problems quoted in a summary line; all go to the evidence
EVIDENCE_LIMIT = 200  # problems kept in the evidence
RTO_WARN_RATIO = 0.8  # warn when a restore used this much of its objective
_SCHEMA_KINDS = {"missing_object", "extra_object", "changed_object", "large_objects", "version"}


@dataclass
class CheckResult:
    """One check's outcome: ``status`` is pass, warn or fail; ``evidence`` is JSON-able."""

    name: str
    status: str
    summary: str
    evidence: dict = field(default_factory=dict)
    seconds: float = 0.0
    target: str | None = None
    database: str | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["evidence"] = json_value(self.evidence)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CheckResult:
        """The check of a report's JSON form (``to_dict``'s output)."""
        return cls(
            name=data["name"],
            status=data["status"],
            summary=data["summary"],
            evidence=data.get("evidence") or {},
            seconds=data.get("seconds", 0.0),
            target=data.get("target"),
            database=data.get("database"),
        )


def worst(statuses) -> str:
    """``fail`` if any failed, else ``warn`` if any warned, else ``pass``."""
    statuses = set(statuses)
    return FAIL if FAIL in statuses else WARN if WARN in statuses else PASS


def json_value(value: Any) -> Any:
    """``value`` with everything JSON cannot hold turned into plain numbers and strings."""
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    return str(value)


def listing(messages: list[str], noun: str) -> str:
    shown = "; ".join(messages[:SHOWN_IN_SUMMARY])
    more = len(messages) - SHOWN_IN_SUMMARY
    count = f"{len(messages)} {noun}{'' if len(messages) == 1 else 's'}"
    return f"{count}: {shown}" + (f"; and {more} more" if more > 0 else "")


def _differences(diffs: list[Difference]) -> list[dict]:
    return [
        {"kind": d.kind, "object": d.object, "message": d.message} for d in diffs[:EVIDENCE_LIMIT]
    ]


# -- restore ----------------------------------------------------------------------------------


@dataclass
class RestoreOutcome:
    """What happened to one database's restore: its run (None if it failed) or the error."""

    run: Any = None  # drbackup.sources.postgres.restore.RestoreRun
    error: DrbackupError | None = None
    seconds: float = 0.0
    archive_bytes: int | None = None


def check_restore(outcome: RestoreOutcome) -> CheckResult:
    """Pass when pg_restore finished with status 0 and printed no error line."""
    if outcome.error is None:
        run = outcome.run
        return CheckResult(
            "restore",
            PASS,
            f"restored {human_size(run.bytes)} of archive in {run.elapsed_s:.1f}s with 0 "
            "pg_restore errors",
            {"bytes": run.bytes, "phases_s": {k: round(v, 3) for k, v in run.phases.items()}},
            outcome.seconds,
        )
    error = outcome.error
    lines = [line.strip() for line in error.message.splitlines() if line.strip()]
    if isinstance(error, ObjectNotFoundError):
        summary = f"backup object missing: {error.key}"
    elif isinstance(error, IntegrityError):
        summary = f"backup object corrupted: {lines[0]}"
    elif isinstance(error, RestoreError) and len(lines) > 1:
        summary = lines[0].split(": ", 1)[-1] + ": " + " | ".join(lines[1:])
    else:
        summary = " | ".join(lines)
    evidence = {"error": error.message, "error_type": type(error).__name__}
    if isinstance(error, RestoreError):
        evidence["pg_restore_errors"] = [e for e in lines[1:] if not e.startswith("...")]
    if error.hint:
        evidence["hint"] = error.hint
    return CheckResult("restore", FAIL, summary, evidence, outcome.seconds)


# -- schema and tables --------------------------------------------------------------------------


def _no_fingerprint(name: str) -> CheckResult:
    return CheckResult(
        name,
        WARN,
        "not compared: the backup holds no fingerprint (target fingerprint: off)",
        {"hint": "set fingerprint: full on the target to let drills compare data"},
    )


def check_schema(expected: dict | None, actual: dict | None) -> CheckResult:
    """The restored inventory equals the manifest's: names what is missing, extra or changed."""
    if expected is None:
        return _no_fingerprint("schema")
    diffs = [
        d
        for d in compare_inventories(expected["inventory"], actual["inventory"])
        if d.kind in _SCHEMA_KINDS
    ]
    exp_lo, act_lo = expected.get("large_objects"), actual.get("large_objects")
    if exp_lo is not None and act_lo is not None and exp_lo != act_lo:
        diffs.append(
            Difference(
                "large_objects",
                "large objects",
                exp_lo,
                act_lo,
                f"large object count differs: expected {exp_lo}, actual {act_lo}",
            )
        )
    counts = {
        k: _count(k, v) for k, v in expected["inventory"].items() if isinstance(v, dict | list)
    }
    if diffs:
        return CheckResult(
            "schema",
            FAIL,
            listing([_schema_message(d) for d in diffs], "schema difference"),
            {"differences": _differences(diffs), "count": len(diffs), "expected_counts": counts},
        )
    shown = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    return CheckResult(
        "schema", PASS, f"inventory equal to the backup's ({shown})", {"counts": counts}
    )


def _schema_message(d: Difference) -> str:
    # Missing and extra objects are named; their whole definition is in the evidence.
    if d.kind in ("missing_object", "extra_object"):
        return d.message.split(": expected", 1)[0]
    return d.message


_PER_TABLE = ("indexes", "constraints", "triggers")  # table -> name -> definition


def _count(category: str, value: dict | list) -> int:
    if category in _PER_TABLE:
        return sum(len(objects) for objects in value.values())
    return len(value)


def check_tables(expected: dict | None, actual: dict | None) -> CheckResult:
    """Every table's row count and content hash equal the manifest's fingerprint.

    A materialized view that differs only warns: pg_dump does not dump its rows, the
    restore refreshes it, so one stale at backup time legitimately differs.
    """
    if expected is None:
        return _no_fingerprint("tables")
    diffs = compare_tables(expected["tables"], actual["tables"])
    failing = [d for d in diffs if d.kind != "matview_content"]
    stale = [d for d in diffs if d.kind == "matview_content"]
    tables = expected["tables"]
    rows = sum(t["rows"] for t in tables.values())
    what = "row counts and content hashes" if expected["level"] == "full" else "row counts"
    evidence = {
        "level": expected["level"],
        "tables": len(tables),
        "rows": rows,
        "differences": _differences(diffs),
    }
    if failing:
        named = [_table_message(d) for d in failing]
        return CheckResult("tables", FAIL, listing(named, "table difference"), evidence)
    if stale:
        return CheckResult(
            "tables",
            WARN,
            listing([d.message for d in stale], "materialized view difference")
            + " (refreshed by the restore; stale at backup time)",
            evidence,
        )
    return CheckResult(
        "tables",
        PASS,
        f"{what} of {len(tables)} tables ({rows} rows) equal to the backup's fingerprint",
        evidence,
    )


def _table_message(d: Difference) -> str:
    if d.kind == "content_hash":
        return f"content of table {d.object} differs ({d.expected[:8]}… vs {d.actual[:8]}…)"
    return d.message


# -- foreign keys -------------------------------------------------------------------------------


def check_foreign_keys(
    conn: psycopg.Connection, expected: dict | None, actual: dict
) -> CheckResult:
    """Each FK of the manifest exists and is validated, and has no orphan rows.

    A key that was NOT VALID in the source is a pre-existing inconsistency: warn, not fail.
    """
    if expected is None:
        return _no_fingerprint("foreign_keys")
    restored = actual["inventory"].get("constraints", {})
    failures, warnings, keys = [], [], []
    for fk in foreign_keys(expected["inventory"]):
        entry = _check_one_fk(conn, fk, restored)
        keys.append(entry)
        (
            failures if entry["status"] == FAIL else warnings if entry["status"] == WARN else []
        ).append(entry["message"])
    evidence = {"foreign_keys": keys[:EVIDENCE_LIMIT], "count": len(keys)}
    if failures:
        return CheckResult("foreign_keys", FAIL, listing(failures, "foreign key problem"), evidence)
    if warnings:
        summary = listing(warnings, "pre-existing inconsistency")
        return CheckResult("foreign_keys", WARN, summary, evidence)
    return CheckResult(
        "foreign_keys",
        PASS,
        f"{len(keys)} foreign keys present, validated, no orphan rows",
        evidence,
    )


def _check_one_fk(conn, fk: dict, restored: dict) -> dict:
    table = f"{fk['schema']}.{fk['table']}"
    label = f"foreign key {fk['name']} on {table}"
    parent = f"{fk['ref_schema']}.{fk['ref_table']}"
    entry = {
        "name": fk["name"],
        "table": table,
        "references": parent,
        "source_validated": fk["validated"],
    }
    found = restored.get(table, {}).get(fk["name"])
    try:
        (orphans,) = conn.execute(orphan_query(fk)).fetchone()
    except psycopg.Error as exc:
        orphans = None
        entry["orphan_query_error"] = pg_message(exc)
    entry.update(present=found is not None, validated=bool(found and found["validated"]))
    entry["orphans"] = orphans
    if not fk["validated"]:
        state = f"{orphans} orphan rows" if orphans is not None else "orphans not counted"
        return {
            **entry,
            "status": WARN,
            "message": f"{label} was NOT VALID in the source ({state})",
        }
    problems = []
    if found is None:
        problems.append("is missing")
    elif not found["validated"]:
        problems.append("is NOT VALID in the restore")
    if orphans:
        problems.append(f"has {orphans} orphan rows (referenced rows missing in {parent})")
    if orphans is None:
        problems.append(f"orphan query failed: {entry['orphan_query_error']}")
    if problems:
        return {**entry, "status": FAIL, "message": f"{label} " + " and ".join(problems)}
    return {**entry, "status": PASS, "message": f"{label} ok"}


def pg_message(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    text = (diag.message_primary if diag and diag.message_primary else str(exc)).strip()
    return " ".join(text.split())


# -- sequences --------------------------------------------------------------------------------


def check_sequences(
    conn: psycopg.Connection, expected: dict | None, actual: dict | None
) -> CheckResult:
    """Every owned sequence is ahead of the largest value in its column, and no sequence is
    behind the value the backup recorded."""
    problems, entries = [], []
    for seq in sequence_checks(conn):
        entries.append(seq)
        if seq["behind"]:
            problems.append(
                f"sequence {seq['sequence']} is behind column {seq['column']}: next value "
                f"{seq['next_value']}, column holds {seq['max_value']}"
            )
    if expected is not None and actual is not None:
        diffs = compare_inventories(
            {"sequences": expected["inventory"].get("sequences", {})},
            {"sequences": actual["inventory"].get("sequences", {})},
        )
        problems += [d.message for d in diffs if d.kind == "sequence_value"]
    evidence = {"sequences": json_value(entries[:EVIDENCE_LIMIT]), "count": len(entries)}
    if problems:
        return CheckResult("sequences", FAIL, listing(problems, "sequence problem"), evidence)
    return CheckResult(
        "sequences", PASS, f"{len(entries)} owned sequences ahead of their columns", evidence
    )


# -- objectives -------------------------------------------------------------------------------


def check_rto(timings: dict, objective: dt.timedelta, *, restored: bool) -> CheckResult:
    """Restore plus verification wall time against the recovery time objective.

    ``timings``: ``restore_s`` and ``verification_s``; with a physical drill's phases
    (``fetch_extract_s``, ``recovery_s``) the summary names those; with pg_restore's phases
    (``fetch_decrypt_s``, ``data_s``, ``post_data_s``, as a database drill measures them)
    the summary names those, else the restore and the verification (a bucket drill).  The
    evidence is the timings with ``total_s`` and ``objective_s``.  A failed restore never
    meets the RTO.
    """
    limit = objective.total_seconds()
    total = timings["restore_s"] + timings["verification_s"]
    evidence = {**{k: round(v, 3) for k, v in timings.items()}, "total_s": round(total, 3)}
    evidence["objective_s"] = limit
    objective_text = format_seconds(limit)
    if not restored:
        return CheckResult(
            "rto",
            FAIL,
            f"not met: the restore failed after {total:.1f}s (objective {objective_text})",
            evidence,
        )
    phases = _rto_phases(timings)
    if total > limit:
        return CheckResult(
            "rto",
            FAIL,
            f"restore and verification took {total:.1f}s, over the objective of {objective_text} ({phases})",
            evidence,
        )
    status = WARN if total >= RTO_WARN_RATIO * limit else PASS
    share = f"{100 * total / limit:.0f}% of"
    return CheckResult(
        "rto",
        status,
        f"{total:.1f}s, {share} the objective of {objective_text} ({phases})",
        evidence,
    )


def _rto_phases(timings: dict) -> str:
    verification = f"verification {timings['verification_s']:.1f}s"
    if "recovery_s" in timings:  # a physical drill: base backup, then WAL
        base, wal = timings.get("fetch_extract_s", 0), timings["recovery_s"]
        return f"base backup fetch/extract {base:.1f}s, WAL fetch and replay {wal:.1f}s, {verification}"
    if "data_s" not in timings:  # no pg_restore: the restore as a whole
        return f"restore {timings['restore_s']:.1f}s, {verification}"
    return (
        f"fetch/decrypt {timings.get('fetch_decrypt_s', 0):.1f}s, data {timings['data_s']:.1f}s, "
        f"indexes and constraints {timings.get('post_data_s', 0):.1f}s, {verification}"
    )


def check_rpo(
    selected: dt.datetime, newest: dt.datetime, now: dt.datetime, objective: dt.timedelta, how: str
) -> CheckResult:
    """The newest backup's age at drill time against the recovery point objective.

    The restored backup's own age is evidence: a drill of an older (random or point-in-time)
    backup says nothing about how fresh the newest one is.
    """
    newest_age = (now - newest).total_seconds()
    selected_age = (now - selected).total_seconds()
    limit = objective.total_seconds()
    evidence = {
        "recovery_point": selected.isoformat(),
        "age_s": round(selected_age, 3),
        "newest_recovery_point": newest.isoformat(),
        "newest_age_s": round(newest_age, 3),
        "objective_s": limit,
        "selection": how,
    }
    restored = f"restored backup is {format_seconds(selected_age)} old"
    if newest_age > limit:
        return CheckResult(
            "rpo",
            FAIL,
            f"newest backup is {format_seconds(newest_age)} old, over the objective of {format_seconds(limit)}"
            + ("" if newest == selected else f" ({restored})"),
            evidence,
        )
    extra = "" if newest == selected else f"; newest backup is {format_seconds(newest_age)} old"
    return CheckResult(
        "rpo", PASS, f"{restored}{extra}, within the objective of {format_seconds(limit)}", evidence
    )


def format_seconds(seconds: float) -> str:
    """``0.001`` -> ``1ms``; ``42.3`` -> ``42.3s``; ``5400`` -> ``1h30m``; ``200000`` -> ``2d7h``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    if minutes < 120:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 48:
        return f"{hours}h{minutes % 60:02d}m" if minutes % 60 else f"{hours}h"
    return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"


def timed(name: str, fn, *args, **kwargs) -> CheckResult:
    """Run a check, timing it; a check that crashes is recorded as failed, never raised."""
    started = time.monotonic()
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a drill records every failure and goes on
        if isinstance(exc, psycopg.Error):
            text = pg_message(exc)
        elif isinstance(exc, DrbackupError):
            text = exc.message
        else:
            text = f"{type(exc).__name__}: {exc}"
        result = CheckResult(name, FAIL, f"check could not run: {text}", {"error": text})
    result.seconds = result.seconds or time.monotonic() - started
    return result
