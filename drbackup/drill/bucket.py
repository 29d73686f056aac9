"""Bucket drills: restore a snapshot into a scratch bucket and prove every object came back.

For each bucket of the snapshot a scratch bucket ``drbackup-drill-<UTC time>-<random>``
is created on the target's server and marked as the drill's (its ``drbackup-drill-scratch``
tag holds :func:`~drbackup.drill.scratch.scratch_marker` for its name), the snapshot
restored into it (each object's SHA-256
checked while uploading), then every object read back and compared with the index
(content digest, content type, user metadata, tags), the object count and total bytes
compared with the manifest, and the time compared with the target's RTO.  The scratch
bucket the drill created is always removed (Ctrl-C and SIGTERM are held off while it is).
Scratch buckets left by a crashed drill are removed by a later one once they are 12 hours
old -- only those that carry the marker for their name: a bucket that merely has a scratch
name is never touched.  Every check records its result and the drill goes on; the caller fails at the end.

:func:`find_missing_objects` answers "which of these (bucket, key) references are not in
snapshot X" by streaming the index: the cross-service check of a paired PostgreSQL
backup and bucket snapshot uses it.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from drbackup.drill.checks import (
    FAIL,
    PASS,
    CheckResult,
    check_rpo,
    check_rto,
    worst,
)
from drbackup.drill.scratch import marked_by, new_drill_id, scratch_marker, signals_deferred
from drbackup.errors import (
    DrbackupError,
    SourceError,
    SourceUnreachableError,
    UsageError,
    shareable,
)
from drbackup.sources.buckets.client import BucketClient
from drbackup.sources.buckets.index import (
    IndexEntry,
    index_item_name,
    open_index,
    snapshot_buckets,
)
from drbackup.sources.buckets.pool import ordered_map
from drbackup.sources.buckets.restore import restore_entries

SCRATCH_PREFIX = "drbackup-drill-"
SCRATCH_TAG = "drbackup-drill-scratch"  # bucket tag holding the drill's marker
STALE_SCRATCH_S = 12 * 3600  # older scratch buckets belong to a crashed drill
EVIDENCE_LIMIT = 200
_SCRATCH_RE = re.compile(r"^drbackup-drill-(\d{14})-[0-9a-f]{6}$")


def scratch_bucket_name(now: datetime | None = None) -> str:
    """``drbackup-drill-YYYYmmddHHMMSS-xxxxxx`` (a valid S3 bucket name, 36 characters)."""
    now = now or datetime.now(UTC)
    return f"{SCRATCH_PREFIX}{now:%Y%m%d%H%M%S}-{os.urandom(3).hex()}"


def stale_scratch_buckets(names: Iterable[str], now: datetime) -> list[str]:
    """Scratch buckets (by name) created more than STALE_SCRATCH_S before ``now``."""
    stale = []
    for name in names:
        match = _SCRATCH_RE.match(name)
        if match:
            created = datetime.strptime(match.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
            if (now - created).total_seconds() > STALE_SCRATCH_S:
                stale.append(name)
    return stale


@dataclass
class BucketDrillResult:
    target: str
    backup_id: str
    recovery_point: str | None
    started_at: datetime
    checks: list[CheckResult] = field(default_factory=list)
    scratch_buckets: list[str] = field(default_factory=list)
    stale_removed: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    timings: dict = field(default_factory=dict)  # restore_s, verification_s, total_s

    @property
    def status(self) -> str:
        return worst(c.status for c in self.checks)

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.status == FAIL]

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "backup_id": self.backup_id,
            "recovery_point": self.recovery_point,
            "started_at": self.started_at.isoformat(),
            "elapsed_s": round(self.elapsed_s, 3),
            "status": self.status,
            "scratch_buckets": self.scratch_buckets,
            "stale_scratch_removed": self.stale_removed,
            "checks": [c.to_dict() for c in self.checks],
        }


@dataclass
class _Scratch:
    """A scratch bucket of this drill: ``made`` once this drill created it (empty)."""

    name: str
    drill_id: str
    made: bool = False
    marked: bool = False


@dataclass
class _Timing:
    restore_s: float = 0.0
    verification_s: float = 0.0


def run_bucket_drill(
    repo,
    client: BucketClient,
    manifest,
    *,
    rto_s: float,
    rpo_s: float,
    how: str,
    workers: int = 8,
    drill_id: str | None = None,
) -> BucketDrillResult:
    """Run every check on ``manifest`` (a bucket snapshot); never raises for what it finds.

    ``drill_id`` names the drill in the scratch buckets' marker (a new id when None).
    """
    started = datetime.now(UTC)
    clock = time.monotonic()
    drill_id = drill_id or new_drill_id(started)
    result = BucketDrillResult(
        manifest.target, manifest.backup_id, manifest.recovery_point, started
    )
    result.stale_removed = _remove_stale_scratch(client, started)
    timing = _Timing()
    restored_all = True
    for bucket in snapshot_buckets(manifest):
        scratch = _Scratch(scratch_bucket_name(), drill_id)
        result.scratch_buckets.append(scratch.name)
        try:
            restored_all &= _drill_one(
                repo, client, manifest, bucket, scratch, result, timing, workers
            )
        finally:
            with signals_deferred():  # a second Ctrl-C must not leave the scratch bucket
                result.checks.append(_cleanup(client, bucket, scratch))
    result.timings = {
        "restore_s": timing.restore_s,
        "verification_s": timing.verification_s,
        "total_s": timing.restore_s + timing.verification_s,
    }
    spent = {"restore_s": timing.restore_s, "verification_s": timing.verification_s}
    result.checks.append(check_rto(spent, timedelta(seconds=rto_s), restored=restored_all))
    result.checks.append(_check_rpo(repo, manifest, started, rpo_s, how))
    for check in result.checks:
        check.target = manifest.target
    result.elapsed_s = time.monotonic() - clock
    return result


def _drill_one(repo, client, manifest, bucket, scratch, result, timing, workers) -> bool:
    """Restore one bucket into ``scratch`` and check it; True if the restore was complete."""
    expected = manifest.item(index_item_name(bucket)).meta
    t0 = time.monotonic()
    restore_check = _restore(repo, client, manifest, bucket, scratch, workers)
    timing.restore_s += time.monotonic() - t0
    result.checks.append(restore_check)
    t0 = time.monotonic()
    result.checks.append(_read_back(repo, client, manifest, bucket, scratch.name, workers))
    result.checks.extend(_count_and_bytes(client, bucket, scratch.name, expected))
    timing.verification_s += time.monotonic() - t0
    return restore_check.status != FAIL


def _make_scratch(client: BucketClient, scratch: _Scratch) -> None:
    """Create the scratch bucket and set its marker; raises DrbackupError.

    A bucket that already holds objects is not this drill's (an S3 server may answer "OK"
    to creating a bucket its caller owns): it is refused and never removed.  A server
    without bucket tags gets an unmarked bucket, which this drill still removes (it made
    it), but which a later drill would leave alone if this one died.
    """
    with signals_deferred():  # Ctrl-C right after CREATE must not leave it unrecorded
        client.make_bucket(scratch.name)
        if client.first_key(scratch.name) is not None:
            raise SourceError(f"scratch bucket {scratch.name} already exists and holds objects")
        scratch.made = True
    try:
        marker = scratch_marker(scratch.drill_id, scratch.name)
        client.set_bucket_tags(scratch.name, {SCRATCH_TAG: marker})
        scratch.marked = True
    except SourceUnreachableError:
        raise
    except DrbackupError:
        pass  # no bucket tags on this server: see above


def _restore(repo, client, manifest, bucket, scratch: _Scratch, workers) -> CheckResult:
    try:
        _make_scratch(client, scratch)
        with open_index(repo.open_item, manifest, bucket) as entries:
            summary = restore_entries(
                client, scratch.name, entries, lambda e: repo.open_blob(e.blob), workers=workers
            )
    except DrbackupError as exc:
        evidence = {"bucket": bucket, "error": exc.message}
        return CheckResult("restore", FAIL, f"{bucket}: {shareable(exc)}", evidence)
    evidence = {
        "bucket": bucket,
        "scratch_bucket": scratch.name,
        "scratch_marked": scratch.marked,
        "objects": summary.objects,
        "bytes": summary.bytes,
        "failed": summary.failed,
        "failures": [{"key": k, "message": m} for k, m in summary.failures[:EVIDENCE_LIMIT]],
    }
    if summary.failed:
        # The summary travels (catalog runs, report, chat): counts only; the evidence
        # names the objects.
        total = summary.objects + summary.failed
        message = f"{bucket}: {summary.failed} of {total} objects failed to restore"
        return CheckResult("restore", FAIL, message, evidence)
    return CheckResult(
        "restore",
        PASS,
        f"{bucket}: {summary.objects} objects restored, sha256 verified while uploading",
        evidence,
    )


def _read_back(repo, client, manifest, bucket, scratch, workers) -> CheckResult:
    """Read every restored object back and compare it with the index.

    The summary gives counts only (it travels: catalog runs, report, chat); the evidence
    names the objects."""
    problems: list[str] = []
    checked, stopped = 0, None
    try:
        with open_index(repo.open_item, manifest, bucket) as entries:
            compare = lambda e: _compare_object(client, scratch, e)  # noqa: E731
            for _entry, problem in ordered_map(compare, entries, workers=workers):
                checked += 1
                if problem:
                    problems.append(problem)
    except DrbackupError as exc:
        stopped = exc
    evidence = {"bucket": bucket, "checked": checked, "problems": problems[:EVIDENCE_LIMIT]}
    if stopped is not None:
        evidence["error"] = stopped.message
    if problems or stopped is not None:
        parts = (
            [f"{len(problems)} of {checked} objects differ from the snapshot"] if problems else []
        )
        if stopped is not None:
            parts.append(f"read-back stopped after {checked} objects: {shareable(stopped)}")
        return CheckResult("checksums", FAIL, f"{bucket}: " + "; ".join(parts), evidence)
    return CheckResult(
        "checksums",
        PASS,
        f"{bucket}: {checked} objects read back: content sha256, content type, metadata "
        "and tags equal the snapshot",
        evidence,
    )


def _compare_object(client: BucketClient, bucket: str, entry: IndexEntry) -> str | None:
    """A one-line problem with the restored copy of ``entry``, or None if it matches."""
    what = f"object {entry.key}"
    try:
        with client.open_object(bucket, entry.key) as obj:
            sha, size = hashlib.sha256(), 0
            while block := obj.read(1 << 20):
                sha.update(block)
                size += len(block)
            tags = client.get_tags(bucket, entry.key) if obj.tag_count or entry.tags else {}
    except DrbackupError as exc:
        return f"{what}: not readable from the scratch bucket ({exc.message})"
    if size != entry.size or sha.hexdigest() != entry.sha256:
        return f"{what}: content differs ({size} bytes, expected {entry.size}; sha256 mismatch)"
    differs = [
        name
        for name, got, want in (
            ("content type", obj.content_type, entry.content_type),
            ("metadata", obj.metadata, entry.metadata),
            ("tags", tags, entry.tags),
            ("headers", obj.headers, entry.headers),
        )
        if got != want
    ]
    return f"{what}: {', '.join(differs)} differ" if differs else None


def _count_and_bytes(client, bucket, scratch, expected: dict) -> list[CheckResult]:
    try:
        count = total = 0
        for obj in client.list_objects(scratch):
            count += 1
            total += obj.size
    except DrbackupError as exc:
        message = f"{bucket}: cannot list the scratch bucket: {shareable(exc)}"
        return [CheckResult("objects", FAIL, message), CheckResult("bytes", FAIL, message)]
    return [
        _equal("objects", bucket, count, expected.get("objects"), "objects"),
        _equal("bytes", bucket, total, expected.get("bytes"), "bytes"),
    ]


def _equal(name: str, bucket: str, got: int, want: int | None, unit: str) -> CheckResult:
    evidence = {"bucket": bucket, "restored": got, "manifest": want}
    if got != want:
        return CheckResult(
            name, FAIL, f"{bucket}: {got} {unit} restored, the manifest says {want}", evidence
        )
    return CheckResult(name, PASS, f"{bucket}: {got} {unit}, as in the manifest", evidence)


def _cleanup(client: BucketClient, bucket: str, scratch: _Scratch) -> CheckResult:
    """Remove the scratch bucket this drill made (and only if it did)."""
    evidence = {"scratch_bucket": scratch.name}
    if not scratch.made:
        summary = f"{bucket}: scratch bucket {scratch.name} was not created: nothing to remove"
        return CheckResult("cleanup", PASS, summary, evidence)
    try:
        client.remove_bucket(scratch.name)
    except DrbackupError as exc:
        summary = f"{bucket}: scratch bucket {scratch.name} not removed: {exc.message}"
        return CheckResult("cleanup", FAIL, summary, evidence)
    return CheckResult(
        "cleanup", PASS, f"{bucket}: scratch bucket {scratch.name} removed", evidence
    )


def _remove_stale_scratch(client: BucketClient, now: datetime) -> list[str]:
    """Remove scratch buckets of crashed drills: named as scratch, 12 h old, and marked."""
    removed = []
    try:
        for name in stale_scratch_buckets(client.list_buckets(), now):
            if marked_by(client.get_bucket_tags(name).get(SCRATCH_TAG), name) is None:
                continue  # not provably a drill's: never touched
            client.remove_bucket(name)
            removed.append(name)
    except DrbackupError:
        pass  # listing buckets may be refused; the drill's own cleanup still runs
    return removed


def _check_rpo(repo, manifest, now: datetime, rpo_s: float, how: str) -> CheckResult:
    selected = manifest.recovery_time or manifest.finished_time
    newest_ref = repo.list_refs(manifest.target)[-1]
    newest = manifest if newest_ref == manifest.ref else repo.load_manifest(newest_ref)
    newest_time = newest.recovery_time or newest.finished_time
    return check_rpo(selected, newest_time, now, timedelta(seconds=rpo_s), how)


# --- does the snapshot hold these objects? ----------------------------------------------


def find_missing_objects(
    repo, manifest, refs: Iterable[tuple[str, str]]
) -> Iterator[tuple[str, str]]:
    """The ``(bucket, key)`` references that snapshot ``manifest`` does not hold.

    ``refs`` must be sorted by bucket, then by key in byte order (in SQL:
    ``ORDER BY bucket, key COLLATE "C"``); each bucket's index is streamed once alongside,
    so any number of references is checked in constant memory.  Raises UsageError for
    unsorted references.
    """
    buckets = set(snapshot_buckets(manifest))
    last: tuple[str, str] | None = None
    for bucket, group in itertools.groupby(refs, key=lambda ref: ref[0]):
        known = manifest if bucket in buckets else None
        with open_index(repo.open_item, known, bucket) as entries:
            index_iter = iter(entries)
            current = next(index_iter, None)
            for ref in group:
                if last is not None and ref < last:
                    raise UsageError(
                        f"references are not sorted: {ref} after {last}",
                        hint='order them by bucket, then key COLLATE "C"',
                    )
                last = ref
                while current is not None and current.key < ref[1]:
                    current = next(index_iter, None)
                if current is None or current.key != ref[1]:
                    yield ref
