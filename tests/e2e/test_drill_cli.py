"""``drbackup drill`` as users run it: exit codes, what is printed, signed reports, history,
and scratch cleanup after Ctrl-C, SIGTERM and SIGKILL."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from drbackup.codec import keys
from drbackup.drill.scratch import DRILL_LOCK_KEY
from tests.e2e.conftest import load_awkward, wait_for

PREFIX = "drbackup_drill_"


def add_signing_key(cfg) -> Path:
    key_file = cfg.tmp_path / "drill-signing.key"
    key_file.write_text(keys.b64(os.urandom(32)) + "\n")
    # The scratch is the session cluster: the target's own server, opted in.
    cfg.data["drill"] = {"signing_key_file": str(key_file), "scratch_on_source_server": True}
    cfg.write()
    return key_file


def scratch_databases(cluster) -> list[str]:
    rows = cluster.execute(
        "SELECT datname FROM pg_database WHERE left(datname, %s) = %s ORDER BY 1",
        params=(len(PREFIX), PREFIX),
    )
    return [r[0] for r in rows]


def test_drill_passes_and_its_signed_report_verifies(repo_config, pg_db, run_cli, tmp_path):
    key_file = add_signing_key(repo_config)
    load_awkward(pg_db)
    assert run_cli("backup", "postgres", "app").code == 0
    report_path = tmp_path / "drill.md"
    result = run_cli("drill", "run", "--target", "app", "-o", report_path)
    assert result.code == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first.startswith("drill ") and first.endswith(": WARN - 7 passed, 1 warned, 0 failed")
    assert (
        "  WARN  foreign_keys  1 pre-existing inconsistency: foreign key reviews_customer_fk"
        in (result.stdout)
    )
    assert f"report written to {report_path}" in result.stderr
    assert scratch_databases(pg_db.cluster) == []

    ok = run_cli("drill", "verify-report", report_path, "--key-file", key_file)
    assert ok.code == 0, ok.stderr
    assert ok.stdout.startswith("ok: drill ") and "report is authentic (ed25519 key " in ok.stdout
    as_json = run_cli("drill", "verify-report", report_path, "--key-file", key_file, "--json")
    assert as_json.code == 0, as_json.stderr
    verified = as_json.json()
    assert (verified["file"], verified["authentic"]) == (str(report_path), True)
    assert (verified["covers"], verified["targets"]) == ("document", ["app"])
    assert (verified["status"], verified["counts"]) == ("warn", {"pass": 7, "warn": 1, "fail": 0})
    assert verified["drill_id"] in ok.stdout and verified["key_id"] in ok.stdout
    assert verified["fingerprint"].startswith("ed25519:")
    public = run_cli("drill", "public-key")
    assert (
        run_cli("drill", "verify-report", report_path, "--public-key", public.stdout.strip()).code
        == 0
    )

    text = report_path.read_text()
    report_path.write_text(text.replace('"status": "warn"', '"status": "pass"', 1))
    bad = run_cli("drill", "verify-report", report_path, "--key-file", key_file)
    assert bad.code == 3
    # issue 20: every byte is signed, so the edit is named against the detached signature
    assert bad.error_lines == [
        "drbackup: error: bad signature: the report was changed after it was signed "
        "(drill.md: its bytes do not match its detached signature)"
    ]

    history = run_cli("drill", "history", "--json")
    assert history.code == 0
    data = history.json()
    assert [e["target"] for e in data["drills"]] == ["app"]
    assert data["drills"][0]["status"] == "warn" and data["drills"][0]["signed"]
    assert data["trend"]["app"]["drills"] == 1


def test_a_failing_drill_exits_3_naming_the_cause(local_repo_config, pg_db, run_cli, tmp_path):
    add_signing_key(local_repo_config)
    pg_db.execute(
        "CREATE TABLE codes (code text PRIMARY KEY); INSERT INTO codes VALUES ('a');"
        "CREATE FUNCTION ok(c text) RETURNS boolean LANGUAGE sql"
        "  AS $$ SELECT EXISTS (SELECT 1 FROM codes WHERE code = c) $$;"
        "CREATE TABLE items (id int PRIMARY KEY, code text CHECK (ok(code)));"
        "INSERT INTO items VALUES (1, 'a'), (2, 'a');"
    )
    assert run_cli("backup", "postgres", "app").code == 0
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "targets: [app]\nrto: 1ms\nreport: {output: '" + str(tmp_path) + "/{plan}.json'}\n"
    )
    result = run_cli("drill", "run", plan, "--format", "json")
    assert result.code == 3
    report = result.json()
    assert report["status"] == "fail" and report["plan"] == "plan"
    error = result.error_lines[-1]
    assert error.startswith(f"drbackup: error: drill {report['drill_id']} failed (3 of 8 checks): ")
    assert f"app/{pg_db.name} restore: pg_restore reported 1 error(s): " in error
    assert 'relation "codes" does not exist' in error
    assert "row count of table public.items differs: expected 2, actual 0" in error
    assert "app rto: not met: the restore failed after " in error
    assert json.loads((tmp_path / "plan.json").read_text())["drill_id"] == report["drill_id"]
    history = run_cli("drill", "history")
    assert history.code == 0
    assert "FAIL" in history.stdout and "restore, tables, rto" in history.stdout
    assert history.stdout.splitlines()[-1].startswith("rto trend app: ")
    # the page names the failed checks, not "no message"
    (app,) = run_cli("report", "--target", "app", "--format", "json").json()["targets"]
    (failed_runs,) = [f["message"] for f in app["findings"] if "failed run" in f["message"]]
    assert (
        "restore: pg_restore reported 1 error(s)" in failed_runs and "no message" not in failed_runs
    )


def test_usage_errors(local_repo_config, run_cli, tmp_path):
    assert run_cli("drill", "run").error_lines == [
        "drbackup: error: give a drill plan, target names or --all",
        "hint: e.g. drbackup drill run app, or drbackup drill run drills/monthly.yaml",
    ]
    none = run_cli("drill", "run", "--target", "app")
    assert none.code == 2
    assert none.error_lines[-2].startswith("drbackup: error: no backups of target app in ")
    plan = tmp_path / "bad.yaml"
    plan.write_text("targets: [ap]\nbackup: newest\n")
    bad = run_cli("drill", "run", plan)
    assert bad.code == 2
    assert bad.error_lines == [
        f"drbackup: error: drill plan {plan} has 2 errors",
        "at 'backup': expected 'latest', 'random', {point_in_time: <ISO 8601 time>} or {id: <backup id>}",
        "at 'targets[0]': unknown target 'ap' (did you mean 'app'?); known targets: app",
    ]
    unsigned = tmp_path / "r.json"
    unsigned.write_text(json.dumps({"format": "drbackup-drill-report", "drill_id": "x"}))
    missing_key = run_cli("drill", "verify-report", unsigned)
    assert missing_key.code == 2 and "no public key to verify with" in missing_key.stderr


def test_without_a_scratch_the_drill_is_refused_and_nothing_is_restored(
    local_repo_config, pg_db, run_cli, tmp_path, monkeypatch
):
    # No drill.scratch_dsn, no opt-in, no server binaries: the production server is not
    # the fallback.
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
    assert run_cli("backup", "postgres", "app").code == 0
    monkeypatch.setenv("DRBACKUP_PG_BIN", str(tmp_path))
    result = run_cli("drill", "run", "--target", "app")
    assert (result.code, result.stdout) == (2, "")
    assert result.error_lines[-2:] == [
        "drbackup: error: no scratch server for the drill of app: drill.scratch_dsn is not set "
        "and no postgresql server binaries were found here to start a private cluster",
        "hint: set drill.scratch_dsn to a server where drills may create databases, install "
        "the PostgreSQL server (initdb, postgres) here for a private cluster, or set "
        "drill.scratch_on_source_server: true to restore onto the target's own server",
    ]
    assert scratch_databases(pg_db.cluster) == []


def test_cleanup_names_what_looks_like_scratch_but_is_not_marked(local_repo_config, pg_db, run_cli):
    add_signing_key(local_repo_config)
    lookalike = PREFIX + "app_20200101t000000z_abcdef"
    pg_db.cluster.create_database(lookalike)
    try:
        result = run_cli("drill", "cleanup")
        assert (result.code, result.stdout) == (0, "nothing to remove\n")
        (line,) = result.error_lines
        assert line.startswith(f"left alone: database {lookalike} on ")
        assert line.endswith(
            "is named like drill scratch but carries no drbackup marker for that name "
            "(drop it by hand if it is a leftover)"
        )
        assert scratch_databases(pg_db.cluster) == [lookalike]
    finally:
        pg_db.cluster.execute(f"DROP DATABASE {lookalike}")


# -- interrupted drills leave nothing behind ----------------------------------------------------


@pytest.fixture
def big_app(local_repo_config, big_db, run_cli):
    """Target app is the session's big database copy (~300k rows), so that a restore lasts
    long enough to be interrupted."""
    local_repo_config.set_target("app", big_db.dsn)
    local_repo_config.data["drill"] = {"scratch_on_source_server": True}  # the session cluster
    local_repo_config.write()
    assert run_cli("backup", "postgres", "app").code == 0
    return big_db


def drill_locks(cluster) -> list:
    return cluster.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s",
        params=(DRILL_LOCK_KEY,),
    )


def marked_scratch(cluster) -> list[str]:
    """Scratch databases whose drill has set its marker (the comment follows CREATE)."""
    rows = cluster.execute(
        "SELECT datname FROM pg_database WHERE left(datname, %s) = %s"
        " AND shobj_description(oid, 'pg_database') LIKE 'drbackup drill scratch %%'",
        params=(len(PREFIX), PREFIX),
    )
    return [r[0] for r in rows]


def wait_for_scratch(cluster) -> str:
    return wait_for(lambda: marked_scratch(cluster), 30, "the marked scratch database")[0]


def test_sigkill_then_next_drill_removes_the_leftover(big_app, spawn_cli, run_cli):
    proc = spawn_cli("drill", "run", "--target", "app")
    leftover = wait_for_scratch(big_app.cluster)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert scratch_databases(big_app.cluster) == [leftover]  # nothing could clean up
    # The server ends the dead drill's sessions (and its locks) when it notices the closed
    # sockets: wait for that, as the next scheduled drill would.
    wait_for(lambda: not drill_locks(big_app.cluster), 30, "the killed drill's locks to go")
    result = run_cli("drill", "run", "--target", "app")
    assert result.code == 0, result.stderr
    assert f"removed leftover scratch databases of earlier drills: {leftover}" in result.stderr
    assert scratch_databases(big_app.cluster) == []


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)]
)
def test_sigterm_and_ctrl_c_clean_up(big_app, spawn_cli, sig):
    proc = spawn_cli("drill", "run", "--target", "app")
    wait_for_scratch(big_app.cluster)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "drbackup: interrupted"
    assert scratch_databases(big_app.cluster) == []


def test_sigkill_of_an_ephemeral_drill_then_next_drill_removes_the_cluster(
    local_repo_config, pg_db, spawn_cli, run_cli, tmp_path
):
    pg_db.execute(
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)"
    )
    assert run_cli("backup", "postgres", "app").code == 0
    base = Path(tempfile.mkdtemp(prefix="drb-drill-"))
    base.chmod(0o755)
    try:
        plan = tmp_path / "eph.yaml"
        plan.write_text(f"targets: [app]\nscratch: {{ephemeral: true, base_dir: {base}}}\n")
        proc = spawn_cli("drill", "run", plan)
        pid_file = wait_for(lambda: list(base.glob("*/data/postmaster.pid")), 60, "the cluster")[0]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cluster_dir = pid_file.parent.parent
        assert cluster_dir.exists()
        result = run_cli("drill", "run", plan)
        assert result.code == 0, result.stderr
        assert f"removed leftover scratch clusters: {cluster_dir}" in result.stderr
        assert list(base.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_ephemeral_cluster_older_than_the_backup_is_refused_before_it_starts(
    local_repo_config, pg_db, run_cli, tmp_path, monkeypatch
):
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    assert run_cli("backup", "postgres", "app").code == 0
    major = pg_db.cluster.server_version_num // 10000
    old = tmp_path / "old-bin"  # server binaries of an older major than the backup's server
    old.mkdir()
    for name in ("initdb", "postgres"):
        (old / name).write_text("#!/bin/sh\necho 'postgres (PostgreSQL) 9.6.24'\n")
        (old / name).chmod(0o755)
    monkeypatch.setenv("DRBACKUP_PG_BIN", str(old))
    base = tmp_path / "clusters"
    plan = tmp_path / "eph.yaml"
    plan.write_text(f"targets: [app]\nscratch: {{ephemeral: true, base_dir: {base}}}\n")

    result = run_cli("drill", "run", plan)
    assert result.code == 2
    assert result.error_lines[-2:] == [
        "drbackup: error: the ephemeral drill cluster would be PostgreSQL 9, older than the "
        f"backup's server (PostgreSQL {major}): install postgresql-{major}",
        "hint: apt.postgresql.org carries every major; or set DRBACKUP_PG_BIN to its bin "
        "directory, or drill on a server (scratch.server)",
    ]
    assert not base.exists()  # nothing was created


def _openssl_verify(pem: Path, document: Path) -> subprocess.CompletedProcess:
    argv = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pem), "-rawin"]
    argv += ["-in", str(document), "-sigfile", f"{document}.sig"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30)


def test_an_auditor_verifies_every_byte_with_only_the_public_key(
    local_repo_config, pg_db, run_cli, tmp_path, monkeypatch
):
    add_signing_key(local_repo_config)
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
    assert run_cli("backup", "postgres", "app").code == 0
    report = tmp_path / "drill.md"
    monkeypatch.setenv("DRBACKUP_OPERATOR", "alice")
    assert run_cli("drill", "run", "--target", "app", "-o", report).code == 0
    pem = tmp_path / "signer.pem"
    pem.write_text(run_cli("drill", "public-key", "--pem").stdout)
    fingerprint = run_cli("drill", "public-key", "--fingerprint").stdout.strip()
    text = report.read_text()
    assert f"signed with ed25519 key {fingerprint} by alice on " in text
    original = report.read_bytes()

    # the auditor has the report, its .sig and the public key: no config, no repository
    monkeypatch.setenv("DRBACKUP_CONFIG", str(tmp_path / "no-such-config.yaml"))
    ok = run_cli("drill", "verify-report", report, "--public-key", pem)
    assert ok.code == 0, ok.stderr
    assert "report is authentic (ed25519 key " in ok.stdout and "every byte" in ok.stdout
    assert _openssl_verify(pem, report).returncode == 0  # Debian's openssl, no drbackup

    host_line = next(line for line in text.splitlines() if line.startswith("- Host: "))
    table_row = next(line for line in text.splitlines() if line.startswith("| tables |"))
    edits = [
        text.replace(host_line, host_line.replace("- Host: ", "- Host: x"), 1),
        text.replace(table_row, table_row.replace("| PASS |", "| FAIL |"), 1),
        text.replace("**Status: PASS**", "**Status:  PASS**", 1),
        text + " ",
    ]
    for edited in edits:
        assert edited != text
        report.write_text(edited)
        bad = run_cli("drill", "verify-report", report, "--public-key", pem)
        assert (bad.code, bad.error_lines) == (
            3,
            [
                "drbackup: error: bad signature: the report was changed after it was signed "
                "(drill.md: its bytes do not match its detached signature)"
            ],
        )
        assert _openssl_verify(pem, report).returncode == 1
    report.write_bytes(original)
    Path(f"{report}.sig").unlink()
    unsigned = run_cli("drill", "verify-report", report, "--public-key", pem)
    assert unsigned.code == 3
    assert unsigned.error_lines[0] == (
        "drbackup: error: drill.md has no detached signature (drill.md.sig not found)"
    )


def test_after_a_key_rotation_old_reports_verify_with_the_configured_keys(
    local_repo_config, pg_db, run_cli, tmp_path
):
    old_key = add_signing_key(local_repo_config)
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")
    assert run_cli("backup", "postgres", "app").code == 0
    report = tmp_path / "old.json"
    assert run_cli("drill", "run", "--target", "app", "-o", report).code == 0
    old_public = run_cli("drill", "public-key").stdout.strip()
    new_key = tmp_path / "new-signing.key"
    new_key.write_text(keys.b64(os.urandom(32)) + "\n")
    local_repo_config.data["drill"]["signing_key_file"] = str(new_key)
    local_repo_config.write()
    refused = run_cli("drill", "verify-report", report)
    assert refused.code == 3
    old_id = keys_id(old_public)
    assert refused.error_lines[0].startswith(
        f"drbackup: error: old.json was signed by key {old_id}, not by a trusted key ("
    )
    local_repo_config.data["drill"]["trusted_keys"] = [old_public]
    local_repo_config.write()
    ok = run_cli("drill", "verify-report", report)
    assert ok.code == 0, ok.stderr
    assert f"(ed25519 key {old_id}; every byte and its record)" in ok.stdout
    assert old_key.exists()


def keys_id(public_b64: str) -> str:
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]


def test_into_major_restores_into_exactly_that_major_or_is_refused(
    local_repo_config, pg_db, run_cli, tmp_path
):
    """On the host's own major an upgrade rehearsal is a plain drill, recorded as a
    rehearsal; a major not installed, an older one, or a scratch server of another major is
    refused (exit 2) before anything is restored.  Into a newer major: tests/image."""
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
    assert run_cli("backup", "postgres", "app").code == 0
    major = pg_db.cluster.server_version_num // 10000
    base = Path(tempfile.mkdtemp(prefix="drb-drill-"))  # short: the socket path
    base.chmod(0o755)
    plan = tmp_path / "same.yaml"
    plan.write_text(
        f"targets: [app]\nscratch: {{ephemeral: true, base_dir: {base}}}\n"
        f"into_major: {major}\nreport: {{output: {tmp_path / 'r.json'}}}\n"
    )
    try:
        result = run_cli("drill", "run", plan)
    finally:
        leftovers = list(base.iterdir())
        shutil.rmtree(base, ignore_errors=True)
    assert result.code == 0, result.stderr
    assert leftovers == []
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["targets"][0]["postgresql"] == {
        "backup_major": major, "restored_major": major, "upgrade": False, "rehearsal": True,
    }  # fmt: skip
    assert "upgrade rehearsal" not in result.stdout  # nothing was upgraded

    missing = run_cli("drill", "run", "--target", "app", "--ephemeral", "--into-major", "99")
    assert missing.code == 2
    assert missing.error_lines[-2].startswith(
        "drbackup: error: the PostgreSQL 99 server is not installed (installed: "
    )
    assert missing.error_lines[-2].endswith("): install postgresql-99")
    older = run_cli(
        "drill", "run", "--target", "app", "--ephemeral", "--into-major", str(major - 1)
    )
    assert older.code == 2
    assert older.error_lines[-2] == (
        f"drbackup: error: cannot drill a backup of PostgreSQL {major} into PostgreSQL "
        f"{major - 1}: a restore goes into the same or a newer major"
    )
    server = tmp_path / "server.yaml"
    server.write_text(
        f"targets: [app]\nscratch: {{server: '{pg_db.cluster.dsn()}'}}\ninto_major: {major + 2}\n"
    )
    elsewhere = run_cli("drill", "run", server)
    assert elsewhere.code == 2
    assert elsewhere.error_lines[-2] == (
        f"drbackup: error: scratch server {pg_db.cluster.dsn()} is PostgreSQL {major}, and the "
        f"drill restores into PostgreSQL {major + 2} (into_major)"
    )
    assert scratch_databases(pg_db.cluster) == []
