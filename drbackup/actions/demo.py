"""``demo``: the quick start — a throwaway PostgreSQL, a local repository, a full cycle.

Backs up a sample database, verifies the backup, restores it into a new database, and
runs a drill that proves a restore equals the backup (fingerprint, keys, sequences, RTO).
The repository, catalog and config stay in the demo directory for the user to explore.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SAMPLE_SQL = """
CREATE TABLE customers (id bigserial PRIMARY KEY, email text UNIQUE NOT NULL, name text NOT NULL,
                        created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers(id),
                     placed_at timestamptz NOT NULL, total numeric(12,2) NOT NULL, notes jsonb);
CREATE TABLE order_items (order_id bigint NOT NULL REFERENCES orders(id), line int NOT NULL,
                          sku text NOT NULL, qty int NOT NULL CHECK (qty > 0), price numeric(10,2) NOT NULL,
                          PRIMARY KEY (order_id, line));
INSERT INTO customers (email, name, created_at)
  SELECT 'user' || g || '@example.com', md5(g::text), timestamptz '2025-01-01' + g * interval '7 minutes'
  FROM generate_series(1, 20000) g;
INSERT INTO orders (customer_id, placed_at, total, notes)
  SELECT 1 + (g * 7919) % 20000, timestamptz '2025-06-01' + g * interval '3 minutes', (g % 997) + 0.99,
         jsonb_build_object('channel', (ARRAY['web','app','store'])[1 + g % 3], 'gift', g % 11 = 0)
  FROM generate_series(1, 60000) g;
INSERT INTO order_items SELECT o, l, 'SKU-' || ((o * l) % 5000), 1 + (o + l) % 4, ((o * l) % 200) + 0.5
  FROM generate_series(1, 60000) o, generate_series(1, 3) l;
"""

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
    cluster.create_database("shop")
    cluster.execute(SAMPLE_SQL, dbname="shop")
