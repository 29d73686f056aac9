"""Opening catalogs: urls, engines, and the one-line errors of unusable ones."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from drbackup.catalog import Catalog
from drbackup.catalog.engine import parse_catalog_url
from drbackup.errors import ConfigError


def test_open_creates_the_directory_and_accepts_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Catalog.open("deep/er/catalog.db") as cat:
        assert cat.url == f"sqlite:///{tmp_path}/deep/er/catalog.db"
    assert (tmp_path / "deep" / "er" / "catalog.db").is_file()
    with Catalog.open("sqlite://") as cat:  # in memory
        assert cat.list_backups() == []


def test_postgres_urls_use_psycopg():
    assert parse_catalog_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert parse_catalog_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert parse_catalog_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"


HINT = "use sqlite:///path/to/catalog.db, a file path, or postgresql://user@host/dbname"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "catalog url is empty"),
        ("mysql://u@h/db", "unsupported catalog database: mysql"),
        ("sqlite:/catalog.db", "catalog url is not a database url: sqlite:/catalog.db"),
        (
            "postgresql://u:secret@h:port/db",
            "catalog url is not a database url: postgresql://u:***@h:port/db",
        ),
    ],
)
def test_bad_url(url, message):
    with pytest.raises(ConfigError) as info:
        Catalog.open(url)
    assert (str(info.value), info.value.hint) == (message, HINT)


def test_a_file_that_is_not_a_catalog(tmp_path):
    path = tmp_path / "catalog.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError) as info:
        Catalog.open(str(path))
    assert str(info.value) == f"cannot open catalog sqlite:///{path}: file is not a database"
    assert info.value.hint == (
        "the catalog is only an index: move it aside and run 'drbackup catalog rebuild'"
    )


@pytest.mark.parametrize("under", ["file", "file/sub"])
def test_a_directory_that_cannot_be_created(tmp_path, under):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as info:
        Catalog.open(str(tmp_path / under / "catalog.db"))
    assert (
        str(info.value)
        == f"cannot create the catalog directory {tmp_path}/{under}: not a directory"
    )


def test_unreachable_postgres_hides_the_password():
    with pytest.raises(ConfigError) as info:
        Catalog.open("postgresql://u:secret@127.0.0.1:1/db?connect_timeout=2")
    assert str(info.value).startswith(
        "cannot open catalog postgresql+psycopg://u:***@127.0.0.1:1/db"
    )
    assert "secret" not in str(info.value) and "\n" not in str(info.value)
    assert info.value.hint == "check catalog url, server and credentials"


def test_another_schema_version(tmp_path: Path):
    catalog_path = tmp_path / "catalog.db"
    with Catalog.open(str(catalog_path)) as cat, cat.engine.begin() as conn:
        conn.execute(text("UPDATE catalog_info SET value = '99' WHERE key = 'schema_version'"))
    with pytest.raises(ConfigError, match="has schema version 99, this drbackup uses 1"):
        Catalog.open(str(catalog_path))
