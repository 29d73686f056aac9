"""``demo``: the quick start — a throwaway PostgreSQL, a local repository, a full cycle.

Backs up a sample database, verifies the backup, restores it into a new database, and
runs a drill that proves a restore equals the backup (fingerprint, keys, sequences, RTO).
The repository, catalog and config stay in the demo directory for the user to explore.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drbackup.actions.backup_postgres import backup_target
from drbackup.actions.context import AppContext
from drbackup.actions.drill import run_drill
from drbackup.actions.repository import init_repository, verify_backup
from drbackup.actions.restore_postgres import restore_postgres
from drbackup.config import load_config
from drbackup.drill.plan import default_plan
from drbackup.errors import CheckFailedError
from drbackup.units import human_size

CONFIG_TEMPLATE = """# drbackup demo configuration (written by `drbackup demo`)
repository:
  url: {repo}
  encryption:
    passphrase_file: {passphrase_file}
catalog: sqlite:///{catalog}
postgres:
  demo:
    dsn: {dsn}
    databases: [shop]
    rpo: 24h
    rto: 15m
"""


def write_demo_config(directory: Path, dsn: str) -> Path:
    """Write the demo config (and a random passphrase file, mode 0600) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    passphrase_file = directory / "passphrase"
    if not passphrase_file.exists():
        fd = os.open(passphrase_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(24) + "\n")
    config = directory / "drbackup.yaml"
    config.write_text(
        CONFIG_TEMPLATE.format(
            repo=directory / "repo",
            passphrase_file=passphrase_file,
            catalog=directory / "catalog.db",
            dsn=dsn,
        )
    )
    return config


def start_demo_cluster(keep: bool = False):
    """A throwaway cluster in a temp directory (the server's user must be able to reach it;
    a checkout under /root is not).  It stops when this process exits unless ``keep``."""
    from drbackup.sources.postgres.cluster import EphemeralCluster

    return EphemeralCluster(None, fast=True, detach=keep).start()


def load_sample(cluster) -> None:
    """The sample database ``shop`` (sources/postgres/sample.py) in the demo cluster."""
    from drbackup.sources.postgres.sample import load_sample_database

    load_sample_database(cluster, "shop")


@dataclass
class DemoRun:
    """What the demo made, for the lines that tell the user where to look."""

    config_path: Path
    backup_id: str
    warnings: list[str] = field(default_factory=list)  # the demo AppContext's


def run_demo(directory: Path, keep_server: bool, say: Callable[[str], None]) -> DemoRun:
    """The whole cycle on a throwaway server: each step reported through ``say``.

    Raises CheckFailedError when the drill failed; the server is stopped (unless
    ``keep_server``) whatever happened.
    """
    cluster = start_demo_cluster(keep_server)
    try:
        major = cluster.server_version_num // 10000
        say(f"1. started a throwaway PostgreSQL {major} on {cluster.host}:{cluster.port}")
        load_sample(cluster)
        say("2. loaded a sample database 'shop' (customers, orders, order_items with foreign keys)")
        config_path = write_demo_config(directory, cluster.dsn("shop"))
        app = AppContext(load_config(str(config_path)))
        say(f"3. wrote {config_path} (local repository, SQLite catalog, random passphrase)")
        backup_id = _cycle(app, directory, cluster, say)
    finally:
        if keep_server:
            say(f"the server keeps running: psql '{cluster.dsn('shop')}'")
        else:
            cluster.destroy()
    return DemoRun(config_path, backup_id, app.warnings)


def _cycle(app: AppContext, directory: Path, cluster, say: Callable[[str], None]) -> str:
    """Steps 4 to 8: repository, backup, verify, restore, drill; the backup's id."""
    if not (directory / "repo" / "drbackup.repo").exists():
        say(f"4. created an encrypted repository at {init_repository(app).url}")
    else:
        say(f"4. using the existing repository at {app.storage.url}")
    m = backup_target(app, "demo")
    say(
        f"5. backup demo/{m.backup_id}: {human_size(m.size)} dumped, "
        f"{human_size(m.stored_size)} stored (zstd + AES-256-GCM)"
    )
    v = verify_backup(app, m.backup_id)
    say(f"6. verified every object: {human_size(v.bytes_read)} authenticated and checksummed")
    into = cluster.dsn("shop_restored")
    r = restore_postgres(app, "demo", into, backup_id=m.backup_id, create=True, force=True)
    say(f"7. restored into shop_restored in {r.run.elapsed_s:.1f}s")
    drill = run_drill(app, default_plan(["demo"], app.config)).record
    checks = drill.checks
    passed = sum(1 for c in checks if c.status != "fail")
    where = _SCRATCH_PLACES[drill.targets[0].scratch.kind]
    say(
        f"8. drill {drill.drill_id}: restored into a scratch database {where} "
        f"and checked it, {passed} of {len(checks)} checks passed:"
    )
    for check in checks:
        say(f"     {check.status:<4}  {check.name:<14} {check.summary}")
    if drill.failed:
        raise CheckFailedError(f"drill {drill.drill_id} failed")
    return m.backup_id


# Where the drill restored (report: targets[].scratch.kind).  Without a scratch server the
# demo's drill starts a private cluster, as any drill does (docs/drills.md).
_SCRATCH_PLACES = {
    "ephemeral": "on a private cluster",
    "server": "on the scratch server",
    "source": "on the demo server",
}
