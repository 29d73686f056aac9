"""The commit protocol from outside: ``drbackup`` killed at each phase, and a 5xx soak.

The repository is ``s3://<bucket>/repo`` on the moto server behind the fault proxy
(tests/fixtures/faultproxy.py); target ``app`` backs up ``pg_db`` and target ``files``
snapshots bucket ``photos`` (read straight from the server).

Kill -9 matrix: the console script runs as a child process, the proxy holds the request of
one phase (the lease write, the first data upload, a later data upload, the manifest PUT,
the read-back after a manifest PUT whose reply was dropped) and the test kills the process
there.  Afterwards nothing looks valid that is not: every listed backup verifies; ``list``,
``prune``, a new backup and a drill succeed; a prune past the lease expiry leaves no
leftover behind.

Soak: with 30% of all repository requests answered 503 SlowDown, backup, snapshot,
restore, verify and prune either succeed or fail as unreachable, and after each failure
the same checks hold.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from drbackup.actions.context import AppContext
from drbackup.actions.prune import prune_targets
from drbackup.config import load_config
from tests.e2e.conftest import minio_target, wait_for

ID = r"\d{8}T\d{6}Z-[0-9a-f]{6}"
LATER = timedelta(hours=25)  # past the default leftover grace and the lease expiry

# phase -> (method, path regex) of the request held while the process is killed.  With
# "drop" the manifest PUT lands but its reply never comes; the read-back is held.
PHASES = {
    "lease write": ("PUT", r"/repo/leases/{t}/"),
    "first data upload": ("PUT", "{first}"),
    "later data upload": ("PUT", "{later}"),
    "manifest PUT": ("PUT", r"/repo/manifests/{t}/"),
    "manifest reply dropped": ("GET", r"/repo/manifests/{t}/"),
}
FIRST = {"app": r"/repo/data/app/[^/]+/0000-00000$", "files": r"/repo/blobs/"}
LATER_DATA = {"app": r"/repo/data/app/[^/]+/0001-00000$", "files": r"/repo/data/files/"}
COMMAND = {"app": ("backup", "postgres", "app"), "files": ("snapshot", "minio", "files")}


@pytest.fixture
def faulty(s3_repo_config, fault_proxy, s3_server):
    """The e2e config with its repository behind ``fault_proxy`` and a ``files`` target."""
    cfg = s3_repo_config
    cfg.data["repository"]["s3"].update(
        endpoint_url=fault_proxy.url, max_attempts=3, connect_timeout="2s", read_timeout="5s"
    )
    cfg.data["postgres"]["app"]["retention"] = {"keep_last": 20}
    s3 = s3_server.client()
    s3.create_bucket(Bucket="photos")
    for key, body in (("a.txt", b"alpha"), ("b/c.bin", os.urandom(3000)), ("d", b"delta")):
        s3.put_object(Bucket="photos", Key=key, Body=body)
    files = minio_target(s3_server, cfg.tmp_path, ["photos"])
    cfg.data["minio"] = {"files": {**files, "retention": {"keep_last": 20}}}
    cfg.write()
    return cfg


def repo_keys(cfg, prefix: str = "") -> list[str]:
    client = cfg.s3.client()
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=cfg.bucket, Prefix=f"repo/{prefix}"
    )
    return [obj["Key"][5:] for page in pages for obj in page.get("Contents", ())]


def backup_sessions_gone(db) -> bool:
    rows = db.cluster.execute(
        "SELECT (SELECT count(*) FROM pg_stat_activity"
        "        WHERE datname = %s AND pid <> pg_backend_pid()),"
        " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory')",
        dbname=db.name,
        params=(db.name,),
    )
    return rows == [(0, 0)]


def listed_ids(run_cli) -> list[str]:
    listed = run_cli("list", "--json")
    assert listed.code == 0, listed.stderr
    return [record["backup_id"] for record in listed.json()]


def assert_all_listed_verify(run_cli) -> list[str]:
    ids = listed_ids(run_cli)
    for backup_id in ids:
        verified = run_cli("verify", backup_id)
        assert verified.code == 0, f"{backup_id} lists but does not verify: {verified.stderr}"
    return ids


def assert_recovers(run_cli, target: str) -> None:
    """A new backup of ``target`` and a drill of it succeed; prune succeeds."""
    made = run_cli(*COMMAND[target], "--json")
    assert made.code == 0, made.stderr
    drill = ("drill", "run", "--target", "app") if target == "app" else ("drill-bucket", "files")
    drilled = run_cli(*drill)
    assert drilled.code == 0, drilled.stdout + drilled.stderr
    pruned = run_cli("prune")
    assert pruned.code == 0, pruned.stdout + pruned.stderr


def kill_at(spawn_cli, fault_proxy, target: str, phase: str):
    """Run the target's backup command, hold it at ``phase``, kill -9 it; the rule."""
    if phase == "manifest reply dropped":
        fault_proxy.add("drop_response", method="PUT", path=rf"/repo/manifests/{target}/")
    method, pattern = PHASES[phase]
    path = pattern.format(t=target, first=FIRST[target], later=LATER_DATA[target])
    held = fault_proxy.hold(method=method, path=path)
    proc = spawn_cli(*COMMAND[target])
    held.wait_arrived(60)
    proc.kill()
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -9, f"the command ended before it was killed: {stderr}"
    held.drop()  # the held request never reaches the server
    fault_proxy.clear()
    leases = fault_proxy.requests("PUT", rf"/repo/leases/{target}/")
    return re.search(ID, leases[0]).group(0) if leases else None


# Every phase for backups; for snapshots the default run covers a data phase and the
# dropped reply, the rest run with the slow tests.
MATRIX = [pytest.param("app", phase) for phase in PHASES] + [
    pytest.param(
        "files",
        phase,
        marks=[] if phase in ("first data upload", "manifest reply dropped") else pytest.mark.slow,
    )
    for phase in PHASES
]


@pytest.mark.parametrize(("target", "phase"), MATRIX)
def test_killed_at_each_phase_nothing_looks_valid(
    faulty, pg_db, fault_proxy, spawn_cli, run_cli, target, phase
):
    killed = kill_at(spawn_cli, fault_proxy, target, phase)
    wait_for(lambda: backup_sessions_gone(pg_db), 30, "the killed backup's sessions to end")
    committed = phase == "manifest reply dropped"
    assert assert_all_listed_verify(run_cli) == ([killed] if committed else [])
    if phase != "lease write":
        assert repo_keys(faulty, f"leases/{target}/") == [f"leases/{target}/{killed}"]

    dry = run_cli("prune", "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    (report,) = [t for t in dry.json()["targets"] if t["target"] == target]
    actions = [(left["backup_id"], left["action"][:19]) for left in report["leftovers"]]
    # a committed backup's lease is left over alone: kept while it could still be renewed
    kept = "kept (writer alive:" if committed else "kept (younger than "
    assert actions == ([] if phase == "lease write" else [(killed, kept)])

    app = AppContext(load_config(faulty.path))
    later = prune_targets(app, [target], now=datetime.now(UTC) + LATER)
    later.raise_for_errors()
    assert repo_keys(faulty, "leases/") == []
    data_ids = {key.split("/")[2] for key in repo_keys(faulty, f"data/{target}/")}
    assert data_ids == ({killed} if committed else set())
    assert assert_all_listed_verify(run_cli) == ([killed] if committed else [])
    assert_recovers(run_cli, target)
    assert len(assert_all_listed_verify(run_cli)) == 1 + committed


# --- an uncertain manifest PUT, as the user sees it -----------------------------------------


@pytest.mark.parametrize("target", ["app", "files"])
def test_manifest_reply_lost_the_run_succeeds_and_everything_listed_verifies(
    faulty, fault_proxy, run_cli, target
):
    fault_proxy.add("drop_response", method="PUT", path=rf"/repo/manifests/{target}/")
    made = run_cli(*COMMAND[target], "--json")
    fault_proxy.clear()
    listed = assert_all_listed_verify(run_cli)  # before this fix: listed, data deleted
    assert made.code == 0, made.stderr
    assert listed == [made.json()["backup_id"]]
    gc = run_cli("gc", "--grace", "1s")
    assert gc.code == 0, gc.stderr


@pytest.mark.parametrize("target", ["app", "files"])
def test_unresolvable_manifest_put_exits_4_naming_the_backup_and_what_to_run(
    faulty, fault_proxy, run_cli, target
):
    fault_proxy.add("drop_response", method="PUT", path=rf"/repo/manifests/{target}/")
    fault_proxy.add("reset_request", path=rf"/repo/manifests/{target}/")
    failed = run_cli(*COMMAND[target])
    fault_proxy.clear()
    (data,) = {key.split("/")[2] for key in repo_keys(faulty, f"data/{target}/")}
    ref = f"{target}/{data}"
    assert failed.code == 4
    first, hint = failed.error_lines[-2:]
    assert first.startswith(
        f"drbackup: error: backup {ref}: cannot tell whether its "
        f"manifest was written (cannot read manifests/{ref}: s3 endpoint "
    )
    assert first.endswith("unreachable (connection closed)); its data is kept")
    assert hint == (
        f"hint: when the storage answers again, 'drbackup list --target {target}' shows "
        f"whether the backup exists and 'drbackup verify {ref}' checks it; if it is not "
        "listed, 'drbackup prune' removes its data after the leftover grace"
    )
    assert assert_all_listed_verify(run_cli) == [data]  # the PUT had landed
    assert run_cli("verify", ref).code == 0


# --- soak: 30% of repository requests fail ------------------------------------------------

SOAK_ROUNDS = int(os.environ.get("DRBACKUP_SOAK_ROUNDS", "1"))


def transient(result) -> bool:
    """The run failed as a transient storage failure should: exit 4 (a 503 that outlasts
    the retries is "unreachable", never a failed run or damage)."""
    return result.code == 4


def soak_commands(pg_cluster, round_no: int, run_cli):
    restore_db = f"soak_restore_{os.getpid()}_{round_no}"
    latest = (listed_ids(run_cli) or ["none"])[-1]
    return restore_db, [
        ("backup", "postgres", "app"),
        ("snapshot", "minio", "files"),
        ("restore", "postgres", "app", "--into", pg_cluster.dsn(restore_db), "--create"),
        ("verify", latest),
        ("prune",),
    ]


@pytest.mark.parametrize(
    "rounds",
    [
        pytest.param(SOAK_ROUNDS, id="default"),
        pytest.param(
            max(SOAK_ROUNDS, 8), id="long", marks=[pytest.mark.slow, pytest.mark.timeout(2400)]
        ),
    ],
)
def test_soak_with_30_percent_5xx(faulty, pg_db, pg_cluster, fault_proxy, run_cli, rounds):
    for section in (faulty.data["postgres"]["app"], faulty.data["minio"]["files"]):
        section["retention"] = {"keep_last": 3}  # every check verifies all that is listed
    faulty.write()
    assert run_cli(*COMMAND["app"]).code == 0
    assert run_cli(*COMMAND["files"]).code == 0
    outcomes = []
    databases = []
    try:
        for round_no in range(rounds):
            restore_db, commands = soak_commands(pg_cluster, round_no, run_cli)
            databases.append(restore_db)
            for command in commands:
                fault_proxy.fail_rate(0.3)
                result = run_cli(*command)
                fault_proxy.clear()
                outcomes.append((command[0], result.code))
                assert result.code == 0 or transient(result), (command, result)
                assert_all_listed_verify(run_cli)
                if result.code != 0:
                    assert_recovers(run_cli, "files" if command[0] == "snapshot" else "app")
    finally:
        for name in databases:
            with psycopg.connect(pg_cluster.dsn(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert len(outcomes) == 5 * rounds
