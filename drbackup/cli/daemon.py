"""``drbackup daemon [--schedules DIR] [--listen HOST:PORT] [--no-status-page] [--once JOB]``."""

from __future__ import annotations

import click

from drbackup.errors import DrbackupError
from drbackup.scheduler.http import DEFAULT_LISTEN, LISTEN_ENV


@click.command("daemon")
@click.option(
    "--schedules",
    "schedules_dir",
    envvar="DRBACKUP_SCHEDULES",
    default="schedules",
    show_default=True,
    metavar="DIR",
    help="Directory of schedule files (*.yaml). Env DRBACKUP_SCHEDULES.",
)
@click.option(
    "--listen",
    envvar=LISTEN_ENV,
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="Address of /healthz, /readyz, /metrics and the status page; 'off' disables it, "
    "port 0 picks one. Env DRBACKUP_LISTEN (the container image sets 0.0.0.0:9612).",
)
@click.option(
    "--status-page/--no-status-page",
    envvar="DRBACKUP_STATUS_PAGE",
    default=True,
    show_default=True,
    help="Serve the read-only status page at / (targets, findings, drill checks and "
    "their evidence) beside the probes and metrics. Env DRBACKUP_STATUS_PAGE.",
)
@click.option(
    "--once",
    "once",
    metavar="JOB",
    help="Run JOB now, once, and exit (0 ok, 1 failed); no HTTP endpoint.",
)
@click.option(
    "--grace",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds SIGTERM lets in-flight runs finish before cancelling them.",
)
@click.option("--check", is_flag=True, help="Validate the schedules and exit.")
@click.pass_obj
def daemon(
    state,
    schedules_dir: str,
    listen: str,
    status_page: bool,
    once: str | None,
    grace: float,
    check: bool,
):
    """Run scheduled backups, snapshots, drills, prunes and reports.

    Logs are JSON lines on stderr. SIGTERM stops gracefully, SIGHUP reloads the
    schedules. See docs/daemon.md.
    """
    from drbackup.scheduler.daemon import Daemon
    from drbackup.scheduler.logs import setup_logging

    listen_at = None if once or check or listen.lower() in ("off", "none", "") else listen
    service = Daemon(
        state.app.config, schedules_dir, listen=listen_at, grace=grace, status_page=status_page
    )
    if check:
        schedule = service.load()
        for job in schedule.jobs:
            targets = ", ".join(job.targets) or "-"
            click.echo(f"{job.name}  {job.kind}  {job.spec.cron} {job.spec.timezone}  {targets}")
        return
    setup_logging()
    if once:
        status = service.run_once(once)
        if status != "ok":
            raise DrbackupError(f"job '{once}' failed", hint="the JSON log above says why")
        return
    service.serve_forever()


COMMANDS = [daemon]
