"""Which ``wal`` settings the WAL readers (restores, wal-fetch) and writers (wal-push) use."""

from __future__ import annotations

import pytest

from drbackup.actions.context import AppContext
from drbackup.actions.wal_push import read_settings, wal_settings
from drbackup.config import load_config
from drbackup.config.wal import WalSettings
from drbackup.errors import UsageError

CONFIG = """
repository: {url: /srv/repo}
postgres:
  app: {dsn: "postgresql://db/postgres", databases: all, wal: {fetch_ahead: 3}}
minio:
  files: {endpoint: "minio:9000", buckets: [media]}
"""


@pytest.fixture
def app(tmp_path) -> AppContext:
    path = tmp_path / "drbackup.yaml"
    path.write_text(CONFIG)
    return AppContext(load_config(str(path), env={"DRBACKUP_HOME": str(tmp_path)}))


def test_a_configured_target_reads_with_its_own_settings(app):
    assert read_settings(app, "app").fetch_ahead == 3 == wal_settings(app, "app").fetch_ahead


def test_a_target_the_config_does_not_name_reads_with_the_defaults(app):
    """A restore host's config names only the repository."""
    assert read_settings(app, "other") == WalSettings()
    with pytest.raises(UsageError, match="unknown target 'other'"):
        wal_settings(app, "other")  # writers never archive under a mistyped name


def test_a_bucket_target_is_refused_either_way(app):
    for settings in (read_settings, wal_settings):
        with pytest.raises(UsageError, match="'files' is a minio target, not a postgres target"):
            settings(app, "files")
