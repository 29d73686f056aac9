"""docs/operations.md's restore runbook, run as written on a fresh restore host.

The host: the wheel ``scripts/release`` builds, installed by the runbook's own commands into
a new venv; a PATH without this checkout; an empty home (no catalog, no config, no
``~/.aws``); only the repository location, its credentials and the passphrase, as files.
The repository (on the S3 test server) holds three hourly dumps of ``app``, the last one
taken after the damage; the runbook restores the state of 01:30 (the second dump) into
a new server that lacks the dump's roles, and exports it for plain ``pg_restore``.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess

import psycopg
import pytest
import yaml

from tests.runbooks.conftest import CHECKOUT_BIN, SYSTEM_PATH
from tests.runbooks.markdown import load_runbook
from tests.runbooks.runner import RunbookRun

PASSPHRASE = "runbook passphrase: correct horse battery staple"
SOURCE_SQL = """
CREATE ROLE app_owner;
CREATE TABLE orders (id int PRIMARY KEY, note text NOT NULL);
ALTER TABLE orders OWNER TO app_owner;
INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 3) g;
"""


def write_secrets(directory, s3_server) -> None:
    """The files a restore host gets from the vault: S3 keys and the passphrase."""
    directory.mkdir()
    for name, value in {
        "ak": s3_server.access_key_id,
        "sk": s3_server.secret_access_key,
        "drbackup-passphrase": PASSPHRASE,
    }.items():
        (directory / name).write_text(value + "\n")
        (directory / name).chmod(0o600)


def backup(config, *args: str) -> dict:
    """``drbackup backup ...`` with this checkout's drbackup (the backup host): its record."""
    argv = [f"{CHECKOUT_BIN}/drbackup", "-c", str(config), "backup", *args, "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def wait_until_after(moment: dt.datetime) -> None:
    """Poll the clock until it is past ``moment`` (backups land in distinct seconds)."""
    while dt.datetime.now(dt.UTC) <= moment:
        pass


def rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, note FROM orders ORDER BY id").fetchall()


@pytest.fixture
def repository(tmp_path, s3_server, s3_bucket, pg_cluster_factory, monkeypatch):
    """Three dumps of ``app`` (3 rows; 5 rows; after the damage) in ``s3://BUCKET/prod``;
    the second one's id and the time whose state it holds."""
    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path / "backup-host"))
    source = pg_cluster_factory()
    source.create_database("app")
    source.execute(SOURCE_SQL, dbname="app")
    write_secrets(tmp_path / "backup-secrets", s3_server)
    config = tmp_path / "backup-host.yaml"
    secrets = tmp_path / "backup-secrets"
    config.write_text(yaml.safe_dump({
        "repository": {
            "url": f"s3://{s3_bucket}/prod",
            "s3": {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region,
                   "access_key_id_file": str(secrets / "ak"),
                   "secret_access_key_file": str(secrets / "sk")},
            "encryption": {"passphrase_file": str(secrets / "drbackup-passphrase")},
        },
        "postgres": {"app": {"dsn": source.dsn("app"), "databases": ["app"]}},
    }))  # fmt: skip
    init = subprocess.run(
        [f"{CHECKOUT_BIN}/drbackup", "-c", str(config), "init", "--scrypt-log-n", "10"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    backup(config, "postgres", "app")
    source.execute("INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(4, 5) g", dbname="app")  # fmt: skip
    chosen = backup(config, "postgres", "app")
    expected = rows(source.dsn("app"))
    when = dt.datetime.fromisoformat(chosen["recovery_point"]).replace(microsecond=0)
    when += dt.timedelta(seconds=1)  # the second after it: its state is still the dump's
    source.execute("DELETE FROM orders WHERE id > 1", dbname="app")  # the damage
    wait_until_after(when + dt.timedelta(seconds=1))
    backup(config, "postgres", "app")
    return s3_bucket, f"app/{chosen['backup_id']}", when, expected


def test_the_restore_runbook_on_a_fresh_host(
    repository, release_dist, tmp_path, s3_server, pg_cluster_factory, shell_factory
):
    bucket, backup_id, when, expected = repository
    new_server = pg_cluster_factory()  # none of the source's roles
    release = tmp_path / "drbackup-release"
    shutil.copytree(release_dist, release)
    write_secrets(tmp_path / "secrets", s3_server)
    wheel = next(release.glob("drbackup-*.whl")).name
    values = {
        "RELEASE_DIR": str(release),
        "VENV": str(tmp_path / "opt" / "drbackup"),
        "WHEEL": wheel,
        "CONFIG": str(tmp_path / "restore.yaml"),
        "REPO_URL": f"s3://{bucket}/prod",
        "S3_ENDPOINT": s3_server.endpoint_url,
        "SECRETS": str(tmp_path / "secrets"),
        "BACKUP": backup_id,
        "WHEN": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "NEW_SERVER": new_server.dsn("postgres").rsplit("/", 1)[0],
    }
    shell = shell_factory(tmp_path, path=SYSTEM_PATH)  # nothing of this checkout
    run = RunbookRun(load_runbook("pg-restore", ["docs/operations.md"]), values, shell)
    run.run_rest()

    assert rows(new_server.dsn("app")) == expected
    assert rows(new_server.dsn("app_export")) == expected
    owner = new_server.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'", dbname="app")  # fmt: skip
    assert owner == [("app_owner",)]  # --with-globals made the role
    assert shell.env["PATH"].startswith(values["VENV"] + "/bin:")
    assert not (release / "app.dump").exists()  # shredded, as the runbook says
