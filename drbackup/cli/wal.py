"""``drbackup wal-push`` (archive_command), ``wal-fetch`` (restore_command), and the
background process that serves them (``wal-async``, started by them, not by users)."""

from __future__ import annotations

from pathlib import Path

import click

from drbackup.cli.render import echo_json, human_size
from drbackup.errors import UsageError
from drbackup.sources.postgres.wal import format_lsn


def _postgres_target(state, target: str | None) -> str:
    """The named target, or the only postgres target when none is named."""
    if target:
        return target
    names = list(state.app.config.postgres)
    if len(names) != 1:
        raise UsageError(
            "name the target with --target",
            hint=f"postgres targets: {', '.join(names) or 'none configured'}",
        )
    return names[0]


@click.command("wal-push")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("-t", "--target", help="The postgres target (default: the only one).")
@click.pass_obj
def wal_push(state, path: str, target: str | None) -> None:
    """Archive one WAL file (archive_command = 'drbackup wal-push --target T %p').

    Exits 0 only once the file is stored in the repository (or was already, with the same
    content); another file under an archived name, or a file of another cluster, is refused.
    """
    from drbackup.actions.wal_push import wal_push as push

    name = _postgres_target(state, target)
    push(state.app, name, Path(path), config_path=state.config_path)


@click.command("wal-fetch")
@click.argument("name")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("-t", "--target", help="The postgres target (default: the only one).")
@click.option(
    "--spool",
    "spool",
    type=click.Path(file_okay=False),
    help="Read-ahead directory (default: <wal.spool_dir>/<target>/fetch).",
)
@click.option("--cluster", help="Cluster to read (pg<major>-<system id>; default: current).")
@click.option(
    "--no-spawn",
    is_flag=True,
    help="Only take files from a fetcher that serves --spool (a restore's own server).",
)
@click.pass_obj
def wal_fetch(state, name, path, target, spool, cluster, no_spawn) -> None:
    """Restore one WAL file (restore_command = 'drbackup wal-fetch --target T %f %p').

    Exit status 0: the file is at PATH; 1 without a message: the archive does not have it
    (PostgreSQL ends recovery there); 1 or more with a message: it failed.
    """
    from drbackup.actions.wal_fetch import FetchRequest, default_fetch_spool
    from drbackup.actions.wal_fetch import wal_fetch as fetch
    from drbackup.sources.postgres.wal import data_directory_major

    hosted = no_spawn and spool is not None and target is not None
    app = None if hosted else state.app  # a restore's own server needs no config or key
    chosen = target if hosted else _postgres_target(state, target)
    spool_dir = Path(spool) if spool else default_fetch_spool(app, chosen)
    # PostgreSQL runs restore_command in its data directory: PG_VERSION there says its major.
    request = FetchRequest(
        chosen,
        name,
        Path(path),
        spool_dir,
        cluster,
        spawn=not no_spawn,
        server_major=data_directory_major(Path.cwd()),
    )
    if not fetch(app, request, config_path=state.config_path):
        click.get_current_context().exit(1)


@click.group("wal-async")
def wal_async() -> None:
    """(internal) The background processes wal-push and wal-fetch start."""


@wal_async.command("push")
@click.option("-t", "--target", required=True)
@click.option("--pg-wal", required=True, type=click.Path(file_okay=False, exists=True))
@click.pass_obj
def async_push(state, target: str, pg_wal: str) -> None:
    """Upload the server's ready WAL files until idle."""
    from drbackup.actions.wal_push import run_pusher

    run_pusher(state.app, target, Path(pg_wal))


@wal_async.command("fetch")
@click.option("-t", "--target", required=True)
@click.option("--spool", required=True, type=click.Path(file_okay=False))
@click.option("--cluster")
@click.pass_obj
def async_fetch(state, target: str, spool: str, cluster: str | None) -> None:
    """Keep the requested WAL file and the next ones in the spool until idle."""
    from drbackup.actions.wal_fetch import run_fetcher

    run_fetcher(state.app, target, Path(spool), cluster)


@click.command("mark")
@click.argument("name")
@click.option("-t", "--target", help="The postgres target (default: the only one).")
@click.option(
    "--no-switch",
    is_flag=True,
    help="Do not complete the current WAL segment (the point is archived when it fills).",
)
@click.pass_obj
def mark(state, name: str, target: str | None, no_switch: bool) -> None:
    """Create a named restore point (restore --restore-point NAME recovers to it)."""
    from drbackup.actions.wal_admin import mark_restore_point

    chosen = _postgres_target(state, target)
    made = mark_restore_point(state.app, chosen, name, switch=not no_switch)
    point = made.point
    click.echo(
        f"restore point {name!r} of {chosen} at {format_lsn(point.lsn)} "
        f"({point.time.isoformat()}, in WAL segment {point.segment}, cluster {made.cluster})"
    )


@click.group("wal")
def wal() -> None:
    """The WAL archive: continuity, the restorable window, registered clusters."""


@wal.command("register")
@click.argument("target")
@click.pass_obj
def register(state, target: str) -> None:
    """Archive the cluster now at TARGET's dsn (after initdb or pg_upgrade re-created it)."""
    from drbackup.actions.wal_admin import register_cluster

    registration = register_cluster(state.app, target)
    click.echo(
        f"target {target} archives cluster {registration.cluster} (since {registration.registered})"
    )


@wal.command("check")
@click.argument("target")
@click.option("--no-server", is_flag=True, help="Do not ask the server for the archive lag.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def check(state, target: str, no_server: bool, as_json: bool) -> None:
    """Find gaps and timeline breaks; show the restorable window and the archive lag.

    Exit status 3 when the archive has a gap or a timeline break.
    """
    from drbackup.actions.repository import damage_found
    from drbackup.actions.wal_check import check_wal

    if not no_server:  # the repository alone answers without it: a restore host's config
        state.app.config.target(target)
    status = check_wal(state.app, target, server=not no_server)
    if as_json:
        echo_json(status.to_dict())
    else:
        _echo_status(status)
    if status.problems:
        raise damage_found(
            f"the WAL archive of {target} has {len(status.problems)} problem(s):",
            status.problems,
            hint="restores across a gap fail: take a base backup now (a new chain starts there)",
        )


@wal.command("stream")
@click.argument("target")
@click.pass_obj
def stream(state, target: str) -> None:
    """Stream TARGET's WAL into the repository until SIGINT or SIGTERM.

    What the daemon does for every target whose WAL is streamed (wal.capture): runs
    pg_receivewal through the target's replication slot (created if missing), uploads each
    completed segment and, every wal.flush_interval, the segment being filled.  Events are
    written to stderr, one per line.
    """
    import signal
    import threading

    from drbackup.actions.wal_stream import WalStreamer

    state.app.config.target(target)
    stop = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: stop.set())
    try:
        WalStreamer(state.app, target, on_event=_echo_event).run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _echo_event(event: str, level: int = 20, **fields) -> None:
    from datetime import UTC, datetime

    when = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    text = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
    click.echo(f"{when} {event} {text}", err=True)


def _echo_status(status) -> None:
    if status.cluster is None:
        click.echo(f"target {status.target} archives no WAL")
        return
    click.echo(
        f"target {status.target}: cluster {status.cluster}, {status.base_backups} base backup(s)"
    )
    for timeline, (first, last, count) in sorted(status.timelines.items()):
        click.echo(f"  timeline {timeline}: {first} .. {last} ({count} segments)")
    if status.oldest and status.newest:
        click.echo(
            f"restorable window: {status.oldest.isoformat()} .. {status.newest.isoformat()} "
            f"(newest commit {status.newest_commit.isoformat()}, in {status.newest_segment})"
        )
    elif status.restorable:
        click.echo(
            "restorable window: the end of the archived WAL (no commit since the base backup)"
        )
    else:
        click.echo("restorable window: none (no base backup with complete WAL)")
    if status.lag_seconds is not None:
        click.echo(
            f"archive lag: {status.lag_seconds:.0f}s ({human_size(status.lag_bytes or 0)} not archived)"
        )
    elif status.lag_error:
        click.echo(f"archive lag: unknown ({status.lag_error})")
    click.echo(f"gaps: {len(status.gaps)}, timeline breaks: {len(status.breaks)}")


COMMANDS = [wal_push, wal_fetch, wal_async, mark, wal]
