"""Secrets stay where they belong (issue 14, item 14).

A password written in ``restore --into`` reaches pg_restore in its environment, never in
its argv (``/proc/<pid>/cmdline``, what ``ps`` shows every user); the children drbackup
starts (pg_dump, pg_restore) get no secret of drbackup's own.  Both are observed on the
real processes while they run, against a second server that checks passwords (scram).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from psycopg import sql

from tests.e2e.conftest import wait_for
from tests.e2e.test_postgres_backup_restore import assert_restored_equal, backup, manifest_of

PASSWORD = "s3cret pass/word:@!"
SECRETS = {
    "DRBACKUP_PASSPHRASE": None,  # set by the repository fixture
    "AWS_SECRET_ACCESS_KEY": "aws secret of the test",
    "AWS_SESSION_TOKEN": "aws session token of the test",
}


@dataclass(frozen=True)
class Seen:
    """A child process as the system shows it."""

    argv: list[str]
    environ: dict[str, str]


def _children(parent: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :]
        if comm == name and int(rest.split()[1]) == parent:
            found.append(int(entry.name))
    return found


def _read(pid: int) -> Seen | None:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    pairs = (e.decode(errors="replace").partition("=") for e in env if e)
    return Seen([a.decode(errors="replace") for a in argv if a], {k: v for k, _, v in pairs})


def observe_child(proc, name: str) -> Seen:
    """The child ``name`` of ``proc`` (polled until it appears), read while it runs."""

    def look():
        for pid in _children(proc.pid, name):
            seen = _read(pid)
            if seen is not None and seen.argv:
                return seen
        if proc.poll() is not None:
            pytest.fail(f"{name} never seen: the command ended ({proc.communicate()[1]})")
        return None

    return wait_for(look, 120, f"a running {name}", interval=0.002)


def require_password(cluster, role: str) -> str:
    """Make ``role`` log in on ``cluster`` with PASSWORD only (scram); its dsn prefix."""
    with cluster.connect() as conn:
        stmt = sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}")
        conn.execute(stmt.format(sql.Identifier(role), sql.Literal(PASSWORD)))
    hba = cluster.data_dir / "pg_hba.conf"
    rules = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + rules)  # first match wins
    cluster.execute("SELECT pg_reload_conf()")
    return f"postgresql://{role}:{quote(PASSWORD, safe='')}@{cluster.host}:{cluster.port}"


def assert_no_secrets(seen: Seen) -> None:
    leaked = [k for k in SECRETS if k in seen.environ]
    assert leaked == []
    values = [v for v in (os.environ.get(k) for k in SECRETS) if v]
    assert len(values) == len(SECRETS)  # the parent had every one of them
    assert [v for v in values if v in "\0".join(seen.environ.values())] == []


def test_into_password_stays_out_of_argv_and_children_get_no_secrets(
    local_repo_config, big_db, pg_cluster_factory, run_cli, spawn_cli, monkeypatch
):
    for name, value in SECRETS.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    local_repo_config.set_target("app", big_db.dsn)

    dumping = spawn_cli("backup", "postgres", "app")
    dump = observe_child(dumping, "pg_dump")
    _, err = dumping.communicate(timeout=300)
    assert dumping.returncode == 0, err
    assert_no_secrets(dump)
    manifest = manifest_of(run_cli, backup(run_cli)["backup_id"])

    other = pg_cluster_factory()
    server = require_password(other, "restorer")
    wrong = run_cli(
        "restore", "postgres", "app", "--into", f"{other.dsn('denied', user='restorer')}",
        "--create",
    )  # fmt: skip
    assert wrong.code == 1  # the server really checks the password
    assert "authentication failed" in wrong.stderr

    into = f"{server}/restored"
    for options in (["--create"], ["--force"]):  # in place, then a swap on that server
        restoring = spawn_cli(
            "restore", "postgres", "app", "--backup", manifest["backup_id"],
            "--into", into, "--no-owner", *options,
        )  # fmt: skip
        seen = observe_child(restoring, "pg_restore")
        out, err = restoring.communicate(timeout=300)
        assert restoring.returncode == 0, err
        assert PASSWORD not in " ".join(seen.argv)
        assert quote(PASSWORD, safe="") not in " ".join(seen.argv)
        assert any(a.startswith("--dbname=") and "user=restorer" in a for a in seen.argv)
        assert seen.environ["PGPASSWORD"] == PASSWORD
        assert_no_secrets(seen)
        assert PASSWORD not in out + err
    assert_restored_equal(manifest, into)
