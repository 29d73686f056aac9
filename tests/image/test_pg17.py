"""PostgreSQL 17 and restores across majors (15 -> 17), with drbackup running in the image.

The host has PostgreSQL 15 only; PostgreSQL 17 servers run in containers of the image
(tests/image/pg17.py) and the image's drbackup (17's tools) works on them, on the host's
network, with repositories the host reads too.  Each capability once on 17:

* logical: backup (pg_dump 17), restore (pg_restore 17), and a drill in an ephemeral 17
  cluster, of a database holding the awkward fixture;
* physical: WAL archived by archive_command (the image's ``wal-push``), a base backup, and a
  restore to a second between two commits, started and queried;

and across majors: the fingerprint's hashes and choices equal on 15 and 17 for the awkward
fixture, with the inventory differing only where the upgrade rules say; a 15 database
restored into 17 by ``drill run --into-major 17`` passing every check, and failing, naming
the table, when one row of the restore is changed.  The refusals around majors: a 17
server backed up by the host's 15 client, a 17 dump restored by the host's 15 pg_restore,
a 17 base backup started on the host, 17 WAL handed to a 15 server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest

from drbackup.sources.postgres import commands, processes
from drbackup.sources.postgres.fingerprint import (
    ROW_HASH_RECORD,
    compare_fingerprints,
    compare_tables,
    take_fingerprint,
)
from drbackup.sources.postgres.upgrade import (
    changed_view_definitions,
    explain_differences,
    reprint_view_definitions,
)
from tests.e2e.conftest import AWKWARD_SQL, cli_argv
from tests.image.pg17 import (
    ContainerCluster,
    Shared,
    config_for,
    drbackup_in_image,
    python_in_image,
    wait_for,
)
from tests.image.podman import podman

pytestmark = [pytest.mark.image, pytest.mark.pg17]
UPGRADE_RULES_15_TO_17 = {"view definitions", "partition identity", "domain not null"}
TAMPER = (
    'UPDATE "Ünïcode schema"."order items" SET price = price + 0.01 WHERE order_id = 1 AND line = 1'
)


@pytest.fixture(scope="module")
def pg17(image):
    cluster = ContainerCluster().start()
    yield cluster
    cluster.remove()


@pytest.fixture
def pg17_db(pg17):
    name = f"test_{uuid.uuid4().hex[:12]}"
    pg17.create_database(name)
    yield name
    pg17.drop_database(name)


@pytest.fixture
def shared():
    space = Shared()
    yield space
    space.remove()


def load_awkward(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(AWKWARD_SQL.read_text(encoding="utf-8"))


def fingerprint(dsn: str, like: dict | None = None) -> dict:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return take_fingerprint(conn, "full", like=like)


def host_drbackup(config: Path, *args: str, cwd=None) -> subprocess.CompletedProcess:
    """The host's drbackup (PostgreSQL 15 tools) with ``config``."""
    return subprocess.run(
        cli_argv("-c", str(config), *args), capture_output=True, text=True, timeout=300,
        cwd=cwd, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def host_config(shared: Shared, tmp_path: Path, data: dict, **target_options) -> Path:
    """The shared config for the host: its own catalog, WAL fetched without read-ahead."""
    data = json.loads(json.dumps(data))
    data["catalog"] = f"sqlite:///{tmp_path / 'host-catalog.db'}"
    for target in data["postgres"].values():
        target.update(target_options)
    return shared.write_config("host.yaml", data)


def test_the_image_says_which_majors_it_serves(image):
    inspect = json.loads(podman("image", "inspect", image, check=True).stdout)[0]
    assert inspect["Config"]["Labels"]["io.drbackup.postgresql.majors"] == "17"
    found = podman(
        "run", "--rm", "--entrypoint", "/opt/drbackup/bin/python", image, "-c",
        "from drbackup.sources.postgres import commands, versions;"
        "print(sorted(commands.installed_bin_dirs('pg_dump')), sorted(versions.installed_servers()))",
        check=True,
    )  # fmt: skip
    assert found.stdout.split("\n")[0] == "[17] [17]"  # what drbackup finds there


# -- logical ----------------------------------------------------------------------------------


def test_logical_backup_restore_and_drill_on_postgresql_17(
    pg17, pg17_db, shared, s3_server, s3_bucket, pg_cluster, tmp_path
):
    load_awkward(pg17.dsn(pg17_db))
    data = config_for(
        shared, f"s3://{s3_bucket}/pg17", s3_server,
        app={"dsn": pg17.dsn(pg17_db), "databases": [pg17_db]},
    )  # fmt: skip
    config = shared.write_config("drbackup.yaml", data)
    assert drbackup_in_image(shared, config, "init").returncode == 0
    backup = drbackup_in_image(shared, config, "backup", "postgres", "app", "--json")
    assert backup.returncode == 0, backup.stderr
    meta = json.loads(backup.stdout)["meta"]
    assert meta["pg_dump_version"].startswith("17.") and meta["server_version_num"] // 10000 == 17

    restored = f"restored_{pg17_db}"
    restore = drbackup_in_image(
        shared, config, "restore", "postgres", "app", "--into", pg17.dsn(restored), "--create"
    )
    try:
        assert restore.returncode == 0, restore.stderr
        expected = fingerprint(pg17.dsn(pg17_db))
        assert compare_fingerprints(expected, fingerprint(pg17.dsn(restored), expected)) == []
    finally:
        pg17.drop_database(restored)

    drill = drbackup_in_image(shared, config, "drill", "run", "--target", "app", "-o",
                              str(shared.root / "report.json"))  # fmt: skip
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert "(PostgreSQL 17)" in drill.stderr  # the ephemeral cluster: the backup's own major
    report = json.loads((shared.root / "report.json").read_text())
    assert all_passed(report)
    assert report["targets"][0]["postgresql"] == {
        "backup_major": 17, "restored_major": 17, "upgrade": False, "rehearsal": False,
    }  # fmt: skip

    # the host's pg_restore 15 cannot read pg_dump 17's archive: refused before anything
    target_db = f"restore15_{pg17_db}"
    refused = host_drbackup(
        host_config(shared, tmp_path, data), "restore", "postgres", "app",
        "--into", pg_cluster.dsn(target_db), "--create",
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.splitlines()[0] == (
        f"drbackup: error: the backup was written by pg_dump {meta['pg_dump_version']} and "
        f"pg_restore here is {host_client_major()}: install postgresql-client-17"
    )
    assert (
        pg_cluster.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(target_db,))
        == []
    )


def all_passed(report: dict) -> bool:
    """Every check passed; the one warning the awkward fixture makes on purpose aside (a
    NOT VALID foreign key with an orphan row in the source: not the restore's fault)."""
    checks = {c["name"]: c for c in report["checks"]}
    expected = {"restore", "schema", "tables", "foreign_keys", "sequences", "amcheck", "rto", "rpo"}
    assert expected <= set(checks), sorted(checks)
    foreign_keys = checks.pop("foreign_keys")
    not_passed = [k for k in foreign_keys["evidence"]["foreign_keys"] if k["status"] != "pass"]
    assert [k["name"] for k in not_passed] == ["reviews_customer_fk"], not_passed
    assert "was NOT VALID in the source" in foreign_keys["summary"]
    assert {c["status"] for c in checks.values()} == {"pass"}, [
        c for c in checks.values() if c["status"] != "pass"
    ]
    return report["status"] == "warn" and report["counts"]["fail"] == 0


def host_client_major() -> int:
    installed = commands.installed_bin_dirs("pg_dump")
    assert installed and max(installed) < 17, (
        f"this test needs a host whose newest PostgreSQL client is older than 17 "
        f"(found {sorted(installed)})"
    )
    return max(installed)


def test_a_postgresql_17_server_with_only_a_15_client_fails_naming_what_to_install(
    pg17, shared, tmp_path
):
    """The 17 server in its container, the host's drbackup with its 15 pg_dump."""
    client = host_client_major()
    data = config_for(
        shared, str(tmp_path / "repo"), app={"dsn": pg17.dsn(), "databases": ["postgres"]}
    )
    config = host_config(shared, tmp_path, data)
    assert host_drbackup(config, "init").returncode == 0
    result = host_drbackup(config, "backup", "postgres", "app")
    assert result.returncode == 2
    version = processes.tool_version(commands.find_client_bin_dir(None), "pg_dump")
    assert version[0] == client
    assert result.stderr.splitlines()[0] == (
        f"drbackup: error: pg_dump {version[0]}.{version[1]} is older than the server "
        "(PostgreSQL 17): install postgresql-client-17"
    )
    assert host_drbackup(config, "list", "--json").stdout.strip() == "[]"


# -- physical ---------------------------------------------------------------------------------


def test_base_backup_wal_archiving_and_point_in_time_restore_on_postgresql_17(
    image, shared, tmp_path
):
    repo = shared.root / "repo"
    server = ContainerCluster(shared=shared)
    data = config_for(shared, str(repo), app={"dsn": server.dsn(), "databases": ["postgres"]})
    config = shared.write_config("drbackup.yaml", data)
    assert drbackup_in_image(shared, config, "init").returncode == 0
    server.settings.update(
        archive_mode="on",
        archive_command=f"/opt/drbackup/bin/drbackup -c {config} wal-push --target app %p",
        archive_timeout="1",
        track_commit_timestamp="on",
    )
    server.start()
    try:
        restored = pitr_on_17(server, config)
    finally:
        server.remove()
    assert restored["markers"] == list(range(1, restored["upto"] + 1))
    refusals_on_the_host(shared, tmp_path, data, restored)


def pitr_on_17(server: ContainerCluster, config: Path) -> dict:
    """Markers before and after a base backup; a restore to a second between two of them."""
    server.execute("CREATE TABLE marker (id int PRIMARY KEY)")
    for marker in range(1, 4):
        server.execute("INSERT INTO marker VALUES (%s)", params=(marker,))
    backup = server.exec(
        "drbackup", "-c", str(config), "backup", "postgres", "app", "--physical", "--json"
    )
    assert backup.returncode == 0, backup.stderr + server.logs()[-3000:]
    meta = json.loads(backup.stdout)["meta"]
    assert meta["major"] == 17 and meta["cluster"].startswith("pg17-")
    for marker in range(4, 13):
        server.execute("INSERT INTO marker VALUES (%s)", params=(marker,))
    times = dict(server.execute("SELECT id, pg_xact_commit_timestamp(xmin) FROM marker"))
    last = server.execute("SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    # Past PostgreSQL's own 60 s: a stall of a minute was seen twice in ~70 runs on a loaded
    # machine, the segment neither archived nor failed meanwhile (the failure message of
    # this wait shows the archiver, spool and processes, should it come back).
    wait_for(lambda: archived(server, last), 150, f"{last} archived", lambda: archiver(server))
    point = times[8] + (times[9] - times[8]) / 2
    restore = server.exec(
        "drbackup", "-c", str(config), "restore", "postgres", "app", "--into-dir",
        "/tmp/restored", "--point-in-time", point.astimezone(dt.UTC).isoformat(), "--start",
        "--json",
    )  # fmt: skip
    assert restore.returncode == 0, restore.stderr
    outcome = json.loads(restore.stdout)
    assert outcome["outcome"]["reached"] and outcome["outcome"]["timeline"] == 1
    query = "SELECT string_agg(id::text, ',' ORDER BY id) FROM marker"
    rows = server.exec(
        "/usr/lib/postgresql/17/bin/psql", "-XAt", "-d", outcome["server"]["dsn"], "-c", query
    )
    assert rows.returncode == 0, rows.stderr
    server.exec("/usr/lib/postgresql/17/bin/pg_ctl", "-D", "/tmp/restored", "stop", "-m", "fast")
    markers = [int(m) for m in rows.stdout.strip().split(",")]
    return {"markers": markers, "upto": 8, "segment": last, "last_commit": times[12]}


def archived(server: ContainerCluster, name: str) -> bool:
    row = server.execute("SELECT last_archived_wal FROM pg_stat_archiver")[0]
    return row[0] is not None and row[0] >= name


def archiver(server: ContainerCluster) -> str:
    """What the archiver did, for a failure message: its statistics, the server's log, the
    WAL spool (the background pusher's state and errors) and the processes running."""
    stats = server.execute("SELECT * FROM pg_stat_archiver")
    script = (
        "ls -la /tmp/pg/data/pg_wal/archive_status; find /var/lib/drbackup/spool -ls; "
        "for f in $(find /var/lib/drbackup/spool -name '*.log'); do tail -n 20 $f; done; "
        "for p in /proc/[0-9]*; do echo $(basename $p): $(tr '\\0' ' ' < $p/cmdline); done"
    )
    seen = server.exec("bash", "-c", script)
    return f"pg_stat_archiver: {stats}\n{server.logs()[-3000:]}\n{seen.stdout}{seen.stderr}"


def refusals_on_the_host(shared: Shared, tmp_path: Path, data: dict, restored: dict) -> None:
    """The repository the image wrote, read by the host (PostgreSQL 15 here)."""
    config = host_config(shared, tmp_path, data, wal={"asynchronous": False})
    check = host_drbackup(config, "wal", "check", "app", "--json")
    assert check.returncode == 0, check.stderr
    status = json.loads(check.stdout)
    assert status["gaps"] == [] and status["breaks"] == [], status
    newest = dt.datetime.fromisoformat(status["newest_commit"])  # read from 17's WAL records
    assert newest >= restored["last_commit"], status

    into = tmp_path / "restored-on-15"
    start = host_drbackup(config, "restore", "postgres", "app", "--into-dir", str(into), "--start")
    assert start.returncode == 2
    assert start.stderr.splitlines()[0] == (
        f"drbackup: error: the PostgreSQL 17 server is not installed (installed: "
        f"{', '.join(map(str, installed_server_majors()))}): install postgresql-17"
    )
    assert not into.exists()  # refused before anything was written

    data_dir = tmp_path / "a-15-server"
    (data_dir / "pg_wal").mkdir(parents=True)
    (data_dir / "PG_VERSION").write_text("15\n")
    segment = restored["segment"]
    fetch = host_drbackup(config, "wal-fetch", "--target", "app", segment, "pg_wal/RECOVERYXLOG",
                          cwd=data_dir)  # fmt: skip
    assert fetch.returncode == 1
    assert fetch.stderr.splitlines()[0] == (
        f"drbackup: error: WAL file {segment} of target app is PostgreSQL 17 WAL and the "
        "server recovering is PostgreSQL 15; refusing it"
    )
    assert os.listdir(data_dir / "pg_wal") == []


def installed_server_majors() -> list[int]:
    from drbackup.sources.postgres.versions import installed_servers

    return sorted(installed_servers())


# -- across majors ----------------------------------------------------------------------------


def test_fingerprints_of_the_awkward_fixture_are_equal_on_15_and_17(pg_db, pg17, pg17_db):
    """The hash functions and the text forms the fingerprint hashes are stable across
    majors: on 17 the same tables get the same hashes, by the same choices per column; the
    inventory differs only where the upgrade rules say."""
    load_awkward(pg_db.dsn)
    load_awkward(pg17.dsn(pg17_db))
    on_15 = fingerprint(pg_db.dsn)
    assert on_15["settings"]["server_version_num"] // 10000 < 17
    assert on_15["settings"]["row_hash"] == ROW_HASH_RECORD
    on_17 = fingerprint(pg17.dsn(pg17_db))  # its own choices, not the backup's
    assert on_17["settings"]["server_version_num"] // 10000 == 17
    assert on_17["tables"] == on_15["tables"]  # rows, hashes, text and float columns
    assert compare_tables(on_15["tables"], on_17["tables"]) == []
    assert len(on_15["tables"]) >= 15 and any(
        t.get("text_columns") for t in on_15["tables"].values()
    )

    with psycopg.connect(pg17.dsn(pg17_db), autocommit=True) as conn:
        changed = changed_view_definitions(on_15["inventory"], on_17["inventory"])
        reprinted = reprint_view_definitions(conn, changed)
    left, explained, _exp, _act = explain_differences(
        on_15["inventory"], on_17["inventory"], 15, 17, reprinted
    )
    assert left == []
    assert {e.rule.name for e in explained} == UPGRADE_RULES_15_TO_17


def test_a_15_database_restored_into_17_by_an_upgrade_rehearsal(
    pg_db, shared, s3_server, s3_bucket, tmp_path, image
):
    load_awkward(pg_db.dsn)
    data = config_for(
        shared, f"s3://{s3_bucket}/upgrade", s3_server,
        app={"dsn": pg_db.dsn, "databases": [pg_db.name]},
    )  # fmt: skip
    config = shared.write_config("drbackup.yaml", data)
    on_host = host_config(shared, tmp_path, data)
    assert host_drbackup(on_host, "init").returncode == 0
    backup = host_drbackup(on_host, "backup", "postgres", "app", "--json")
    assert backup.returncode == 0, backup.stderr
    assert json.loads(backup.stdout)["meta"]["server_version_num"] // 10000 < 17

    report_path = shared.root / "rehearsal.json"
    drill = drbackup_in_image(
        shared, config, "drill", "run", "--target", "app", "--into-major", "17",
        "-o", str(report_path),
    )  # fmt: skip
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert "upgrade rehearsal: postgresql 15 -> 17, restore " in drill.stdout
    report = json.loads(report_path.read_text())
    assert all_passed(report)
    target = report["targets"][0]
    assert target["postgresql"] == {
        "backup_major": 15, "restored_major": 17, "upgrade": True, "rehearsal": True,
    }  # fmt: skip
    assert target["timings"]["restore_s"] > 0
    schema = next(c for c in report["checks"] if c["name"] == "schema")
    named = {d["rule"] for d in schema["evidence"]["upgrade_differences"]}
    assert named == UPGRADE_RULES_15_TO_17
    assert (
        "postgresql 17 introduces (domain not null 1, partition identity 2, view"
        in schema["summary"]
    )

    tampered = python_in_image(shared, "drill_tampered.py", str(config), "app", "17", TAMPER)
    assert tampered.returncode == 0, tampered.stderr
    report = json.loads(tampered.stdout.splitlines()[-1])
    assert report["status"] == "fail"
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["tables"]
    assert "content of table Ünïcode schema.order items differs" in failed[0]["summary"]
