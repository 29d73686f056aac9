"""End-to-end helpers: a configured, initialised repository and the ``drbackup`` command.

``repo_config`` writes a YAML config in ``tmp_path`` (repository, catalog, one postgres
target ``app`` on ``pg_db``), exports it as ``DRBACKUP_CONFIG`` with ``DRBACKUP_PASSPHRASE``,
and runs ``drbackup init``.  It is parametrized over both repository kinds: a local
directory and ``s3://<bucket>/repo`` on the moto server.  ``local_repo_config`` is the same
on a local directory only, for tests where the storage kind plays no part.

``run_cli(*args)`` runs ``drbackup.cli.main.main`` in this process and returns exit code,
stdout and stderr; ``spawn_cli(*args)`` starts the real console script as a child process
(for tests that kill it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from drbackup.cli.main import main
from drbackup.sources.postgres.connection import database_of
from drbackup.sources.postgres.fingerprint import take_fingerprint

PASSPHRASE = "e2e passphrase: correct horse battery staple"
AWKWARD_SQL = Path(__file__).resolve().parents[1] / "fixtures" / "awkward.sql"
_CONSOLE_SCRIPT = Path(sys.executable).with_name("drbackup")


@dataclass(frozen=True)
class Result:
    """What a user sees from one ``drbackup`` run."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.splitlines()


def _run_in_process(capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> Result:
    capsys.readouterr()  # drop whatever the test printed before
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = main([str(a) for a in args])
    finally:
        signal.signal(signal.SIGTERM, previous)  # main() installs its own handler
    out, err = capsys.readouterr()
    return Result(code, out, err)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """``run_cli("list", "--json")``: the CLI in this process, output captured."""
    return lambda *args: _run_in_process(capsys, args)


def cli_argv(*args: str) -> list[str]:
    """argv of the real ``drbackup`` console script (a fresh interpreter)."""
    if _CONSOLE_SCRIPT.exists():
        return [str(_CONSOLE_SCRIPT), *map(str, args)]
    code = "from drbackup.cli.main import run; run()"
    return [sys.executable, "-c", code, *map(str, args)]


@pytest.fixture
def spawn_cli() -> Callable[..., subprocess.Popen]:
    """``spawn_cli(*args)``: the console script as a child process (killed after the test)."""
    procs: list[subprocess.Popen] = []

    def spawn(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            cli_argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@dataclass
class RepoConfig:
    """A config file and the repository it names; ``write()`` after changing ``data``."""

    kind: str  # "local" or "s3"
    path: Path  # the YAML file
    data: dict
    tmp_path: Path
    local_root: Path | None = None  # the repository directory (local kind)
    s3: Any = None  # the S3Server (s3 kind)
    bucket: str | None = None

    def write(self) -> None:
        self.path.write_text(yaml.safe_dump(self.data, sort_keys=False), encoding="utf-8")

    def set_target(self, name: str, dsn: str, **options: Any) -> None:
        """Add or replace postgres target ``name`` backing up the database of ``dsn``."""
        self.data.setdefault("postgres", {})[name] = {
            "dsn": dsn,
            "databases": [database_of(dsn)],
            **options,
        }
        self.write()


def write_secret(path: Path, value: str) -> Path:
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def minio_target(s3_server, tmp_path: Path, buckets: list[str]) -> dict:
    """A ``minio:`` target entry for the moto server, credentials in files under tmp_path."""
    return {
        "endpoint": s3_server.endpoint_url,
        "access_key_file": str(write_secret(tmp_path / "minio-id", s3_server.access_key_id)),
        "secret_key_file": str(
            write_secret(tmp_path / "minio-secret", s3_server.secret_access_key)
        ),
        "buckets": buckets,
    }


def make_repo_config(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch, dsn: str
) -> RepoConfig:
    """Write the config (``kind`` "local" or "s3"; target ``app`` on ``dsn``), export it as
    ``DRBACKUP_CONFIG`` with ``DRBACKUP_PASSPHRASE``, and ``drbackup init`` the repository."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("DRBACKUP_HOME", str(home))
    monkeypatch.setenv("DRBACKUP_PASSPHRASE", PASSPHRASE)
    repository: dict[str, Any] = {}
    cfg = RepoConfig(kind=kind, path=tmp_path / "drbackup.yaml", data={}, tmp_path=tmp_path)
    if kind == "local":
        cfg.local_root = tmp_path / "repo"
        repository["url"] = str(cfg.local_root)
    else:
        cfg.s3 = request.getfixturevalue("s3_server")
        cfg.bucket = request.getfixturevalue("s3_bucket")
        repository["url"] = f"s3://{cfg.bucket}/repo"
        repository["s3"] = {
            "endpoint_url": cfg.s3.endpoint_url,
            "region": cfg.s3.region,
            "access_key_id_file": str(write_secret(tmp_path / "s3-id", cfg.s3.access_key_id)),
            "secret_access_key_file": str(
                write_secret(tmp_path / "s3-secret", cfg.s3.secret_access_key)
            ),
        }
    cfg.data = {
        "repository": repository,
        "catalog": f"sqlite:///{tmp_path / 'catalog.db'}",
        "postgres": {"app": {"dsn": dsn, "databases": [database_of(dsn)]}},
    }
    cfg.write()
    monkeypatch.setenv("DRBACKUP_CONFIG", str(cfg.path))
    capsys = request.getfixturevalue("capsys")
    init = _run_in_process(capsys, ("init", "--scrypt-log-n", "10"))
    assert init.code == 0, init.stderr
    assert init.stdout.startswith("created repository "), init.stdout
    return cfg


@pytest.fixture(params=["local", "s3"])
def repo_config(request, tmp_path, monkeypatch, pg_db) -> RepoConfig:
    """An initialised repository of each kind; target ``app`` backs up ``pg_db``."""
    return make_repo_config(request.param, request, tmp_path, monkeypatch, pg_db.dsn)


@pytest.fixture
def local_repo_config(request, tmp_path, monkeypatch, pg_db) -> RepoConfig:
    """An initialised local-directory repository; target ``app`` backs up ``pg_db``."""
    return make_repo_config("local", request, tmp_path, monkeypatch, pg_db.dsn)


# --------------------------------------------------------------------------- postgres


def load_awkward(db) -> None:
    db.execute(AWKWARD_SQL.read_text(encoding="utf-8"))


def fingerprint_of(dsn: str) -> dict:
    """The full fingerprint of the database at ``dsn``, in a snapshot of its own."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return take_fingerprint(conn, "full")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval=0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# A few hundred thousand rows: enough that a dump overlaps concurrent writes and can be
# killed while pg_dump is busy in COPY.  Built once per session, copied per test (fast).
BIG_ROWS = 300_000
BIG_SQL = f"""
CREATE TABLE accounts (
    id integer PRIMARY KEY,
    balance bigint NOT NULL DEFAULT 0,
    filler text NOT NULL
);
INSERT INTO accounts (id, filler)
SELECT g, md5(g::text) || md5((g * 7)::text) FROM generate_series(1, {BIG_ROWS}) AS g;
CREATE TABLE history (
    id bigserial PRIMARY KEY,
    account integer NOT NULL REFERENCES accounts (id),
    delta integer NOT NULL
);
"""


@pytest.fixture(scope="session")
def big_template(pg_cluster) -> str:
    """A template database with ``accounts`` (BIG_ROWS rows) and an empty ``history``."""
    name = f"e2e_big_template_{os.getpid()}"
    pg_cluster.create_database(name)
    pg_cluster.execute(BIG_SQL, dbname=name)
    yield name
    pg_cluster.drop_database(name)


@pytest.fixture
def big_db(pg_cluster, big_template):
    """A fresh copy of ``big_template`` for one test."""
    from psycopg import sql

    from tests.fixtures.pg import PgDatabase

    name = f"e2e_big_{os.urandom(6).hex()}"
    with pg_cluster.connect() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(big_template)
            )
        )
    try:
        yield PgDatabase(name=name, dsn=pg_cluster.dsn(name), cluster=pg_cluster)
    finally:
        pg_cluster.drop_database(name)


@pytest.fixture
def s3_repo_config(request, tmp_path, monkeypatch, pg_db) -> RepoConfig:
    """An initialised ``s3://`` repository on the moto server; target ``app`` on ``pg_db``."""
    return make_repo_config("s3", request, tmp_path, monkeypatch, pg_db.dsn)
