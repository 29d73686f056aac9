"""``drbackup snapshot minio TARGET... [--all] [--full] [--json]``."""

from __future__ import annotations

import click

from drbackup.actions.repository import backup_summary
from drbackup.actions.snapshot_minio import SnapshotOptions, snapshot_targets
from drbackup.cli.render import echo_json, go_quiet, human_size, quiet_option, reporter
from drbackup.cli.targets import chosen_targets

SKIPPED_SHOWN = 10  # keys named in the warning (the manifest keeps up to 100)
EVENTS = (
    ("changed_during_snapshot", "changed while being read (not in the snapshot)"),
    ("vanished", "vanished before they could be read"),
    ("reread", "changed after the listing (the newer version was read)"),
)


@click.group("snapshot")
def snapshot() -> None:
    """Take a bucket snapshot into the repository."""


@snapshot.command("minio")
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@click.option("--all", "all_targets", is_flag=True, help="Every target under minio:.")
@click.option(
    "--full",
    is_flag=True,
    help="Read every object again instead of trusting size/ETag/last-modified "
    "(picks up tag changes; unchanged contents are still not uploaded).",
)
@click.option(
    "--workers",
    default=8,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Objects transferred at once.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the snapshot records as JSON.")
@quiet_option
@click.pass_obj
def minio(
    state,
    targets: tuple[str, ...],
    all_targets: bool,
    full: bool,
    workers: int,
    as_json: bool,
    quiet: bool,
) -> None:
    """Snapshot the buckets of TARGET(s): only new or changed objects are read."""
    app = state.app
    names = chosen_targets(targets, all_targets, (), list(app.config.minio))
    if not names:
        raise click.UsageError("name a target (see 'drbackup config check') or use --all")
    go_quiet(app, quiet, ("--json", as_json))
    options = SnapshotOptions(workers=workers, full=full)
    shown = reporter(app, quiet=quiet, as_json=as_json)
    manifests = snapshot_targets(app, names, options=options, progress=shown)
    for m in manifests:
        _warn_skipped(m)
    if as_json:
        records = [backup_summary(m) for m in manifests]
        echo_json(records if len(records) > 1 else records[0])
        return
    for m in [] if quiet else manifests:
        _render(m)


def _render(m) -> None:
    meta = m.meta
    buckets = meta.get("buckets", {})
    uploaded = sum(b["uploaded_blobs"] for b in buckets.values())
    transferred = sum(b["transferred"] for b in buckets.values())
    reused = sum(b["reused"] for b in buckets.values())
    click.echo(
        f"snapshot {m.target}/{m.backup_id} complete: {meta['objects']} objects "
        f"({human_size(meta['bytes'])}) in {len(buckets)} bucket(s); {reused} unchanged, "
        f"{transferred} read, {uploaded} new blobs ({human_size(meta['uploaded_bytes'])} "
        f"stored); recovery point {m.recovery_point}"
    )
    for name, stats in buckets.items():
        for event, text in EVENTS:
            record = stats.get(event) or {}
            if record.get("count"):
                keys = ", ".join(record["keys"][:5])
                more = record["count"] - min(5, len(record["keys"]))
                click.echo(
                    f"  {name}: {record['count']} object(s) {text}: {keys}"
                    + (f" and {more} more" if more else "")
                )


def _warn_skipped(m) -> None:
    """A warning on stderr per bucket with objects left out because of their key."""
    for name, stats in m.meta.get("buckets", {}).items():
        record = stats.get("skipped") or {}
        if not record.get("count"):
            continue
        shown = record["keys"][:SKIPPED_SHOWN]
        more = record["count"] - len(shown)
        click.echo(
            f"drbackup: warning: {name}: {record['count']} object(s) not in the snapshot: "
            "their keys have a '.' or '..' path segment, which the s3 client cannot address: "
            + ", ".join(repr(k) for k in shown)
            + (f" and {more} more" if more else ""),
            err=True,
        )
        click.echo("hint: rename them on the source to have them backed up", err=True)


COMMANDS = [snapshot]
