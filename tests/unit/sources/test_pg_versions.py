"""The PostgreSQL version rules: a client no older than the server it dumps or the pg_dump
that wrote the backup, the exact major for physical restores, an ephemeral drill cluster of
the backup's own major (else the nearest newer one, or exactly the rehearsal's); refused as
configuration errors (exit 2) whose one line names the package to install.

Installed majors are real directories in Debian's layout under a temporary root, holding
executable files of the tools' names (nothing is run for a Debian directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drbackup.errors import EXIT_USAGE, ConfigError, RestoreError
from drbackup.sources.postgres import commands, versions
from drbackup.sources.postgres.restore import PhaseClock, _raise_on_errors

CLIENT = ("pg_dump", "pg_restore", "pg_dumpall", "pg_receivewal")
SERVER = ("initdb", "postgres")


def install(root: Path, major: int, tools=CLIENT + SERVER) -> Path:
    """``root/<major>/bin`` with an executable file per tool."""
    bin_dir = root / str(major) / "bin"
    bin_dir.mkdir(parents=True)
    for tool in tools:
        (bin_dir / tool).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    return bin_dir


@pytest.fixture
def lib(tmp_path, monkeypatch) -> Path:
    """An empty /usr/lib/postgresql; no overrides, nothing on PATH."""
    for name in (commands.CLIENT_BIN_ENV, versions.SERVER_BIN_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    root = tmp_path / "postgresql"
    root.mkdir()
    return root


def test_a_client_as_new_as_or_newer_than_the_server_is_accepted() -> None:
    versions.require_client_for_server("pg_dump", (17, 2), 170004)
    versions.require_client_for_server("pg_dump", (17, 2), 150008)


def test_a_client_older_than_the_server_is_a_config_error_naming_the_package() -> None:
    with pytest.raises(ConfigError) as caught:
        versions.require_client_for_server("pg_dump", (15, 8), 170002)
    assert caught.value.exit_code == EXIT_USAGE
    assert caught.value.message == (
        "pg_dump 15.8 is older than the server (PostgreSQL 17): install postgresql-client-17"
    )
    assert caught.value.hint == (
        "a newer pg_dump works with every older server (apt.postgresql.org carries every "
        "major); or set the target's pg_bin_dir (or DRBACKUP_PG_CLIENT_BIN) to a directory "
        "holding pg_dump 17 or newer"
    )


def test_a_cluster_older_than_the_backup_is_a_config_error_naming_the_package() -> None:
    versions.require_cluster_for_backup(17, 170002)
    versions.require_cluster_for_backup(17, 150008)
    versions.require_cluster_for_backup(15, None)  # an old manifest without the version
    with pytest.raises(ConfigError) as caught:
        versions.require_cluster_for_backup(15, 170002)
    assert caught.value.exit_code == EXIT_USAGE
    assert caught.value.message == (
        "the ephemeral drill cluster would be PostgreSQL 15, older than the backup's server "
        "(PostgreSQL 17): install postgresql-17"
    )
    assert caught.value.hint.startswith("apt.postgresql.org carries every major;")
    assert "DRBACKUP_PG_BIN" in caught.value.hint


# -- which installed binaries serve which major -------------------------------------------------


def test_debian_directories_are_found_by_major_and_tool(lib) -> None:
    install(lib, 15)
    install(lib, 17, tools=CLIENT)  # a client-only major
    (lib / "16").mkdir()  # an empty leftover
    (lib / "extra" / "bin").mkdir(parents=True)
    assert commands.installed_bin_dirs("pg_dump", lib) == {15: lib / "15/bin", 17: lib / "17/bin"}
    assert versions.installed_servers(lib) == {15: lib / "15/bin"}
    assert commands.major_of_bin_dir(lib / "17/bin") == 17
    assert commands.major_of_bin_dir(Path("/usr/local/pgsql/bin")) is None


def test_the_newest_client_is_used_for_every_server(lib) -> None:
    install(lib, 15)
    install(lib, 17, tools=CLIENT)
    assert commands.find_client_bin_dir(150008, root=lib) == lib / "17/bin"
    assert commands.find_client_bin_dir(170002, root=lib) == lib / "17/bin"
    assert commands.find_client_bin_dir(170002, "/opt/pg/bin", root=lib) == Path("/opt/pg/bin")


def test_a_tool_that_must_match_the_server_is_taken_of_exactly_its_major(lib) -> None:
    install(lib, 15)
    install(lib, 17, tools=CLIENT)
    assert versions.client_bin_dir_for_major(15, "pg_receivewal", lib) == lib / "15/bin"
    with pytest.raises(ConfigError) as caught:
        versions.client_bin_dir_for_major(16, "pg_receivewal", lib)
    assert caught.value.message == (
        "pg_receivewal of PostgreSQL 16 is not installed (installed: 15, 17): "
        "install postgresql-client-16"
    )


def test_a_physical_restore_needs_exactly_the_backups_server(lib) -> None:
    install(lib, 15)
    assert versions.server_bin_dir_for_major(15, lib) == lib / "15/bin"
    with pytest.raises(ConfigError) as caught:
        versions.server_bin_dir_for_major(17, lib)
    assert caught.value.exit_code == EXIT_USAGE
    assert caught.value.message == (
        "the PostgreSQL 17 server is not installed (installed: 15): install postgresql-17"
    )


def test_pg_restore_must_be_as_new_as_the_pg_dump_that_wrote_the_backup() -> None:
    versions.require_restore_client(17, "17.2")
    versions.require_restore_client(17, "15.8")
    versions.require_restore_client(15, None)  # an old manifest: pg_restore will say
    with pytest.raises(ConfigError) as caught:
        versions.require_restore_client(15, "17.2")
    assert caught.value.message == (
        "the backup was written by pg_dump 17.2 and pg_restore here is 15: "
        "install postgresql-client-17"
    )


def test_a_drill_cluster_is_of_the_backups_own_major_when_installed(lib) -> None:
    for major in (15, 16, 17):
        install(lib, major)
    assert versions.server_bin_dir_for_backup(150008, root=lib) == (15, lib / "15/bin")
    assert versions.server_bin_dir_for_backup(170002, root=lib) == (17, lib / "17/bin")
    assert versions.server_bin_dir_for_backup(None, root=lib) == (17, lib / "17/bin")


def test_else_of_the_nearest_newer_major(lib) -> None:
    install(lib, 16)
    install(lib, 17)
    assert versions.server_bin_dir_for_backup(140010, root=lib) == (16, lib / "16/bin")
    with pytest.raises(ConfigError) as caught:
        versions.server_bin_dir_for_backup(180001, root=lib)
    assert caught.value.message.endswith("(PostgreSQL 18): install postgresql-18")


def test_an_upgrade_rehearsal_restores_into_exactly_its_major(lib) -> None:
    install(lib, 15)
    install(lib, 17)
    assert versions.server_bin_dir_for_backup(150008, 17, lib) == (17, lib / "17/bin")
    with pytest.raises(ConfigError) as missing:
        versions.server_bin_dir_for_backup(150008, 16, lib)
    assert missing.value.message == (
        "the PostgreSQL 16 server is not installed (installed: 15, 17): install postgresql-16"
    )
    with pytest.raises(ConfigError) as downgrade:
        versions.server_bin_dir_for_backup(170002, 15, lib)
    assert downgrade.value.message == (
        "cannot drill a backup of PostgreSQL 17 into PostgreSQL 15: a restore goes into the "
        "same or a newer major"
    )


def test_the_server_override_is_the_only_candidate(lib, tmp_path, monkeypatch) -> None:
    install(lib, 17)
    monkeypatch.setenv(versions.SERVER_BIN_ENV, str(install(tmp_path / "other", 15)))
    assert versions.installed_servers(lib) == {15: tmp_path / "other/15/bin"}
    with pytest.raises(ConfigError) as caught:
        versions.server_bin_dir_for_major(17, lib)
    assert "is not installed in DRBACKUP_PG_BIN (installed: 15)" in caught.value.message


def test_a_data_directory_says_its_major(tmp_path) -> None:
    assert versions.data_directory_major(tmp_path) is None
    (tmp_path / "PG_VERSION").write_text("17\n")
    assert versions.data_directory_major(tmp_path) == 17


def test_major_of_reads_server_version_num() -> None:
    assert versions.major_of(170002) == 17
    assert versions.major_of(150018) == 15


# -- pg_restore 17+ into an older server ----------------------------------------------------

TIMEOUT_LINES = [
    "pg_restore: connecting to database for restore",
    "pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter "
    '"transaction_timeout"',
    "Command was: SET transaction_timeout = 0;",
    'pg_restore: creating TABLE "public.orders"',
]


def clock_of(lines: list[str]) -> PhaseClock:
    clock = PhaseClock()
    for line in lines:
        clock.feed(line)
    return clock


def test_only_pg_restore_17_or_later_into_an_older_server_tolerates_transaction_timeout():
    assert versions.harmless_restore_errors(17, 17) == frozenset()
    assert versions.harmless_restore_errors(16, 15) == frozenset()
    (message,) = versions.harmless_restore_errors(18, 15)
    assert clock_of(TIMEOUT_LINES).errors == [message]  # exactly as the collector joins it


def test_a_restore_whose_only_error_is_the_harmless_one_succeeds():
    tolerated = versions.harmless_restore_errors(17, 15)
    lines = [*TIMEOUT_LINES, "pg_restore: warning: errors ignored on restore: 1"]
    _raise_on_errors(1, clock_of(lines), "restore of app", "hint", lambda: tolerated)


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (['pg_restore: error: could not execute query: ERROR:  relation "x" does not exist'], 1),
        ([], 2),  # another exit status: something else went wrong
        (["pg_restore: warning: errors ignored on restore: 2"], 1),  # pg_restore counted more
    ],
    ids=["another-error", "exit-2", "count-mismatch"],
)
def test_any_other_error_still_fails_the_restore(extra, code):
    tolerated = versions.harmless_restore_errors(17, 15)
    lines = [*TIMEOUT_LINES, *extra]
    if not any("errors ignored" in line for line in lines):
        lines.append("pg_restore: warning: errors ignored on restore: 1")
    with pytest.raises(RestoreError, match="restore of app failed"):
        _raise_on_errors(code, clock_of(lines), "restore of app", "hint", lambda: tolerated)


def test_without_tolerance_the_transaction_timeout_error_fails_the_restore():
    lines = [*TIMEOUT_LINES, "pg_restore: warning: errors ignored on restore: 1"]
    with pytest.raises(RestoreError, match="pg_restore reported 1 error"):
        _raise_on_errors(1, clock_of(lines), "restore of app", "hint")
