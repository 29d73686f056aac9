"""Choosing a backup by time when several started in the same second."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drbackup.actions.selection import select_backup
from drbackup.errors import UsageError
from drbackup.repository.manifest import BackupRef, Manifest


class FakeRepo:
    """Manifests by ref; list_refs sorted by id like the real repository."""

    url = "/repo"

    def __init__(self, points: dict[str, datetime]):
        self.manifests = {
            BackupRef(bid, "app"): Manifest(
                backup_id=bid,
                target="app",
                kind="postgres",
                repository_id="r",
                started_at=point.isoformat(),
                finished_at=point.isoformat(),
                recovery_point=point.isoformat(),
                tool_version="t",
                items=[],
            )
            for bid, point in points.items()
        }

    def list_refs(self, target=None):
        return sorted(self.manifests, key=lambda r: r.backup_id)

    def load_manifest(self, ref):
        return self.manifests[ref]


T0 = datetime(2026, 11, 23, 4, 30, 56, tzinfo=UTC)
# Three backups in one second: the id suffix order (a < b < c) is not their time order.
REPO = FakeRepo(
    {
        "20261123T043056Z-cccccc": T0 + timedelta(microseconds=100_000),  # first
        "20261123T043056Z-aaaaaa": T0 + timedelta(microseconds=400_000),  # second
        "20261123T043056Z-bbbbbb": T0 + timedelta(microseconds=800_000),  # third
    }
)


def test_point_in_time_within_one_second_uses_recovery_points():
    chosen = select_backup(REPO, "app", point_in_time=T0 + timedelta(microseconds=600_000))
    assert chosen.manifest.backup_id == "20261123T043056Z-aaaaaa"


def test_latest_within_one_second_is_the_newest_recovery_point():
    assert select_backup(REPO, "app").manifest.backup_id == "20261123T043056Z-bbbbbb"


def test_too_early_names_the_oldest_recovery_point():
    with pytest.raises(UsageError) as exc:
        select_backup(REPO, "app", point_in_time=T0 - timedelta(microseconds=1))
    assert "backup 20261123T043056Z-cccccc" in exc.value.hint


def test_a_time_to_the_whole_second_covers_that_second():
    """``list`` shows recovery points to the second: that time, copied, must select the
    newest backup of that second, not an older one."""
    chosen = select_backup(REPO, "app", point_in_time=T0)
    assert chosen.manifest.backup_id == "20261123T043056Z-bbbbbb"
    assert chosen.note.endswith(", within the requested 2026-11-23T04:30:56+00:00")
    # with a fraction, the time is exact
    exact = select_backup(REPO, "app", point_in_time=T0 + timedelta(microseconds=150_000))
    assert exact.manifest.backup_id == "20261123T043056Z-cccccc"
