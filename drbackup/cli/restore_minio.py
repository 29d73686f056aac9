"""``drbackup restore minio TARGET --into-bucket B``: attaches ``minio`` to the restore group."""

from __future__ import annotations

import click

from drbackup.cli.render import (
    echo_json,
    go_quiet,
    human_size,
    quiet_option,
    reporter,
    selection_json,
    user_time,
)
from drbackup.cli.restore import restore


def _bucket_name(value: str) -> str:
    from pydantic_core import PydanticCustomError

    from drbackup.config.types import check_bucket_name

    try:
        return check_bucket_name(value)
    except PydanticCustomError as exc:
        raise click.BadParameter(str(exc)) from None


@restore.command("minio")
@click.argument("target")
@click.option(
    "--into-bucket",
    required=True,
    metavar="BUCKET",
    callback=lambda _ctx, _param, value: _bucket_name(value),
    help="Bucket to restore into.",
)
@click.option("--snapshot", "snapshot_id", metavar="ID", help="Snapshot id (or unique prefix).")
@click.option(
    "--point-in-time",
    "pit",
    metavar="TIME",
    help="The bucket as it was at TIME (ISO 8601, UTC if no zone): to the second from a "
    "versioned bucket's history, else the newest snapshot at or before TIME.",
)
@click.option(
    "--bucket", metavar="NAME", help="Which bucket of the snapshot (when it holds several)."
)
@click.option("--prefix", metavar="PREFIX", help="Only keys starting with PREFIX.")
@click.option("--dry-run", is_flag=True, help="List what would be written; write nothing.")
@click.option(
    "--force", is_flag=True, help="Restore into a non-empty bucket (overwrites same keys)."
)
@click.option(
    "--into-target",
    metavar="NAME",
    help="Restore to the server of this minio target (default: TARGET's own server).",
)
@click.option(
    "--workers", default=8, show_default=True, type=click.IntRange(1, 64), help="Objects at once."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@quiet_option
@click.pass_obj
def minio(
    state,
    target,
    into_bucket,
    snapshot_id,
    pit,
    bucket,
    prefix,
    dry_run,
    force,
    into_target,
    workers,
    as_json,
    quiet,
) -> None:
    """Restore a bucket snapshot of TARGET into --into-bucket, verifying every object."""
    # Imported here: this module loads with every `restore` command, and the bucket client
    # (minio, urllib3, pycryptodome) costs ~0.2 s that `restore postgres` does not need.
    from drbackup.actions.restore_minio import restore_minio

    app = state.app
    if snapshot_id and pit:
        raise click.UsageError("give either --snapshot or --point-in-time, not both")
    go_quiet(app, quiet, ("--json", as_json), ("--dry-run", dry_run))
    result = restore_minio(
        app,
        target,
        into_bucket=into_bucket,
        snapshot_id=snapshot_id,
        point_in_time=user_time(pit) if pit else None,
        bucket=bucket,
        prefix=prefix,
        dry_run=dry_run,
        force=force,
        into_target=into_target,
        workers=workers,
        progress=reporter(app, quiet=quiet, as_json=as_json),
    )
    if as_json:
        echo_json(_result_json(result))
        return
    if quiet:
        return
    click.echo(f"using {result.selection.note}")
    if dry_run:
        _render_plan(result)
        return
    created = " (created)" if result.created_bucket else ""
    click.echo(
        f"restored {result.objects} objects ({human_size(result.bytes)}) of bucket "
        f"{result.source_bucket} into {result.into_bucket}{created} at {result.endpoint} "
        f"in {result.elapsed_s:.1f}s; sha256 of every object verified"
    )


def _result_json(result) -> dict:
    return {
        **selection_json(result.selection),
        "source_bucket": result.source_bucket,
        "into_bucket": result.into_bucket,
        "endpoint": result.endpoint,
        "prefix": result.prefix,
        "dry_run": result.dry_run,
        "created_bucket": result.created_bucket,
        "destination_not_empty": result.non_empty is not None,
        "objects": result.objects,
        "bytes": result.bytes,
        "elapsed_s": round(result.elapsed_s, 3),
        "point_in_time": result.history,
        **({"planned": result.planned} if result.dry_run else {}),
    }


def _render_plan(result) -> None:
    for plan in result.planned:
        click.echo(
            f"would write {plan['key']} ({human_size(plan['size'])}, {plan['content_type']})"
        )
    click.echo(
        f"dry run: {result.objects} objects ({human_size(result.bytes)}) would be written "
        f"into {result.into_bucket} at {result.endpoint}; nothing was written"
    )
    if result.non_empty is not None:
        click.echo(
            f"note: {result.into_bucket} is not empty; the restore would refuse without --force",
            err=True,
        )


COMMANDS: list = []  # the command is attached to the `restore` group above
