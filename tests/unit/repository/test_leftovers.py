"""When a leftover may go (pure rules), and how an uncertain put is resolved."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drbackup.errors import ObjectNotFoundError, StorageError, StorageUnreachableError
from drbackup.repository import commit
from drbackup.repository.leftovers import Leftover, lease_expiry
from drbackup.repository.manifest import backup_id_under
from drbackup.storage.base import ObjectInfo

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ID = "20260301T100000Z-abc123"  # started two hours before NOW
GRACE = timedelta(hours=1)


def at(delta: timedelta) -> float:
    return (NOW - delta).timestamp()


def leftover(*, data_age=None, lease_age=None, committed=False) -> Leftover:
    objects = (
        [] if data_age is None else [ObjectInfo(f"data/app/{ID}/0000-00000", 10, at(data_age))]
    )
    lease = None if lease_age is None else ObjectInfo(f"leases/app/{ID}", 1, at(lease_age))
    return Leftover("app", ID, objects=objects, lease=lease, committed=committed)


def test_recent_data_is_kept_whatever_the_lease():
    left = leftover(data_age=timedelta(minutes=5))
    assert left.kept_because(NOW, GRACE) == "kept (younger than grace)"


def test_old_data_of_a_live_writer_is_kept():
    left = leftover(data_age=timedelta(hours=30), lease_age=timedelta(seconds=40))
    assert left.lease_state(NOW, GRACE) == "live"
    assert left.kept_because(NOW, GRACE) == "kept (writer alive: lease renewed 40s ago)"


def test_a_lease_counts_live_for_the_grace_but_never_less_than_the_expiry():
    assert lease_expiry(timedelta(seconds=1)) == timedelta(minutes=15)
    assert lease_expiry(timedelta(hours=24)) == timedelta(hours=24)
    short = timedelta(seconds=1)
    stalled = leftover(data_age=timedelta(hours=3), lease_age=timedelta(minutes=14))
    assert stalled.kept_because(NOW, short).startswith("kept (writer alive")
    dead = leftover(data_age=timedelta(hours=3), lease_age=timedelta(minutes=16))
    assert (dead.lease_state(NOW, short), dead.kept_because(NOW, short)) == ("expired", None)


def test_old_data_without_a_lease_goes_after_the_grace():
    left = leftover(data_age=timedelta(hours=2))
    assert (left.lease_state(NOW, GRACE), left.kept_because(NOW, GRACE)) == ("none", None)


def test_a_committed_backups_lease_goes_once_expired_whatever_its_age():
    assert leftover(lease_age=timedelta(minutes=1), committed=True).kept_because(NOW, GRACE)
    assert leftover(lease_age=timedelta(hours=2), committed=True).kept_because(NOW, GRACE) is None


def test_last_written_is_the_newest_of_start_and_writes():
    assert leftover().last_written() == NOW - timedelta(hours=2)
    assert leftover(data_age=timedelta(minutes=3)).last_written() == NOW - timedelta(minutes=3)


@pytest.mark.parametrize(
    ("key", "prefix", "expected"),
    [
        (f"data/app/{ID}/0000-00000", "data/app/", ID),
        (f"data/app/{ID}/.tmp-x1", "data/app/", ID),
        (f"leases/app/{ID}", "leases/app/", ID),
        ("data/app/not-an-id/0000-00000", "data/app/", None),
        (f"data/other/{ID}/0000-00000", "data/app/", None),
    ],
)
def test_backup_id_under(key, prefix, expected):
    assert backup_id_under(key, prefix) == expected


# --- resolving an uncertain put ------------------------------------------------------------


class Storage:
    """A key space whose reads can be made to fail."""

    def __init__(self, objects=None, failing=0, put_error=None):
        self.objects = dict(objects or {})
        self.failing, self.put_error, self.reads = failing, put_error, 0

    def put(self, key, reader):
        if self.put_error:
            raise self.put_error
        self.objects[key] = reader.read()

    def get(self, key):
        self.reads += 1
        if self.failing:
            self.failing -= 1
            raise StorageUnreachableError(f"cannot read {key}: unreachable")
        if key not in self.objects:
            raise ObjectNotFoundError(key)
        return self.objects[key]


@pytest.fixture(autouse=True)
def no_pause(monkeypatch):
    monkeypatch.setattr(commit, "RESOLVE_PAUSE_S", 0)


def test_a_put_that_works_is_present_without_reading_back():
    storage = Storage()
    assert commit.put_and_resolve(storage, "m", b"body").state == commit.PRESENT
    assert storage.reads == 0


def test_a_failed_put_is_resolved_by_reading_back():
    lost = StorageUnreachableError("cannot write m: connection closed")
    landed = Storage({"m": b"body"}, failing=2, put_error=lost)
    outcome = commit.put_and_resolve(landed, "m", b"body")
    assert (outcome.state, outcome.error, landed.reads) == (commit.PRESENT, lost, 3)
    assert commit.put_and_resolve(Storage(put_error=lost), "m", b"body").state == commit.ABSENT


def test_an_unreadable_or_different_object_leaves_the_outcome_unknown():
    lost = StorageError("cannot write m: InternalError")
    gone = commit.put_and_resolve(Storage(failing=3, put_error=lost), "m", b"body")
    assert (gone.state, gone.reason) == (commit.UNKNOWN, "cannot read m: unreachable")
    other = commit.put_and_resolve(Storage({"m": b"other"}, put_error=lost), "m", b"body")
    assert (other.state, other.reason) == (commit.UNKNOWN, "m holds other bytes than were sent")
