"""``demo``: the quick start — a throwaway PostgreSQL, a local repository, a full cycle.

Backs up a sample database, verifies the backup, restores it into a new database, and
runs a drill that proves a restore equals the backup (fingerprint, keys, sequences, RTO).
The repository, catalog and config stay in the demo directory for the user to explore.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

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
