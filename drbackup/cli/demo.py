"""``drbackup demo``: the README quick start."""

from __future__ import annotations

from pathlib import Path

import click

from drbackup.cli.render import human_size


@click.command("demo")
@click.option(
    "--dir",
    "directory",
    default=".drbackup-demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Where the demo keeps its repository and config.",
)
@click.option("--keep-server", is_flag=True, help="Leave the throwaway PostgreSQL running.")
def demo(directory: str, keep_server: bool) -> None:
    """Back up, verify, restore and drill a sample database on a throwaway PostgreSQL."""
    from drbackup.actions import demo as steps
    from drbackup.actions.backup_postgres import backup_target
    from drbackup.actions.context import AppContext
    from drbackup.actions.drill import run_drill
    from drbackup.actions.repository import init_repository, verify_backup
    from drbackup.actions.restore_postgres import restore_postgres
    from drbackup.config import load_config
    from drbackup.drill.plan import default_plan
    from drbackup.errors import CheckFailedError

    root = Path(directory).absolute()
    cluster = steps.start_demo_cluster(keep_server)
    try:
        click.echo(
            f"1. started a throwaway PostgreSQL {cluster.server_version_num // 10000} on "
            f"{cluster.host}:{cluster.port}"
        )
        steps.load_sample(cluster)
        click.echo(
            "2. loaded a sample database 'shop' (customers, orders, order_items with foreign keys)"
        )
        config_path = steps.write_demo_config(root, cluster.dsn("shop"))
        app = AppContext(load_config(str(config_path)))
        click.echo(f"3. wrote {config_path} (local repository, SQLite catalog, random passphrase)")
        if not (root / "repo" / "drbackup.repo").exists():
            repo = init_repository(app)
            click.echo(f"4. created an encrypted repository at {repo.url}")
        else:
            click.echo(f"4. using the existing repository at {app.storage.url}")
        m = backup_target(app, "demo")
        click.echo(
            f"5. backup demo/{m.backup_id}: {human_size(m.size)} dumped, "
            f"{human_size(m.stored_size)} stored (zstd + AES-256-GCM)"
        )
        v = verify_backup(app, m.backup_id)
        click.echo(
            f"6. verified every object: {human_size(v.bytes_read)} authenticated and checksummed"
        )
        into = cluster.dsn("shop_restored")
        r = restore_postgres(app, "demo", into, backup_id=m.backup_id, create=True, force=True)
        click.echo(f"7. restored into shop_restored in {r.run.elapsed_s:.1f}s")
        drill = run_drill(app, default_plan(["demo"], app.config))
        checks = drill.report["checks"]
        passed = sum(1 for c in checks if c["status"] != "fail")
        where = _SCRATCH_PLACES[drill.report["targets"][0]["scratch"]["kind"]]
        click.echo(
            f"8. drill {drill.report['drill_id']}: restored into a scratch database {where} "
            f"and checked it, {passed} of {len(checks)} checks passed:"
        )
        for check in checks:
            click.echo(f"     {check['status']:<4}  {check['name']:<14} {check['summary']}")
        if drill.failed:
            raise CheckFailedError(f"drill {drill.report['drill_id']} failed")
    finally:
        if keep_server:
            click.echo(f"the server keeps running: psql '{cluster.dsn('shop')}'")
        else:
            cluster.destroy()
    click.echo("\nexplore the repository (the throwaway server is gone; the backups stay):")
    click.echo(f"  .venv/bin/drbackup -c {config_path} list")
    click.echo(f"  .venv/bin/drbackup -c {config_path} show {m.backup_id}")
    click.echo(f"  .venv/bin/drbackup -c {config_path} verify {m.backup_id}")
    click.echo(f"  .venv/bin/drbackup -c {config_path} drill history")
    click.echo(f"  .venv/bin/drbackup -c {config_path} report")


# Where the drill restored (report: targets[].scratch.kind).  Without a scratch server the
# demo's drill starts a private cluster, as any drill does (docs/drills.md).
_SCRATCH_PLACES = {
    "ephemeral": "on a private cluster",
    "server": "on the scratch server",
    "source": "on the demo server",
}

COMMANDS = [demo]
