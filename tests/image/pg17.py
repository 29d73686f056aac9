"""The PostgreSQL 17 harness: servers and drbackup runs in the image, seen from the host.

The host's packages carry PostgreSQL 15 only; the image (Debian trixie) carries 17's client
and server.  So the 17 suite runs drbackup inside the image, as users run it, against
PostgreSQL 17 servers started in containers of the same image, all on the host's network:
the host's tests reach those servers on 127.0.0.1 with psycopg, and the image's drbackup
reaches the host's moto S3 server and the host's PostgreSQL 15 clusters the same way.

:class:`Shared` is one repository both sides use: a directory mounted in the container at
its own host path, so that one config (``config_for``) names the same files on both sides;
its files are given to the image's user (uid 10001) before each run.
"""

from __future__ import annotations

import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import yaml

from tests.fixtures.s3server import free_port
from tests.image.podman import IMAGE, Workspace, podman

PASSPHRASE = "pg17 suite passphrase: correct horse battery staple"
PG17_BIN = "/usr/lib/postgresql/17/bin"
TESTS_IN_IMAGE = "/drbackup-tests"  # tests/image, mounted read-only (scripts run by the image)
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


@dataclass
class Shared:
    """A workspace mounted at its own path: config, secrets, state, a local repository."""

    workspace: Workspace = field(default_factory=Workspace)

    def __post_init__(self) -> None:
        root = self.workspace.root
        self.workspace.mounts[str(root)] = str(root)
        self.workspace.mounts[str(Path(__file__).parent)] = f"{TESTS_IN_IMAGE}:ro"
        (root / "passphrase").write_text(PASSPHRASE + "\n")
        (root / "passphrase").chmod(0o600)

    @property
    def root(self) -> Path:
        return self.workspace.root

    def write_config(self, name: str, data: dict) -> Path:
        path = self.root / name
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def volume_args(self) -> list[str]:
        return self.workspace.volume_args()  # gives every file to the image's user first

    def remove(self) -> None:
        self.workspace.remove()


def config_for(shared: Shared, repository_url: str, s3_server=None, **targets: dict) -> dict:
    """A config valid on both sides: the repository, the passphrase, the postgres targets
    (each ``name={"dsn": ..., ...}``); a catalog in the shared state directory."""
    repository: dict = {
        "url": repository_url,
        "encryption": {"passphrase_file": str(shared.root / "passphrase")},
    }
    if s3_server is not None:
        for name, value in (
            ("s3-id", s3_server.access_key_id),
            ("s3-secret", s3_server.secret_access_key),
        ):
            (shared.root / name).write_text(value + "\n")
            (shared.root / name).chmod(0o600)
        repository["s3"] = {
            "endpoint_url": s3_server.endpoint_url,
            "region": s3_server.region,
            "access_key_id_file": str(shared.root / "s3-id"),
            "secret_access_key_file": str(shared.root / "s3-secret"),
        }
    return {
        "repository": repository,
        "catalog": f"sqlite:///{shared.root / 'catalog.db'}",
        "postgres": targets,
    }


def drbackup_in_image(
    shared: Shared, config: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``drbackup -c CONFIG ARGS`` in a throwaway container of the image (host network)."""
    return podman(
        "run", "--rm", "--network", "host", *shared.volume_args(), IMAGE,
        "-c", str(config), *args,
        timeout=timeout,
    )  # fmt: skip


def python_in_image(shared: Shared, script: str, *args: str, env: dict | None = None):
    """``python tests/image/<script> ARGS`` with the image's drbackup installation."""
    env_args = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
    return podman(
        "run", "--rm", "--network", "host", *shared.volume_args(), *env_args,
        "--entrypoint", "/opt/drbackup/bin/python", IMAGE, f"{TESTS_IN_IMAGE}/{script}", *args,
    )  # fmt: skip


def wait_for(condition, timeout: float, what: str, details=lambda: "") -> None:
    """Poll ``condition``; fail after ``timeout`` s with ``details()`` (what was seen)."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{details()}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


class ContainerCluster:
    """A PostgreSQL 17 server in a detached container of the image, listening on a free
    port of the host's loopback (trust authentication for local connections, as the test
    clusters of the host).  It runs as the image's user; ``exec`` runs commands beside it
    (``archive_command`` runs the image's drbackup there too)."""

    host = "127.0.0.1"
    superuser = "postgres"

    def __init__(self, settings: dict[str, str] | None = None, shared: Shared | None = None):
        self.port = free_port()
        self.name = f"drbackup-pg17-{self.port}-{uuid.uuid4().hex[:6]}"
        self.settings = {**FAST, "listen_addresses": self.host, **(settings or {})}
        self.shared = shared

    def start(self) -> ContainerCluster:
        options = " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in self.settings.items())
        script = (
            f"{PG17_BIN}/initdb -D /tmp/pg/data -U postgres --auth=trust -E UTF8 "
            "--locale=C.UTF-8 --no-sync >/tmp/pg/initdb.log "
            f"&& exec {PG17_BIN}/postgres -D /tmp/pg/data -p {self.port} "
            f"-c unix_socket_directories=/tmp/pg {options}"
        )
        volumes = self.shared.volume_args() if self.shared else []
        podman(
            "run", "-d", "--name", self.name, "--network", "host", "--health-interval",
            "disable", *volumes, "--entrypoint", "/usr/bin/tini", IMAGE,
            "--", "bash", "-c", f"mkdir -p /tmp/pg && {script}",
            check=True,
        )  # fmt: skip
        wait_for(self._accepts_connections, 60, f"PostgreSQL 17 in {self.name}")
        return self

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.dsn(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            if podman("container", "exists", self.name).returncode != 0:
                pytest.fail(f"container {self.name} is gone")
            return False

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = "postgres", params=None) -> list[tuple]:
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def exec(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """``argv`` in the server's container (as the image's user)."""
        if self.shared is not None:
            self.shared.workspace.chown()
        return podman("exec", self.name, *argv, timeout=timeout)

    def logs(self) -> str:
        proc = podman("logs", self.name)
        return proc.stdout + proc.stderr

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name)
