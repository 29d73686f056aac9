"""The PostgreSQL version rules: a client no older than the server it dumps, an ephemeral
drill cluster no older than the backup's server; refused as configuration errors (exit 2)
naming the package to install."""

from __future__ import annotations

import pytest

from drbackup.errors import EXIT_USAGE, ConfigError, RestoreError
from drbackup.sources.postgres import versions
from drbackup.sources.postgres.restore import PhaseClock, _raise_on_errors


def test_a_client_as_new_as_or_newer_than_the_server_is_accepted() -> None:
    versions.require_client_for_server("pg_dump", (17, 2), 170004)
    versions.require_client_for_server("pg_dump", (17, 2), 150008)


def test_a_client_older_than_the_server_is_a_config_error_naming_the_package() -> None:
    with pytest.raises(ConfigError) as caught:
        versions.require_client_for_server("pg_dump", (15, 8), 170002)
    assert caught.value.exit_code == EXIT_USAGE
    assert caught.value.message == "pg_dump 15.8 is older than the server (PostgreSQL 17)"
    assert caught.value.hint == (
        "install postgresql-client-17 (or newer; apt.postgresql.org has every major), "
        "or set DRBACKUP_PG_CLIENT_BIN to the directory holding it"
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
        "(PostgreSQL 17)"
    )
    assert caught.value.hint.startswith("install postgresql-17 (or newer;")
    assert "DRBACKUP_PG_BIN" in caught.value.hint


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
