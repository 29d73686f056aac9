"""The container image as users run it: built with scripts/image, then its ``drbackup`` (the
image's non-root user, PostgreSQL 17 tools) against the host's PostgreSQL (the test cluster,
an older major) and the S3 test server, both on the host's loopback through host networking.

One scenario, in order, sharing a repository: init, a backup (pg_dump 17 of a PostgreSQL 15
server), a restore into a new database, the shipped drill plan (an ephemeral PostgreSQL 17
cluster started inside the container), then the daemon: /healthz and /metrics answer from
outside the container, the image's HEALTHCHECK passes, and ``kill -TERM`` of the container
stops the daemon gracefully (exit 0) with its in-flight backup abandoned and nothing of it
left in the bucket.
"""

from __future__ import annotations

import json
import urllib.request

import psycopg
import pytest
import yaml

from tests.e2e.conftest import wait_for
from tests.fixtures.s3server import free_port
from tests.image.podman import IMAGE, IMAGE_UID, Workspace, podman, run_in_image
from tests.integration.test_daemon import TableLock

pytestmark = [pytest.mark.image, pytest.mark.pg17]  # the image's pg_dump and drill cluster
PASSPHRASE = "image test passphrase: correct horse battery staple"


@pytest.fixture
def workspace(pg_db, s3_server, s3_bucket):
    """Config, secrets (files) and the daemon's state directory, mounted as in production."""
    ws = Workspace()
    etc = ws.directory("etc", "/etc/drbackup/conf.d", read_only=True)
    secrets = ws.directory("secrets", "/run/secrets", read_only=True)
    ws.directory("state", "/var/lib/drbackup")
    schedules = ws.directory("schedules", "/etc/drbackup/schedules", read_only=True)
    for name, value in {
        "s3-access-key-id": s3_server.access_key_id,
        "s3-secret-access-key": s3_server.secret_access_key,
        "drbackup-passphrase": PASSPHRASE,
    }.items():
        (secrets / name).write_text(value + "\n")
        (secrets / name).chmod(0o600)
    config = {
        "repository": {
            "url": f"s3://{s3_bucket}/prod",
            "s3": {
                "endpoint_url": s3_server.endpoint_url,
                "region": s3_server.region,
                "access_key_id_file": "/run/secrets/s3-access-key-id",
                "secret_access_key_file": "/run/secrets/s3-secret-access-key",
            },
            "encryption": {"passphrase_file": "/run/secrets/drbackup-passphrase"},
        },
        "catalog": "sqlite:////var/lib/drbackup/catalog.db",
        "postgres": {"app": {"dsn": pg_db.dsn, "databases": [pg_db.name], "rto": "15m"}},
    }
    (etc / "drbackup.yaml").write_text(yaml.safe_dump(config))
    (schedules / "jobs.yaml").write_text(
        'jobs: {nightly: {kind: backup, targets: [app], cron: "*/2 * * * * *"}}\n'
    )
    ws.env = {"DRBACKUP_CONFIG": "/etc/drbackup/conf.d/drbackup.yaml"}
    yield ws
    ws.remove()


def drbackup(ws: Workspace, *args: str, timeout: float = 300):
    return run_in_image(ws, *args, env=ws.env, timeout=timeout)


def data_keys(s3_server, bucket: str) -> list[str]:
    """The repository's objects but leases: a run the stopping daemon abandons keeps its
    lease until prune removes it (docs/operations.md, "The commit protocol")."""
    listing = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="prod/")
    keys = (o["Key"] for o in listing.get("Contents", []))
    return sorted(key for key in keys if not key.startswith("prod/leases/"))


def test_the_image_backs_up_restores_drills_and_serves_the_daemon(
    image, workspace, pg_db, pg_cluster, s3_server, s3_bucket
):
    pg_db.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, note text NOT NULL);"
        "INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 5000) g"
    )
    who = podman("run", "--rm", "--entrypoint", "id", image, "-u", check=True)
    assert who.stdout.strip() == str(IMAGE_UID)  # never root

    init = drbackup(workspace, "init")
    assert init.returncode == 0, init.stderr
    backup = drbackup(workspace, "backup", "postgres", "app", "--json")
    assert backup.returncode == 0, backup.stderr
    record = json.loads(backup.stdout)
    server_major = pg_cluster.server_version_num // 10000
    assert record["meta"]["pg_dump_version"].startswith("17.")  # the image's newest client
    assert record["meta"]["server_version_num"] // 10000 == server_major < 17

    restored = f"restored_{pg_db.name}"
    restore = drbackup(
        workspace, "restore", "postgres", "app", "--into", pg_cluster.dsn(restored), "--create"
    )
    assert restore.returncode == 0, restore.stderr
    try:
        with psycopg.connect(pg_cluster.dsn(restored)) as conn:
            count, digest = conn.execute(
                "SELECT count(*), md5(string_agg(note, ',' ORDER BY id)) FROM orders"
            ).fetchone()
        expected = pg_db.execute("SELECT md5(string_agg(note, ',' ORDER BY id)) FROM orders")
        assert (count, digest) == (5000, expected[0][0])
    finally:
        pg_cluster.drop_database(restored)

    # the drill plan shipped in the image: an ephemeral cluster of the image's PostgreSQL
    drill = drbackup(workspace, "drill", "run", "/etc/drbackup/drills/monthly.yaml")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert "starting an ephemeral postgresql cluster in /tmp/drbackup-drill/" in drill.stderr
    assert drill.stdout.splitlines()[0].split(" - ")[1].endswith(" 0 failed"), drill.stdout

    check_daemon(workspace, pg_db, s3_server, s3_bucket, before=data_keys(s3_server, s3_bucket))


def check_daemon(ws: Workspace, pg_db, s3_server, s3_bucket, before: list[str]) -> None:
    port = free_port()
    name = f"drbackup-test-{port}"
    lock = TableLock(pg_db.dsn, "orders")  # the scheduled backup waits behind it: in flight
    try:
        podman(
            "run", "-d", "--name", name, "--network", "host", "--health-interval", "disable",
            *ws.volume_args(), *(a for k, v in ws.env.items() for a in ("-e", f"{k}={v}")),
            "-e", f"DRBACKUP_LISTEN=0.0.0.0:{port}", IMAGE,
            "daemon", "--grace", "1",
            check=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(base + "/healthz") == (200, "ok\n"), 60, "/healthz")
        code, metrics = http_get(base + "/metrics")
        assert code == 200 and "drbackup_schedules_loaded_timestamp_seconds" in metrics
        assert podman("healthcheck", "run", name).returncode == 0

        wait_for(lambda: '"event": "job_started"' in logs(name), 60, "the scheduled backup")
        wait_for(lambda: lock.waiters() >= 1, 60, "the backup to wait on the table lock")
        podman("kill", "--signal", "TERM", name, check=True)
        waited = podman("wait", name, timeout=60, check=True)
    finally:
        lock.release()
    events = [json.loads(line) for line in logs(name).splitlines() if line.startswith("{")]
    podman("rm", "-f", name)
    assert waited.stdout.strip() == "0"  # graceful: the daemon exits 0 on SIGTERM
    kinds = [e["event"] for e in events]
    assert "stopping" in kinds and kinds[-1] == "stopped", kinds
    failed = [e for e in events if e["event"] == "run_failed"]
    assert failed and failed[-1]["error"] == "abandoned: the daemon is stopping"
    assert data_keys(s3_server, s3_bucket) == before  # no manifest, no data of the run
    uploads = s3_server.client().list_multipart_uploads(Bucket=s3_bucket)
    assert uploads.get("Uploads", []) == []


def http_get(url: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except OSError:
        return None


def logs(name: str) -> str:
    proc = podman("logs", name)
    return proc.stdout + proc.stderr


def test_the_image_runs_as_non_root_with_its_defaults(image):
    """Built-in defaults: where the config and schedules live, the port, tini as PID 1."""
    inspect = json.loads(podman("image", "inspect", image, check=True).stdout)[0]
    config = inspect["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["DRBACKUP_LISTEN"] == "0.0.0.0:9612"
    assert env["DRBACKUP_SCHEDULES"] == "/etc/drbackup/schedules"
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert "9612/tcp" in config["ExposedPorts"]
    assert config["Entrypoint"][:2] == ["/usr/bin/tini", "--"]
    assert inspect["Healthcheck"]["Test"][0] == "CMD"  # kept by --format docker
    check = podman("run", "--rm", image, "daemon", "--check", check=True)
    assert "nightly-postgres  backup" in check.stdout  # the example schedules
    versions = podman(
        "run", "--rm", "--entrypoint", "bash", image, "-c",
        "/usr/lib/postgresql/17/bin/postgres --version; pg_dump --version",
        check=True,
    )  # fmt: skip
    lines = versions.stdout.splitlines()
    assert len(lines) == 2 and all("(PostgreSQL) 17." in line for line in lines), lines
