"""``drbackup report [--format text|json|markdown|prometheus|nagios|html] [-o FILE] [--notify]``."""

from __future__ import annotations

import click

from drbackup.cli.targets import all_option, chosen_targets, old_target_option
from drbackup.report.health import Status

REPORT_EPILOG = (
    "\b\nExit codes (nagios convention; unlike other commands):\n"
    + "\n".join(f"  {s.value:>3}  {s.name}" for s in Status)
    + "\n  other  drbackup's usual codes for errors: 2 bad config or usage, 1 a failed"
    + "\n         --notify (after the report was printed)"
)


@click.command("report", epilog=REPORT_EPILOG)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "markdown", "prometheus", "nagios", "html"]),
    default="text",
    show_default=True,
    help="prometheus: for node-exporter's textfile collector; nagios: a monitoring "
    "plugin's state line and perfdata; html: the status page as one self-contained file.",
)
@click.option(
    "-o",
    "--output",
    metavar="FILE",
    help="Write the report to FILE atomically instead of stdout.",
)
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@all_option("target (the default)")
@old_target_option("--target")
@click.option(
    "--notify",
    type=click.Choice(["never", "problems", "always"]),
    default=None,
    flag_value="always",
    is_flag=False,
    help="Send the report to 'notifications:' destinations (bare --notify: always).",
)
@click.pass_context
def report(ctx: click.Context, fmt, output, targets, all_targets, old_targets, notify):
    """Health of TARGET(s) (default: every target): backup age vs RPO, drills, restore
    points, failed runs.

    OK, WARNING (no passing drill in 35 days, failed runs in 24h), CRITICAL (backup
    older than the RPO, failed last drill), UNKNOWN (repository unreachable). The exit
    code is the status: for cron and monitoring plugins.
    """
    from drbackup.actions.report import report_and_notify

    names = chosen_targets(targets, all_targets, old_targets)
    result = report_and_notify(
        ctx.obj.app,
        targets=names or None,
        fmt=fmt,
        output=output,
        notify=notify,
        require_destinations=bool(notify),
        show=lambda text: click.echo(text, nl=False),
    )  # NotifyError (exit 1) after the report was shown
    ctx.exit(result.exit_code)


COMMANDS = [report]
