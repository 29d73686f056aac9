"""Cross-service check: the objects a restored database names must be in the paired snapshot.

A plan's ``references`` entry gives a query returning ``(bucket, key)`` rows, e.g.
``SELECT bucket, key FROM attachments``.  After the scratch restore the query runs in the
scratch database through a server-side cursor, wrapped to drop NULLs and to sort by bucket
then key in byte order (``COLLATE "C"``), so the rows stream alongside the snapshot's index
(:func:`drbackup.drill.bucket.find_missing_objects`) in constant memory.

Which snapshot: the bucket member of the recovery point (``backup all``) the drilled backup
belongs to; otherwise the newest snapshot of ``snapshot_target`` whose recovery point is at
or before the backup's recovery point plus ``tolerance`` (``backup all`` and schedules take
the snapshot just after the database, so its recovery point is a little later).

Nothing here raises for a finding: a dangling reference, a failing query or no snapshot to
pair become ``fail`` results naming what is wrong.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from drbackup.drill.bucket import find_missing_objects
from drbackup.drill.checks import EVIDENCE_LIMIT, FAIL, PASS, CheckResult, pg_message, timed
from drbackup.errors import UsageError
from drbackup.repository.manifest import BackupRef, Manifest
from drbackup.repository.recovery_points import recovery_point_of

CURSOR_ITERSIZE = 5000


def check_references(conn, db, references) -> list[CheckResult]:
    """Run every reference check of ``references`` that applies to ``db``'s database.

    ``db`` is a :class:`drbackup.drill.runner.DatabaseUnderTest` carrying the drilled
    manifest (``db.backup``) and the repository (``db.repository``).
    """
    results = []
    for ref in references:
        if ref.target != db.target or ref.database not in (None, db.database):
            continue
        name = f"references:{ref.name}"
        results.append(timed(name, check_reference, conn, db.repository, db.backup, ref))
    return results


def check_reference(conn, repo, backup: Manifest | None, ref) -> CheckResult:
    """One reference check against the snapshot paired with ``backup``."""
    name = f"references:{ref.name}"
    if repo is None or backup is None:
        return CheckResult(name, FAIL, "not checked: the drilled backup is unknown", {})
    snapshot, how = pair_snapshot(repo, backup, ref.snapshot_target, ref.tolerance)
    evidence = {"query": ref.query, "snapshot_target": ref.snapshot_target, "pairing": how}
    if snapshot is None:
        summary = f"no snapshot of {ref.snapshot_target} to pair with backup {backup.backup_id}"
        return CheckResult(name, FAIL, f"{summary}: {how}", evidence)
    evidence["snapshot_id"] = snapshot.backup_id
    rows = _Counter()
    missing: list[str] = []
    buckets: dict[str, int] = {}
    dangling = 0
    try:
        with conn.transaction(force_rollback=True):
            refs = rows.count(_stream_rows(conn, ref.query))
            for bucket, key in find_missing_objects(repo, snapshot, refs):
                dangling += 1
                buckets[bucket] = buckets.get(bucket, 0) + 1
                if len(missing) < EVIDENCE_LIMIT:
                    missing.append(f"{bucket}/{key}")
    except psycopg.Error as exc:
        message = pg_message(exc)
        evidence["error"] = message
        return CheckResult(name, FAIL, f"reference query '{ref.name}' failed: {message}", evidence)
    evidence.update(references=rows.total, dangling=dangling, dangling_objects=missing)
    where = f"snapshot {ref.snapshot_target}/{snapshot.backup_id}"
    if not dangling:
        return CheckResult(
            name, PASS, f"all {rows.total} referenced objects are in {where}", evidence
        )
    # The summary travels (catalog runs, report, chat): buckets and counts; the evidence
    # names the objects.
    per_bucket = ", ".join(f"{b}: {n}" for b, n in sorted(buckets.items()))
    summary = f"{dangling} of {rows.total} referenced objects missing from {where} ({per_bucket})"
    return CheckResult(name, FAIL, summary, evidence)


class _Counter:
    """Counts the rows streamed through :meth:`count`."""

    def __init__(self):
        self.total = 0

    def count(self, rows: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
        for row in rows:
            self.total += 1
            yield row


def _stream_rows(conn, query: str) -> Iterator[tuple[str, str]]:
    """The query's rows as ``(bucket, key)`` text, NULLs dropped, sorted in byte order."""
    inner = query.strip().rstrip(";")
    sql = (
        "SELECT r.bucket::text AS b, r.key::text AS k "
        f"FROM ({inner}) AS r(bucket, key) "  # noqa: S608 - the plan's own query
        "WHERE r.bucket IS NOT NULL AND r.key IS NOT NULL "
        'ORDER BY r.bucket::text COLLATE "C", r.key::text COLLATE "C"'
    )
    with conn.cursor(name="drbackup_references") as cursor:
        cursor.itersize = CURSOR_ITERSIZE
        cursor.execute(sql)
        yield from cursor


# -- pairing ------------------------------------------------------------------------------


def pair_snapshot(repo, backup: Manifest, snapshot_target: str, tolerance) -> tuple:
    """``(snapshot manifest or None, how it was paired)`` for the database backup ``backup``."""
    point = recovery_point_of(repo, backup.target, backup.backup_id)
    if point is not None:
        for member in point.get("members", []):
            if member.get("target") == snapshot_target and member.get("kind") == "bucket":
                ref = BackupRef(member["backup_id"], snapshot_target)
                with contextlib.suppress(UsageError):  # pruned since: pair by time below
                    return repo.load_manifest(ref), f"recovery point {point['id']}"
    if backup.recovery_time is None:
        return None, "the backup has no recovery point"
    limit = backup.recovery_time + tolerance
    for ref in reversed(repo.list_refs(snapshot_target)):
        if ref.backup_id[:16] > limit.strftime("%Y%m%dT%H%M%SZ"):
            continue  # started after the limit: its recovery point is later still
        manifest = repo.load_manifest(ref)
        point = manifest.recovery_time
        if manifest.kind == "bucket" and point is not None and point <= limit:
            return manifest, (
                f"newest snapshot at or before the backup's recovery point "
                f"{backup.recovery_point} + {tolerance}"
            )
    return None, f"none at or before {backup.recovery_point} + {tolerance}"
