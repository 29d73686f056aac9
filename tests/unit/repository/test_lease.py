"""The writer's side of a lease: renewals, and when it counts its lease lost (fake clock)."""

from __future__ import annotations

import pytest

from drbackup.errors import LeaseLostError, StorageError
from drbackup.repository import lease as lease_module
from drbackup.repository.lease import Lease

KEY = "leases/app/20260301T100000Z-abc123"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Repo:
    """put_document and exists over a dict; writes can be made to fail."""

    def __init__(self, clock: Clock):
        self.objects: dict[str, dict] = {}
        self.writes = 0
        self.fail_writes = False
        self._storage = self
        self.clock, self.write_takes = clock, 0.0

    def put_document(self, key, doc):
        if self.fail_writes:
            raise StorageError(f"cannot write {key}: SlowDown")
        self.clock.now += self.write_takes
        self.objects[key] = doc
        self.writes += 1

    def exists(self, key):
        return key in self.objects

    def delete(self, key):
        self.objects.pop(key, None)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(lease_module, "_clock", fake)
    return fake


def held(clock: Clock) -> tuple[Lease, Repo]:
    repo = Repo(clock)
    lease = Lease(repo, "app", "20260301T100000Z-abc123", renew_every=3600, expiry=900)
    lease.acquire()  # the thread waits an hour: renewals below are called by hand
    return lease, repo


def test_renewals_keep_the_lease_fresh(clock):
    lease, repo = held(clock)
    for _ in range(10):
        clock.now += 60
        lease.renew()
    assert lease.fresh() and repo.writes == 11
    lease.stop()
    lease.check()


def test_failed_renewals_are_retried_until_the_limit_then_lost(clock):
    lease, repo = held(clock)
    repo.fail_writes = True
    clock.now += 400
    lease.renew()  # fails, within the limit (450 s): not lost yet
    lease.stop()
    lease.check()
    clock.now += 100
    with pytest.raises(LeaseLostError) as exc:
        lease.check()
    assert exc.value.message == (
        "backup app/20260301T100000Z-abc123 lost its lease: it was not renewed for 500s: "
        "cannot write leases/app/20260301T100000Z-abc123: SlowDown; not committed"
    )


def test_a_lost_lease_is_never_written_again(clock):
    lease, repo = held(clock)
    clock.now += 600  # paused past the limit
    lease.renew()
    assert repo.writes == 1  # not re-created: prune may have removed it meanwhile
    assert not lease.fresh()


def test_a_pause_inside_a_renewal_counts(clock):
    lease, repo = held(clock)
    clock.now += 60
    repo.write_takes = 500  # the write returned 500 s later
    lease.renew()
    lease.stop()
    with pytest.raises(LeaseLostError):
        lease.check()


def test_a_removed_lease_is_lost(clock):
    lease, repo = held(clock)
    del repo.objects[KEY]
    lease.stop()
    with pytest.raises(LeaseLostError) as exc:
        lease.check()
    assert "it was removed by another process" in exc.value.message
    lease.release()
