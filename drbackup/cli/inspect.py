"""``drbackup list``, ``show ID``, ``verify ID``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from drbackup.actions.repository import (
    backup_summary,
    damage_found,
    list_backups,
    show_backup,
    storage_warnings,
    verify_backup,
)
from drbackup.cli.render import (
    echo_json,
    echo_table,
    go_quiet,
    human_size,
    quiet_option,
    reporter,
)
from drbackup.sources.buckets.versions import bucket_guarantees

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext


@click.command("list")
@click.option("-t", "--target", help="Only this target.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records.")
@click.pass_obj
def list_(state, target: str | None, as_json: bool) -> None:
    """List backups in the repository, oldest first."""
    manifests, damaged = list_backups(state.app, target)
    if as_json:
        echo_json([backup_summary(m) for m in manifests])
    else:
        _list_table(manifests)
        _window_lines(state.app, manifests)
    for warning in storage_warnings(state.app):
        click.echo(f"warning: {warning}", err=True)
    if damaged:
        raise damage_found(
            f"{len(damaged)} backup manifest(s) are damaged and not listed:",
            damaged,
            hint="those backups cannot be restored; every other backup listed is unaffected",
        )


def _content_size(m) -> int:
    """What the backup holds: the dump's size, or for a bucket snapshot the objects' bytes
    (its own items are only the index; the content is in shared blobs)."""
    if m.kind == "bucket" and isinstance(m.meta.get("bytes"), int):
        return m.meta["bytes"]
    return m.size


def _list_table(manifests) -> None:
    rows = [
        [
            m.target + "/" + m.backup_id,
            m.kind,
            (m.recovery_point or m.finished_at)[:19] + "Z",
            human_size(_content_size(m)),
            human_size(m.stored_size),
            ", ".join(i.name for i in m.items),
        ]
        for m in manifests
    ]
    if not rows:
        click.echo("no backups", err=True)
        return
    echo_table(["backup", "kind", "recovery point", "size", "stored", "items"], rows)


def _window_lines(app: AppContext, manifests) -> None:
    """Under the table: the restorable window of each listed target that has base backups."""
    from drbackup.actions.wal_check import analyze_archive

    targets = sorted({m.target for m in manifests if m.kind == "postgres-physical"})
    for target in targets:
        status = analyze_archive(app.repository(), target)
        if status.oldest and status.newest:
            window = f"to any second of {status.oldest.isoformat()} .. {status.newest.isoformat()}"
        elif status.restorable:
            window = "to the end of the archived WAL (no commit since the base backup)"
        else:
            window = "to no point: no base backup with complete WAL"
        gaps = (
            f"; {len(status.problems)} problem(s): 'drbackup wal check {target}'"
            if status.problems
            else ""
        )
        click.echo(f"{target}: restorable {window}{gaps}")


@click.command("show")
@click.argument("backup_id")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON record.")
@click.option("--full", is_flag=True, help="With --json: the whole manifest, fingerprint included.")
@click.pass_obj
def show(state, backup_id: str, as_json: bool, full: bool) -> None:
    """Show one backup (ID or a unique prefix; TARGET/ID also works)."""
    m = show_backup(state.app, backup_id)
    if as_json:
        echo_json(m.to_dict() if full else backup_summary(m))
        return
    s = backup_summary(m)
    click.echo(f"backup:          {m.target}/{m.backup_id}")
    click.echo(f"kind:            {m.kind}")
    if m.kind == "postgres-physical":
        click.echo(
            f"restorable from: {m.recovery_point} (consistent at {m.meta.get('stop_lsn')}, needs "
            f"WAL from {m.meta.get('start_lsn')} on timeline {m.meta.get('timeline')})"
        )
    else:
        click.echo(f"recovery point:  {m.recovery_point or '-'}")
    click.echo(f"started:         {m.started_at}")
    click.echo(f"finished:        {m.finished_at}")
    click.echo(f"size:            {human_size(m.size)} ({human_size(m.stored_size)} stored)")
    for key, value in sorted(s["meta"].items()):
        if key != "server_version_num":
            click.echo(f"{key + ':':<17}{_shown(value)}")
    if m.kind == "bucket":
        for bucket, guarantee in bucket_guarantees(m).items():
            click.echo(f"{'history:':<17}{bucket}: {guarantee}")
    click.echo("items:")
    for item in s["items"]:
        extra = ", ".join(
            f"{k}={v}" for k, v in sorted(item["meta"].items()) if not isinstance(v, dict)
        )
        click.echo(
            f"  {item['name']:<20} {item['type']:<10} {human_size(item['size']):>10}  {extra}"
        )


def _shown(value) -> str:
    """A manifest meta value on one line: lists joined, mappings as ``k=v``, none as '-'."""
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(
            f"{k} ({_shown(v)})" if isinstance(v, dict) else f"{k}={_shown(v)}"
            for k, v in value.items()
        )
    return str(value)


@click.command("verify")
@click.argument("backup_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@quiet_option
@click.pass_obj
def verify(state, backup_id: str, as_json: bool, quiet: bool) -> None:
    """Re-read every object of a backup: checksums, authentication, plaintext digests."""
    app = state.app
    go_quiet(app, quiet, ("--json", as_json))
    result = verify_backup(app, backup_id, reporter(app, quiet=quiet, as_json=as_json))
    m = result.manifest
    if as_json:
        echo_json(
            {
                "backup_id": m.backup_id,
                "target": m.target,
                "ok": True,
                "bytes": result.bytes_read,
                "seconds": round(result.seconds, 3),
            }
        )
        return
    if quiet:
        return
    objects = sum(len(i.objects) for i in m.items)
    click.echo(
        f"backup {m.target}/{m.backup_id} ok: {len(m.items)} items, {objects} objects, "
        f"{human_size(result.bytes_read)} verified in {result.seconds:.1f}s"
    )


COMMANDS = [list_, show, verify]
