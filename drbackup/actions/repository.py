"""Repository-level actions: init, list, show, verify, catalog rebuild, access slots."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from drbackup.actions.progress import SILENT, Progress
from drbackup.errors import CheckFailedError, IntegrityError
from drbackup.repository.manifest import BackupRef, Manifest
from drbackup.repository.repo import Repository
from drbackup.sources.buckets.versions import EVENTS_KIND

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext
    from drbackup.catalog import Catalog


def init_repository(
    app: AppContext, *, public_key_mode: bool = False, scrypt_params: dict | None = None
) -> Repository:
    """Create the configured repository.  Raises RepositoryError if one exists there."""
    repo = Repository.init(
        app.storage, app.secrets, public_key_mode=public_key_mode, scrypt_params=scrypt_params
    )
    app.index(lambda cat: cat.rebuild_from(repo))  # the catalog is kept in step, best effort
    return repo


def backup_summary(m: Manifest) -> dict:
    """The listing record of a backup: JSON-able, what `list --json` and `show --json` print."""
    return {
        "backup_id": m.backup_id,
        "target": m.target,
        "kind": m.kind,
        "started_at": m.started_at,
        "finished_at": m.finished_at,
        "recovery_point": m.recovery_point,
        "size": m.size,
        "stored_size": m.stored_size,
        "items": [
            {
                "name": i.name,
                "type": i.type,
                "size": i.size,
                "stored_size": i.stored_size,
                "sha256": i.sha256,
                "objects": len(i.objects),
                "meta": _public_meta(i.meta),
            }
            for i in m.items
        ],
        "meta": _public_meta(m.meta),
    }


def _public_meta(meta: dict) -> dict:
    # The fingerprint is large: summarise it for listings, `show --full` prints it whole.
    out = dict(meta)
    fp = out.pop("fingerprint", None)
    if isinstance(fp, dict):
        tables = fp.get("tables") or {}
        out["fingerprint"] = {
            "level": fp.get("level"),
            "tables": len(tables),
            "rows": sum((t.get("rows") or 0) for t in tables.values()),
        }
    return out


def list_backups(app: AppContext, target: str | None = None) -> tuple[list[Manifest], list[str]]:
    """Every backup in the repository (decrypting manifests), oldest first, and one line per
    manifest that failed authentication: one damaged manifest must not hide the others.

    ``target`` limits the listing; a target that is neither configured nor in the
    repository is a UsageError naming the closest configured one."""
    repo = app.repository()
    manifests, damaged = [], []
    refs = repo.list_refs(target)
    if target is not None and not refs and target not in app.config.targets:
        app.config.target(target)  # a mistyped name: the did-you-mean UsageError (exit 2)
    for ref in refs:
        try:
            manifests.append(repo.load_manifest(ref))
        except IntegrityError as exc:
            damaged.append(f"{ref.target}/{ref.backup_id}: {exc.message}")
    app.index(lambda cat: [cat.record_backup(repo.id, repo.url, m) for m in manifests])
    return manifests, damaged


def storage_warnings(app: AppContext) -> list[str]:
    """Lines about the repository's storage that the command met (links not followed)."""
    return app.repository().storage_warnings()


def show_backup(app: AppContext, backup_id: str) -> Manifest:
    repo = app.repository()
    return repo.load_manifest(repo.resolve(backup_id))


@dataclass
class VerifyResult:
    manifest: Manifest
    problems: list[str]
    bytes_read: int
    seconds: float


def verify_backup(app: AppContext, backup_id: str, progress: Progress = SILENT) -> VerifyResult:
    """Re-read every object of a backup.  Raises CheckFailedError listing every problem.
    ``progress`` gets the plaintext bytes read (its total: the manifest's items, and a
    base backup's archives read again or a snapshot's objects); a damaged backup ends its
    phase with the error."""
    repo = app.repository()
    ref: BackupRef = repo.resolve(backup_id)
    manifest = repo.load_manifest(ref)
    total = [0]
    start = datetime.now(UTC)
    label = f"verify {manifest.target}/{manifest.backup_id}"
    with progress.phase(label, "read", _bytes_to_read(manifest)) as shown:

        def tick(n: int) -> None:
            total[0] += n
            shown(n)

        problems, kept = _find_problems(repo, manifest, tick)
        seconds = (datetime.now(UTC) - start).total_seconds()
        app.index(lambda cat: _mark_verified(cat, repo, manifest, not problems, kept))
        if problems:
            headline = f"backup {ref.target}/{ref.backup_id} is damaged: {len(problems)} problem(s)"
            error = damage_found(
                headline, problems, hint="restore from another backup; 'drbackup list' shows them"
            )
            error.redacted = damage_found(headline, kept, hint="").message
            raise error
    return VerifyResult(manifest, problems, total[0], seconds)


def _find_problems(repo, manifest: Manifest, tick) -> tuple[list[str], list[str]]:
    """(every problem, what the catalog keeps of them): the repository's checks, then a
    base backup's files against the server's manifest, or a snapshot's blobs."""
    problems = repo.verify(manifest, tick)
    if manifest.kind == "postgres-physical" and not problems:
        # the repository's checks passed: now every file against the server's manifest
        from drbackup.actions.verify_physical import verify_base_backup

        problems = verify_base_backup(repo, manifest, tick)
    kept = problems
    if manifest.kind in ("bucket", EVENTS_KIND) and not problems:
        # A snapshot's items are its indexes; the objects' content lives in shared blobs.
        from drbackup.actions.restore_minio import verify_snapshot_blobs

        problems = verify_snapshot_blobs(repo, manifest, tick=tick)
        kept = _per_bucket(problems)  # they name object keys (users' data): counts are kept
    return problems, kept


def _bytes_to_read(manifest: Manifest) -> int:
    """What verifying reads when the backup is intact: every item, then a base backup's
    archives once more (file by file) or a snapshot's objects (the bytes its indexes count;
    a versioned bucket's older versions come on top)."""
    extra = 0
    if manifest.kind == "postgres-physical":
        from drbackup.actions.backup_physical import TAR_TYPE

        extra = sum(i.size for i in manifest.items if i.type == TAR_TYPE)
    elif manifest.kind in ("bucket", EVENTS_KIND):
        extra = sum(i.meta.get("bytes", 0) for i in manifest.items)
    return manifest.size + extra


def _mark_verified(catalog: Catalog, repo, manifest: Manifest, ok: bool, problems: list[str]):
    """The verification in the catalog, which learns the backup first if it did not know it
    (taken on another host, or before the catalog was moved aside)."""
    catalog.record_backup(repo.id, repo.url, manifest)
    catalog.mark_verified(manifest.backup_id, ok, problems, repository_id=repo.id)


def _per_bucket(problems: list[str]) -> list[str]:
    """``<bucket>: N damaged object(s)`` from lines ``<bucket>: object <key>: ...`` (a
    bucket name holds no colon)."""
    counts = Counter(p.split(": ", 1)[0] for p in problems)
    return [f"{bucket}: {n} damaged object(s)" for bucket, n in counts.items()]


def damage_found(headline: str, problems: list[str], *, hint: str) -> CheckFailedError:
    """The exit-3 error naming every problem found, one indented line each."""
    lines = "".join(f"\n  {p}" for p in problems)
    return CheckFailedError(headline + lines, hint=hint)


def rebuild_catalog(app: AppContext):
    """Recreate the catalog's backup index from the repository alone."""
    repo = app.repository()
    return app.catalog.rebuild_from(repo)
