"""``restore postgres TARGET --into-dir DIR``: options to a recovery target, and the output."""

from __future__ import annotations

import click

from drbackup.cli.render import echo_json, human_size, reporter, user_time
from drbackup.errors import UsageError


def recovery_target(pit, lsn, xid, restore_point, latest, timeline, exclusive):
    """The :class:`RecoveryTarget` the options name (``--latest`` when none does)."""
    from drbackup.sources.postgres.recovery import LATEST, LSN, NAME, XID, RecoveryTarget
    from drbackup.sources.postgres.wal import parse_lsn

    given = [x for x in (pit, lsn, xid, restore_point) if x is not None] + (
        [True] if latest else []
    )
    if len(given) > 1:
        raise UsageError("give one of --point-in-time, --lsn, --xid, --restore-point or --latest")
    common = {"inclusive": not exclusive, "timeline": timeline}
    if pit is not None:
        return RecoveryTarget.at_time(user_time(pit), **common)
    if lsn is not None:
        try:
            return RecoveryTarget(LSN, lsn=parse_lsn(lsn), **common)
        except ValueError as exc:
            raise UsageError(str(exc), hint="an LSN looks like 0/16B374D8") from None
    if xid is not None:
        return RecoveryTarget(XID, xid=xid, **common)
    if restore_point is not None:
        return RecoveryTarget(NAME, name=restore_point, **common)
    return RecoveryTarget(LATEST, timeline=timeline)


def run(state, target, into_dir, point, *, backup_id, start, as_json, quiet=False) -> None:
    from drbackup.actions.restore_physical import restore_physical

    app = state.app
    restore = restore_physical(
        app,
        target,
        into_dir,
        point,
        start=start,
        backup_id=backup_id,
        detach=True,
        config_path=state.config_path,
        progress=reporter(app, quiet=quiet, as_json=as_json),
    )
    if as_json:
        echo_json(_record(restore))
        return
    if not quiet:
        _echo(restore)


def _record(restore) -> dict:
    server = restore.server
    return {
        "target": restore.target,
        "backup_id": restore.choice.manifest.backup_id,
        "selection": restore.choice.note,
        "data_dir": str(restore.data_dir),
        "files": restore.files,
        "bytes": restore.bytes,
        "phases_s": {k: round(v, 3) for k, v in restore.phases.items()},
        "restore_command": restore.restore_command,
        "outcome": restore.outcome.to_dict() if restore.outcome else None,
        "server": {
            "port": server.port,
            "socket_dir": str(server.socket_dir),
            "log": str(server.log_path),
            "dsn": server.dsn(),
        }
        if server
        else None,
    }


def _echo(restore) -> None:
    click.echo(f"using {restore.choice.note}")
    click.echo(
        f"restored {restore.files} files ({human_size(restore.bytes)}) into {restore.data_dir} "
        f"in {restore.phases.get('fetch_extract_s', 0):.1f}s"
    )
    outcome, server = restore.outcome, restore.server
    if server is None:
        click.echo(
            f"recovery settings written (postgresql.auto.conf, recovery.signal): starting the "
            f"server recovers to {restore.point.describe()}, fetching WAL with: "
            f"{restore.restore_command}"
        )
        return
    click.echo(f"recovery reached {outcome.target}: {outcome.stop or 'end of the archived WAL'}")
    click.echo(f"  {outcome.describe()} (recovery took {restore.phases.get('recovery_s', 0):.1f}s)")
    click.echo(
        f"server running on port {server.port}, socket directory {server.socket_dir}, "
        f"log {server.log_path}"
    )
    click.echo(f'  connect: psql "{server.dsn()}"')
    click.echo(f"  stop it: {stop_command(server, restore.data_dir)}")


def stop_command(server, data_dir) -> str:
    """The command that stops the restored server, ready to paste: pg_ctl by its full path
    (Debian keeps it off PATH), run as the server's user when that is not this one."""
    as_user = f"runuser -u {server.run_as.user} -- " if server.run_as else ""
    return f"{as_user}{server.bin_dir / 'pg_ctl'} -D {data_dir} stop -m fast"
