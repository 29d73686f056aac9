"""``drbackup gc [--dry-run] [--grace 24h] [--json]``."""

from __future__ import annotations

import click

from drbackup.actions.gc import DEFAULT_GRACE_S, GcResult, collect_garbage
from drbackup.cli.render import echo_json, human_size
from drbackup.config.types import parse_duration


def _grace(ctx, param, value: str) -> float:
    try:
        return parse_duration(value).total_seconds()
    except ValueError as exc:
        raise click.BadParameter(f"{exc} (use e.g. 24h, 90m, 7d)") from None


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Report unreferenced blobs; delete nothing.")
@click.option(
    "--grace",
    default=f"{int(DEFAULT_GRACE_S // 3600)}h",
    show_default=True,
    callback=_grace,
    help="Never delete blobs younger than this.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def gc(state, dry_run: bool, grace: float, as_json: bool) -> None:
    """Delete bucket-snapshot blobs that no snapshot references (mark and sweep).

    Refuses to delete while a snapshot is running; see docs/buckets.md for the protocol.
    """
    result = collect_garbage(state.app.repository(), dry_run=dry_run, grace_s=grace)
    if as_json:
        echo_json(gc_record(result))
        return
    _render(result)


def gc_record(r: GcResult) -> dict:
    """The JSON record of a gc run (schema in docs/buckets.md)."""
    return {
        "dry_run": r.dry_run,
        "grace_s": r.grace_s,
        "snapshots": r.snapshots,
        "referenced": r.referenced,
        "blobs": r.blobs,
        "blob_bytes": r.blob_bytes,
        "missing": r.missing,
        "unreferenced": [
            {"key": b.key, "size": b.size, "age_s": round(b.age_s)} for b in r.unreferenced
        ],
        "unreferenced_bytes": r.unreferenced_bytes,
        "young": r.young,
        "young_bytes": r.young_bytes,
        "deleted": r.deleted,
        "deleted_bytes": r.deleted_bytes,
        "locks": [lock.describe() for lock in r.locks],
        "stale_locks_removed": r.stale_locks_removed,
        "broken": r.broken,
        "note": r.note,
        "warnings": r.warnings,
    }


def _render(r: GcResult) -> None:
    verb = "would delete" if r.dry_run else "deleted"
    for blob in r.unreferenced:
        click.echo(f"{verb} {blob.key} ({human_size(blob.size)}, {blob.age_s / 3600:.1f}h old)")
    click.echo(
        f"{r.blobs} blobs ({human_size(r.blob_bytes)}), {r.referenced} referenced by "
        f"{r.snapshots} snapshot(s); {len(r.unreferenced)} unreferenced "
        f"({human_size(r.unreferenced_bytes)}) {verb}; {r.young} unreferenced but younger "
        f"than the grace period kept"
    )
    if r.note:
        click.echo(f"note: {r.note}", err=True)
    for key in r.stale_locks_removed:
        click.echo(f"removed stale lock {key}", err=True)
    for name in r.broken:
        click.echo(
            f"warning: snapshot {name} has lost its index and cannot be restored "
            f"('drbackup verify {name}' names the objects)",
            err=True,
        )
    for warning in r.warnings:
        click.echo(f"warning: {warning}", err=True)
    if r.missing:
        click.echo(
            f"warning: {r.missing} referenced blob(s) are missing: some snapshots cannot be "
            "fully restored (run a bucket drill to name the objects)",
            err=True,
        )


COMMANDS = [gc]
