"""The catalog: a SQL index of repositories, backups and runs, rebuildable from the repository."""

from drbackup.catalog import drills as drills  # registers the drills table before create_all
from drbackup.catalog.index import Catalog
from drbackup.catalog.models import BackupRecord, RebuildResult, RunRecord
from drbackup.catalog.summary import summarize

__all__ = ["BackupRecord", "Catalog", "RebuildResult", "RunRecord", "summarize"]
