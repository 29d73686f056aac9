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
import shutil

import psycopg
import pytest

from tests.runbooks.backup_host import (
    make_backup_host,
    repository_secrets,
    second_after,
    wait_until_after,
    write_secrets,
)
from tests.runbooks.conftest import SYSTEM_PATH
from tests.runbooks.markdown import load_runbook
from tests.runbooks.runner import RunbookRun

SOURCE_SQL = """
CREATE ROLE app_owner;
CREATE TABLE orders (id int PRIMARY KEY, note text NOT NULL);
ALTER TABLE orders OWNER TO app_owner;
INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 3) g;
"""


def rows(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id, note FROM orders ORDER BY id").fetchall()


@pytest.fixture
def repository(tmp_path, s3_server, s3_bucket, pg_cluster_factory):
    """Three dumps of ``app`` (3 rows; 5 rows; after the damage) in ``s3://BUCKET/prod``;
    the second one's id, the time whose state it holds, and its rows."""
    source = pg_cluster_factory()
    source.create_database("app")
    source.execute(SOURCE_SQL, dbname="app")
    targets = {"app": {"dsn": source.dsn("app"), "databases": ["app"]}}
    host = make_backup_host(tmp_path, s3_server, s3_bucket, postgres=targets)
    host.run("backup", "postgres", "app")
    source.execute("INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(4, 5) g", dbname="app")  # fmt: skip
    chosen = host.json("backup", "postgres", "app")
    expected = rows(source.dsn("app"))
    when = second_after(chosen["recovery_point"])
    source.execute("DELETE FROM orders WHERE id > 1", dbname="app")  # the damage
    wait_until_after(when + dt.timedelta(seconds=1))
    host.run("backup", "postgres", "app")
    return f"app/{chosen['backup_id']}", when, expected


def test_the_restore_runbook_on_a_fresh_host(
    repository, release_dist, tmp_path, s3_server, s3_bucket, pg_cluster_factory, shell_factory
):
    backup_id, when, expected = repository
    new_server = pg_cluster_factory()  # none of the source's roles
    release = tmp_path / "drbackup-release"
    shutil.copytree(release_dist, release)
    values = {
        "RELEASE_DIR": str(release),
        "VENV": str(tmp_path / "opt" / "drbackup"),
        "WHEEL": next(release.glob("drbackup-*.whl")).name,
        "CONFIG": str(tmp_path / "restore.yaml"),
        "REPO_URL": f"s3://{s3_bucket}/prod",
        "S3_ENDPOINT": s3_server.endpoint_url,
        "SECRETS": str(write_secrets(tmp_path / "secrets", repository_secrets(s3_server))),
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
