"""The one place child environments are built, and passwords kept out of argv."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from drbackup.errors import ConfigError
from drbackup.sources.postgres import commands
from drbackup.sources.postgres.environment import (
    child_environ,
    client_env,
    dsn_password,
    dsn_without_password,
)

PACKAGE = Path(__file__).resolve().parents[3] / "drbackup"
BIN = Path("/usr/lib/postgresql/15/bin")


def test_child_environ_drops_drbackup_and_aws_secrets_and_keeps_the_rest():
    base = {
        "DRBACKUP_PASSPHRASE": "pass",
        "DRBACKUP_KEY_FILE": "/run/secrets/key",
        "DRBACKUP__MINIO__MEDIA__SECRET_KEY": "minio-secret",
        "DRBACKUP__POSTGRES__APP__PASSWORD": "pg-secret",
        "DRBACKUP_SOMETHING_NEW": "unknown, so dropped",
        "AWS_ACCESS_KEY_ID": "AKIA",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "AWS_SESSION_TOKEN": "token",
        "AWS_SECURITY_TOKEN": "old token",
        "DRBACKUP_CONFIG": "/etc/drbackup.yaml",
        "DRBACKUP_HOME": "/var/lib/drbackup",
        "DRBACKUP_PG_BIN": "/usr/lib/postgresql/15/bin",
        "DRBACKUP_PG_CLIENT_BIN": "/usr/lib/postgresql/16/bin",
        "AWS_REGION": "eu-west-1",
        "PATH": "/usr/bin",
        "PGPASSWORD": "the user's own",
        "LANG": "C.UTF-8",
    }
    assert child_environ(base) == {
        "DRBACKUP_CONFIG": "/etc/drbackup.yaml",
        "DRBACKUP_HOME": "/var/lib/drbackup",
        "DRBACKUP_PG_BIN": "/usr/lib/postgresql/15/bin",
        "DRBACKUP_PG_CLIENT_BIN": "/usr/lib/postgresql/16/bin",
        "AWS_REGION": "eu-west-1",
        "PATH": "/usr/bin",
        "PGPASSWORD": "the user's own",
        "LANG": "C.UTF-8",
    }


def test_client_env_password_explicit_then_from_the_dsn(monkeypatch):
    monkeypatch.setenv("DRBACKUP_PASSPHRASE", "never in a child")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    env = client_env(None, "postgresql://app:in%20dsn@db/app")
    assert env["PGPASSWORD"] == "in dsn"
    assert "DRBACKUP_PASSPHRASE" not in env
    assert env["PGCONNECT_TIMEOUT"] == "10"
    # an explicit password wins, as it does for drbackup's own connections (psycopg)
    assert client_env("explicit", "postgresql://app:in%20dsn@db/app")["PGPASSWORD"] == "explicit"
    assert "PGPASSWORD" not in client_env(None, "postgresql://app@db/app")


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://app:s3cret@db:5433/app", "user=app host=db port=5433 dbname=app"),
        ("host=db user=app password='s e c' dbname=app", "host=db user=app dbname=app"),
        (
            "postgresql://db/app?password=s3cret&sslmode=require",
            "host=db dbname=app sslmode=require",
        ),
        ("postgresql://app@db/app", "postgresql://app@db/app"),  # unchanged without one
    ],
)
def test_dsn_without_password(dsn, expected):
    stripped = dsn_without_password(dsn)
    assert conninfo_to_dict(stripped) == conninfo_to_dict(expected)
    assert dsn_password(stripped) is None
    assert stripped == dsn or "password" not in stripped


def test_an_unparsable_dsn_is_refused_without_echoing_it():
    with pytest.raises(ConfigError) as caught:
        dsn_without_password("host=db password=hunter2 dbname")
    assert "hunter2" not in caught.value.message
    assert caught.value.message.startswith("invalid postgres dsn: ")


def test_no_argv_builder_puts_a_password_in_argv():
    dsn = "postgresql://app:hunter2@db/app"
    argvs = [
        commands.pg_dump_argv(BIN, dsn, snapshot=None),
        commands.pg_dumpall_globals_argv(BIN, dsn),
        commands.pg_restore_argv(BIN, dsn),
        commands.pg_restore_argv(BIN, dsn, jobs=2, archive="/spool/archive.dump"),
    ]
    for argv in argvs:
        assert not [a for a in argv if "hunter2" in a], argv
        (dbname,) = [a for a in argv if a.startswith("--dbname=")]
        assert conninfo_to_dict(dbname.removeprefix("--dbname=")) == {
            "user": "app",
            "host": "db",
            "dbname": "app",
        }


_STARTERS = {"run", "Popen", "call", "check_call", "check_output", "start"}
_OWNERS = {"subprocess", "processes"}  # the runner (sources/postgres/processes.py) too


def _subprocess_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if isinstance(owner, ast.Name) and owner.id in _OWNERS and node.func.attr in _STARTERS:
            yield node


def test_every_child_process_gets_an_explicit_environment():
    """A child started without ``env=`` inherits every secret of ours: each call in the
    package passes one (built from environment.child_environ, see the module)."""
    missing, seen = [], 0
    for path in sorted(PACKAGE.rglob("*.py")):
        for call in _subprocess_calls(ast.parse(path.read_text(encoding="utf-8"))):
            seen += 1
            if not any(k.arg == "env" for k in call.keywords):
                missing.append(f"{path.relative_to(PACKAGE)}:{call.lineno}")
    assert seen >= 8  # the scan finds the calls it is meant to check
    assert missing == []


def test_child_processes_are_started_only_by_the_runner():
    """argv is built by pure functions; one module starts processes and masks secrets."""
    runner = PACKAGE / "sources" / "postgres" / "processes.py"
    elsewhere = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls = [c for c in _subprocess_calls(tree) if c.func.value.id == "subprocess"]
        if calls and path != runner:
            elsewhere.append(f"{path.relative_to(PACKAGE)}:{calls[0].lineno}")
    assert elsewhere == []
