"""What the user sees when things go wrong: exact lines on stderr and the exit code.

Exit codes (``drbackup --help``): 1 the operation failed, 2 usage or configuration error,
3 a check found damage, 4 storage or server unreachable.  Every error is ``drbackup: error: <one line>`` and a
``hint:`` line when the fix is known; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

from drbackup.actions import backup_postgres
from tests.e2e.conftest import PASSPHRASE
from tests.fixtures.s3server import free_port

WRONG_PASSPHRASE = [
    "drbackup: error: wrong passphrase: it opens none of the repository's access slots",
    "hint: check repository.encryption in the config (or DRBACKUP_PASSPHRASE)",
]


def closed_port_dsn() -> str:
    return f"postgresql://postgres@127.0.0.1:{free_port()}/app"


def test_wrong_passphrase_fails_reads_and_writes(local_repo_config, run_cli, monkeypatch, pg_db):
    pg_db.execute("CREATE TABLE t (n integer)")
    first = run_cli("backup", "postgres", "app")
    assert first.code == 0, first.stderr
    monkeypatch.setenv("DRBACKUP_PASSPHRASE", "not the passphrase")

    listed = run_cli("list")
    assert (listed.code, listed.stdout, listed.error_lines) == (1, "", WRONG_PASSPHRASE)
    # Backup and restore stretch the passphrase while they start pg_dump or look at the
    # target: a wrong one stops the backup before its fingerprint scans any table, and
    # the restore before the target's "not empty".
    fingerprints = []
    real_fingerprint = backup_postgres._fingerprint
    monkeypatch.setattr(
        backup_postgres,
        "_fingerprint",
        lambda *a: fingerprints.append(a) or real_fingerprint(*a),
    )
    backup = run_cli("backup", "postgres", "app")
    assert (backup.code, backup.stdout, backup.error_lines) == (1, "", WRONG_PASSPHRASE)
    assert fingerprints == []
    restore = run_cli("restore", "postgres", "app", "--into", pg_db.dsn)
    assert (restore.code, restore.stdout, restore.error_lines) == (1, "", WRONG_PASSPHRASE)

    monkeypatch.setenv("DRBACKUP_PASSPHRASE", PASSPHRASE)  # nothing was written
    assert len(run_cli("list", "--json").json()) == 1


def test_unreachable_server_exits_4(local_repo_config, run_cli):
    dsn = closed_port_dsn()
    local_repo_config.set_target("app", dsn)
    result = run_cli("backup", "postgres", "app")
    assert result.code == 4
    assert result.error_lines == [
        f"drbackup: error: cannot connect to {dsn}: connection refused",
        "hint: check that the server is running and the dsn's host and port",
    ]


def test_debug_shows_the_traceback_and_only_then(local_repo_config, run_cli):
    local_repo_config.set_target("app", closed_port_dsn())
    plain = run_cli("backup", "postgres", "app")
    debug = run_cli("--debug", "backup", "postgres", "app")
    assert plain.code == debug.code == 4
    assert "Traceback" not in plain.stderr
    assert debug.stderr.startswith("Traceback (most recent call last):\n")
    assert "SourceUnreachableError" in debug.stderr
    assert debug.error_lines[-2:] == plain.error_lines


def test_missing_repository(local_repo_config, run_cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    local_repo_config.data["repository"]["url"] = str(empty)
    local_repo_config.write()
    result = run_cli("list")
    assert result.code == 2
    assert result.error_lines == [
        f"drbackup: error: no repository at {empty}",
        "hint: check repository.url (-c FILE or DRBACKUP_CONFIG); "
        "'drbackup init' makes a new repository",
    ]

    gone = tmp_path / "unmounted"
    local_repo_config.data["repository"]["url"] = str(gone)
    local_repo_config.write()
    result = run_cli("backup", "postgres", "app")
    assert result.code == 4
    assert result.error_lines == [
        f"drbackup: error: repository directory does not exist: {gone}",
        "hint: check repository.url in the config you meant (-c FILE or DRBACKUP_CONFIG; "
        "without one the built-in default is used) and that its disk is mounted; "
        "'drbackup init' makes a new one",
    ]
    assert not gone.exists()  # never silently created on the wrong disk

    a_file = tmp_path / "passphrase.txt"
    a_file.write_text("not a repository")
    local_repo_config.data["repository"]["url"] = str(a_file)
    local_repo_config.write()
    result = run_cli("list")
    assert result.code == 4
    assert result.error_lines[0] == f"drbackup: error: repository path is not a directory: {a_file}"


def test_s3_endpoint_down_exits_4(s3_repo_config, run_cli):
    endpoint = f"http://127.0.0.1:{free_port()}"
    s3_repo_config.data["repository"]["s3"]["endpoint_url"] = endpoint
    s3_repo_config.write()
    result = run_cli("list")
    assert result.code == 4
    assert result.error_lines == [
        f"drbackup: error: cannot access s3://{s3_repo_config.bucket}/repo: "
        f"s3 endpoint {endpoint} unreachable (connection refused or no route)",
        "hint: check repository.s3.endpoint_url and that the server is running",
    ]


def test_list_names_a_link_in_the_repository_without_following_it(
    local_repo_config, run_cli, tmp_path
):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    link = local_repo_config.local_root / "manifests"
    link.mkdir(exist_ok=True)
    (link / "app").symlink_to(outside)
    result = run_cli("list")
    assert result.code == 0
    assert result.error_lines == [
        "no backups",
        "warning: manifests/app is a symbolic link in the repository: not followed, nothing "
        "removed through it (drbackup never follows links in a repository; remove the link)",
    ]


def test_bad_config_names_every_wrong_key(run_cli, tmp_path, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "repository:\n"
        "  url: /tmp/somewhere\n"
        "  compression: {level: 99}\n"
        "postgres:\n"
        "  app:\n"
        "    dsn: postgresql://postgres@127.0.0.1/app\n"
        "    databases: 5\n"
        "    fingerprnt: full\n"
    )
    monkeypatch.delenv("DRBACKUP_CONFIG", raising=False)
    result = run_cli("-c", path, "config", "check")
    assert result.code == 2
    assert result.stdout == ""
    assert result.error_lines == [
        f"drbackup: error: config {path} has 3 errors",
        "at 'repository.compression.level': input should be less than or equal to 22",
        "at 'postgres.app.databases': expected a non-empty list of database names or 'all'",
        "at 'postgres.app.fingerprnt': unknown key (did you mean 'fingerprint'?)",
    ]


def test_pg_dump_options_that_would_move_the_dump_are_a_config_error(
    run_cli, tmp_path, monkeypatch
):
    # pg_dump reads --form=plain as --format=plain and -vfPATH as -v -f PATH: a clear-text
    # dump written anywhere, and a backup that "completes".  Refused when the config is read.
    path = tmp_path / "dump-options.yaml"
    path.write_text(
        "postgres:\n"
        "  app:\n"
        "    dsn: postgresql://postgres@127.0.0.1/app\n"
        "    databases: [app]\n"
        "    pg_dump_options: [--no-comments, --form=plain]\n"
        "  billing:\n"
        "    dsn: postgresql://postgres@127.0.0.1/billing\n"
        "    databases: [billing]\n"
        f"    pg_dump_options: ['-vf{tmp_path}/leak.sql']\n"
    )
    monkeypatch.delenv("DRBACKUP_CONFIG", raising=False)
    result = run_cli("-c", path, "config", "check")
    assert (result.code, result.stdout) == (2, "")
    assert result.error_lines == [
        f"drbackup: error: config {path} has 2 errors",
        "at 'postgres.app.pg_dump_options[1]': pg_dump option '--form=plain' (--format) is set "
        "by drbackup (remove it)",
        f"at 'postgres.billing.pg_dump_options[0]': pg_dump option '-vf{tmp_path}/leak.sql' "
        "(--file) is set by drbackup (remove it)",
    ]


def test_unknown_target(local_repo_config, run_cli):
    result = run_cli("backup", "postgres", "ap")
    assert result.code == 2
    assert result.error_lines == [
        "drbackup: error: unknown target 'ap' (did you mean 'app'?)",
        "hint: known targets: app",
    ]
    assert run_cli("list", "--json").json() == []


def test_console_script_exit_codes_and_complete_output(tmp_path):
    # The console script skips the interpreter's teardown (cli/main.py: run): its output
    # must still arrive whole, and its exit status be the command's.
    import subprocess

    from tests.e2e.conftest import cli_argv

    def console(*args: str) -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
        return subprocess.run(cli_argv(*args), capture_output=True, text=True, env=env)

    helped = console("--help")
    assert helped.returncode == 0
    assert helped.stdout.endswith("130  interrupted (Ctrl-C / SIGTERM)\n")
    unknown = console("frobnicate")
    assert unknown.returncode == 2
    # issue 20: click's errors in drbackup's one-line style (was click's "No such command")
    assert unknown.stderr.splitlines() == [
        "drbackup: error: no such command 'frobnicate'",
        "hint: see 'drbackup --help'",
    ]
    missing = console("--config", str(tmp_path / "nope.yaml"), "list")
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"drbackup: error: config file not found: {tmp_path}")


def test_one_damaged_manifest_hides_no_other_backup(local_repo_config, run_cli, pg_db):
    """list shows every readable backup, names the damaged manifest, and exits 3."""
    pg_db.execute("CREATE TABLE t (n integer)")
    ids = []
    for _ in range(2):
        done = run_cli("backup", "postgres", "app", "--json")
        assert done.code == 0, done.stderr
        ids.append(done.json()["backup_id"])
    manifest = local_repo_config.local_root / "manifests" / "app" / ids[0]
    data = bytearray(manifest.read_bytes())
    data[-5] ^= 0x01
    manifest.write_bytes(bytes(data))

    listed = run_cli("list")
    assert listed.code == 3
    assert f"app/{ids[1]}" in listed.stdout and ids[0] not in listed.stdout
    assert (
        listed.error_lines[0] == "drbackup: error: 1 backup manifest(s) are damaged and not listed:"
    )
    assert listed.error_lines[1].startswith(
        f"  app/{ids[0]}: manifests/app/{ids[0]}: chunk 0 failed"
    )
    assert listed.error_lines[-1].startswith("hint: those backups cannot be restored")
    as_json = run_cli("list", "--json")
    assert as_json.code == 3 and [r["backup_id"] for r in as_json.json()] == [ids[1]]
    rebuilt = run_cli("catalog", "rebuild")
    assert rebuilt.code == 3  # not a silent "1 unchanged"
    assert rebuilt.error_lines[0] == "drbackup: error: 1 backup manifest(s) are damaged:"
    assert rebuilt.error_lines[1].startswith(f"  app/{ids[0]}: ")
