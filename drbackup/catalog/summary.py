"""What a manifest contributes to the catalog: its row values and a small summary.

The summary holds database names, server versions and row counts in clear: the catalog is a
local index, unlike the repository, where these exist only inside encrypted manifests.
Never table names, object keys, dsns or data.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from drbackup.errors import IntegrityError, UsageError
from drbackup.repository.manifest import Manifest

# manifest.meta keys copied into the summary when they are small scalars; sources that
# record other non-secret facts worth listing add their keys here.
SUMMARY_SCALARS = ("server_version", "pg_dump_version", "bucket", "object_count")
_MAX_TEXT = 200


def backup_values(manifest: Manifest) -> dict[str, Any]:
    """The manifest-derived columns of a backup row (``models.MANIFEST_COLUMNS``).

    Raises IntegrityError if a timestamp does not parse.
    """
    point = manifest.recovery_time
    return {
        "kind": manifest.kind,
        "started_at": manifest.started_time.astimezone(UTC),
        "finished_at": manifest.finished_time.astimezone(UTC),
        "recovery_point": point.astimezone(UTC) if point else None,
        "tool_version": manifest.tool_version,
        "size": manifest.size,
        "stored_size": manifest.stored_size,
        "item_count": len(manifest.items),
        "summary": summarize(manifest),
    }


def summarize(manifest: Manifest) -> dict[str, Any]:
    """Small, non-secret facts for listings: never table names, keys, dsns or data.

    Returns ``server_version`` and the other :data:`SUMMARY_SCALARS` found in
    ``manifest.meta``; ``databases`` (sorted names from ``meta["databases"]`` and items'
    ``meta["database"]``); and ``fingerprint`` totals ``{"tables": n, "rows": n}`` summed
    over the fingerprints in ``meta`` and items' meta (``{"tables": {name: {"rows": n}}}``).
    """
    summary: dict[str, Any] = {}
    for key in SUMMARY_SCALARS:
        value = manifest.meta.get(key)
        if isinstance(value, int | float) or (isinstance(value, str) and len(value) <= _MAX_TEXT):
            summary[key] = value
    databases = _database_names(manifest)
    if databases:
        summary["databases"] = databases
    fingerprints = [
        m["fingerprint"] for m in _metas(manifest) if isinstance(m.get("fingerprint"), dict)
    ]
    if fingerprints:
        tables, rows = zip(*(_fingerprint_totals(fp) for fp in fingerprints), strict=True)
        summary["fingerprint"] = {"tables": sum(tables), "rows": sum(rows)}
    return summary


def _metas(manifest: Manifest) -> list[dict]:
    return [manifest.meta, *(item.meta for item in manifest.items)]


def _database_names(manifest: Manifest) -> list[str]:
    listed = manifest.meta.get("databases")
    names = set(listed) if isinstance(listed, list | dict) else set()
    names.update(item.meta.get("database") for item in manifest.items)
    return sorted(n for n in names if isinstance(n, str) and len(n) <= _MAX_TEXT)


def _fingerprint_totals(fingerprint: dict) -> tuple[int, int]:
    tables = fingerprint.get("tables")
    if isinstance(tables, dict):
        rows = (t.get("rows") if isinstance(t, dict) else t for t in tables.values())
        return len(tables), sum(r for r in rows if isinstance(r, int))
    count = tables if isinstance(tables, int) else 0
    rows = fingerprint.get("rows")
    return count, rows if isinstance(rows, int) else 0


def read_repository(repo) -> tuple[dict[tuple[str, str], dict], dict[tuple[str, str], str]]:
    """Row values of every manifest in ``repo`` by (target, backup_id), and the problem of
    each unreadable one (failed authentication or parsing).  Storage and key errors propagate.
    """
    loaded: dict[tuple[str, str], dict] = {}
    unreadable: dict[tuple[str, str], str] = {}
    for ref in repo.list_refs():
        try:
            loaded[(ref.target, ref.backup_id)] = backup_values(repo.load_manifest(ref))
        except IntegrityError as exc:
            unreadable[(ref.target, ref.backup_id)] = exc.message
        except UsageError:
            continue  # deleted (pruned) between listing and reading: it is gone
    return loaded, unreadable
