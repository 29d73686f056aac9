"""``drbackup prune [TARGET...] [--dry-run] [--json | --quiet]``."""

from __future__ import annotations

import click

from drbackup.actions.prune import PruneReport, TargetPrune, prune_targets
from drbackup.cli.render import echo_json, go_quiet, human_size, quiet_option
from drbackup.cli.targets import all_option, chosen_targets, old_target_option


@click.command("prune")
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@all_option("target (the default)")
@old_target_option("-t", "--target")
@click.option("--dry-run", is_flag=True, help="Show what would go and why the rest stays.")
@click.option("--json", "as_json", is_flag=True, help="Print the decisions as JSON.")
@quiet_option
@click.pass_obj
def prune(state, targets, all_targets, old_targets, dry_run, as_json, quiet) -> None:
    """Remove backups the retention policies of TARGET(s) (default: every target) expire,
    and unfinished backups' data.

    Each survivor is listed with the rules that keep it (docs/retention.md).
    """
    names = chosen_targets(targets, all_targets, old_targets)
    go_quiet(state.app, quiet, ("--json", as_json), ("--dry-run", dry_run))
    report = prune_targets(state.app, names, dry_run=dry_run)
    if as_json:
        echo_json(report.to_dict())
    else:
        if not quiet:
            _render(report)
        for warning in report.warnings:
            click.echo(f"warning: {warning}", err=True)
    report.raise_for_errors()


def _render(report: PruneReport) -> None:
    for result in report.targets:
        _render_target(result)
        click.echo()
    _render_temporaries(report)
    click.echo(_summary(report))


def _render_target(result: TargetPrune) -> None:
    click.echo(f"target {result.target}: {result.policy.describe()} ({result.policy.tz})")
    if result.note:
        click.echo(f"  {result.note}")
    for backup, reasons in result.keep:
        click.echo(f"  keep    {_line(backup)}  {', '.join(reasons)}")
    for backup_id, problem in result.unreadable.items():
        click.echo(f"  keep    {backup_id}  unreadable manifest, never removed: {problem}")
    for backup in result.remove:
        action = result.action(backup.backup_id)
        until = result.locked.get(backup.backup_id)
        extra = f" until {until:%Y-%m-%d %H:%M}Z (object lock): skipped" if until else ""
        click.echo(f"  {_verb(action):<7} {_line(backup)}{extra}")
    for left in result.leftovers:
        click.echo(f"  data    {left.backup_id}  {_leftover(left)}: {left.action}")
    if result.wal is not None:
        wal = result.wal
        verb = "would remove" if wal.dry_run else "removed"
        kept_from = ", ".join(f"{c} from {first}" for c, first in wal.cutoffs.items()) or "all"
        click.echo(
            f"  wal     {verb} {wal.removed} file(s) ({human_size(wal.removed_bytes)}), kept "
            f"{wal.kept} ({kept_from})" + (f", {wal.locked} locked" if wal.locked else "")
        )
        for note in wal.notes:
            click.echo(f"  wal     {note}")
    if result.error:
        click.echo(f"  error: {result.error.message}")


def _leftover(left) -> str:
    if not left.objects and not left.temporaries:
        return f"lease only ({left.lease})"
    temporaries = f" + {left.temporaries} unfinished write(s)" if left.temporaries else ""
    return (
        f"no manifest, {left.objects} object(s){temporaries}, {human_size(left.size)}, "
        f"last written {left.last_written:%Y-%m-%d %H:%M}Z, lease {left.lease}"
    )


def _render_temporaries(report: PruneReport) -> None:
    for temp in report.temporaries:
        hours = temp["age_s"] / 3600
        click.echo(f"temporary {temp['key']}  killed write, {hours:.1f}h old: {temp['action']}")
    if report.temporaries:
        click.echo()


def _verb(action: str) -> str:
    return {"removed": "removed", "would remove": "remove", "locked": "locked"}[action]


def _line(backup) -> str:
    return f"{backup.backup_id}  {backup.kind:<8}  {backup.recovery_point:%Y-%m-%d %H:%M:%S}Z"


def _summary(report: PruneReport) -> str:
    totals: dict[str, int] = {}
    for result in report.targets:
        for key, value in result.counts().items():
            totals[key] = totals.get(key, 0) + value
    expired = sum(len(t.remove) for t in report.targets)
    if report.dry_run:
        text = f"dry run: {expired} backup(s) would be removed, {totals.get('kept', 0)} kept"
    else:
        text = (
            f"{totals.get('removed', 0)} backup(s) removed, {totals.get('kept', 0)} kept, "
            f"{totals.get('leftovers_removed', 0)} unfinished backup(s) cleaned"
        )
    if totals.get("locked"):
        text += f", {totals['locked']} skipped under object lock"
    removed = sum(1 for temp in report.temporaries if temp["action"] == "removed")
    if removed:
        text += f", {removed} temporary file(s) of killed writes removed"
    if report.blobs:
        blobs = report.blobs
        text += (
            f"; blobs: {blobs['deleted']} deleted ({human_size(blobs['deleted_bytes'])})"
            if blobs.get("ran")
            else f"; {blobs['note']}"
        )
    return text


COMMANDS = [prune]
