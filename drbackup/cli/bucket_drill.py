"""``drbackup drill-bucket TARGET [--snapshot ID] [--json]``: an alias of ``drill run TARGET``.

It runs the same drill (``actions.drill.run_drill`` with the default plan of one minio
target), so the signed report is stored and recorded like any drill's; only the printed
summary and ``--json`` keep the forms this command always had (``--json`` adds ``drill_id``;
the full signed report is in the repository under ``reports/TARGET/DRILL_ID``).
"""

from __future__ import annotations

import click

from drbackup.actions.drill import run_drill
from drbackup.actions.snapshot_minio import minio_target
from drbackup.cli.render import echo_json
from drbackup.drill.plan import BackupChoice, default_plan
from drbackup.drill.report import object_details
from drbackup.errors import CheckFailedError

MARKS = {"pass": "ok  ", "warn": "WARN", "fail": "FAIL"}


@click.command("drill-bucket")
@click.argument("target")
@click.option("--snapshot", "snapshot_id", metavar="ID", help="Snapshot id (default: latest).")
@click.option(
    "--workers", default=8, show_default=True, type=click.IntRange(1, 64), help="Objects at once."
)
@click.option("--json", "as_json", is_flag=True, help="Print the drill result as JSON.")
@click.pass_obj
def drill_bucket_command(state, target: str, snapshot_id, workers: int, as_json: bool) -> None:
    """Restore a bucket snapshot into a scratch bucket and verify every object.

    Same as 'drbackup drill run TARGET'.  Exit code 3 when a check fails.
    The scratch bucket (drbackup-drill-...) is removed.
    """
    app = state.app
    minio_target(app, target)  # a UsageError for a postgres target, as before
    backup = BackupChoice("id", backup_id=snapshot_id) if snapshot_id else None
    plan = default_plan([target], app.config, backup=backup)
    result = run_drill(app, plan, bucket_workers=workers)
    report = result.record
    info = report.targets[0]
    if as_json:
        echo_json(
            {
                "drill_id": report.drill_id,
                "target": target,
                "backup_id": info.backup_id,
                "recovery_point": info.recovery_point,
                "started_at": report.started_at.isoformat(),
                "elapsed_s": report.elapsed_s,
                "status": report.status,
                "scratch_buckets": [b.scratch_bucket for b in info.buckets or []],
                "stale_scratch_removed": info.stale_scratch_removed,
                "checks": [c.to_dict() for c in report.checks],
            }
        )
    else:
        click.echo(f"bucket drill of {target}/{info.backup_id}: {report.status}")
        for check in report.checks:
            click.echo(f"  {MARKS[check.status]}  {check.name:<9} {check.summary}")
            for detail in object_details(check):  # the summary counts; these name objects
                click.echo(f"{' ' * 17}{detail}")
    if result.failed:
        failed = report.failed_checks()
        names = ", ".join(sorted({c.name for c in failed}))
        raise CheckFailedError(
            f"bucket drill of {target} failed: {len(failed)} check(s) failed ({names})"
        )


COMMANDS = [drill_bucket_command]
