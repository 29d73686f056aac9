"""The PostgreSQL version rules: a client no older than the server it dumps, an ephemeral
drill cluster no older than the backup's server; refused as configuration errors (exit 2)
naming the package to install."""

from __future__ import annotations

import pytest

from drbackup.errors import EXIT_USAGE, ConfigError
from drbackup.sources.postgres import versions


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
