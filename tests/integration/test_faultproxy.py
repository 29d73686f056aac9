"""The fault proxy itself: each fault reaches the S3 client as the symptom it stands for.

The trust-contract tests rely on these symptoms, so they are pinned here once.
"""

from __future__ import annotations

import io
import threading

import pytest

from drbackup.errors import ObjectNotFoundError, StorageError, StorageUnreachableError

BODY = bytes(range(256)) * 64  # 16 KiB


def test_forwards_unchanged_without_rules(proxied_s3_storage, fault_proxy):
    proxied_s3_storage.put("a/b", io.BytesIO(BODY))
    assert proxied_s3_storage.get("a/b") == BODY
    assert [info.key for info in proxied_s3_storage.list("a/")] == ["a/b"]
    proxied_s3_storage.delete("a/b")
    assert not proxied_s3_storage.exists("a/b")
    assert fault_proxy.requests("PUT", r"/repo/a/b$")


def test_transient_status_is_retried_by_the_client(proxied_s3_storage, fault_proxy):
    rule = fault_proxy.add("status", method="PUT", path=r"/repo/x$", times=2, status=503)
    proxied_s3_storage.put("x", io.BytesIO(BODY))
    assert rule.hits == 2
    assert proxied_s3_storage.get("x") == BODY


def test_persistent_slowdown_is_unreachable_or_storage_error(proxied_s3_storage, fault_proxy):
    fault_proxy.add("status", method="GET", path=r"/repo/x$", status=503, code="SlowDown")
    proxied_s3_storage.put("x", io.BytesIO(BODY))
    with pytest.raises(StorageError):
        proxied_s3_storage.get("x")


def test_drop_response_applies_the_request_but_the_client_cannot_tell(
    proxied_s3_storage, fault_proxy
):
    fault_proxy.add("drop_response", method="PUT", path=r"/repo/y$")
    with pytest.raises(StorageError):
        proxied_s3_storage.put("y", io.BytesIO(BODY))
    # the retries were dropped too, but the object reached the server
    assert proxied_s3_storage.get("y") == BODY


def test_reset_request_never_reaches_the_server(proxied_s3_storage, fault_proxy):
    fault_proxy.add("reset_request", method="PUT", path=r"/repo/z$")
    with pytest.raises(StorageUnreachableError):
        proxied_s3_storage.put("z", io.BytesIO(BODY))
    with pytest.raises(ObjectNotFoundError):
        proxied_s3_storage.get("z")


@pytest.mark.parametrize("fault", ["reset_body", "truncate"])
def test_cut_bodies_never_read_as_whole(proxied_s3_storage, fault_proxy, fault):
    proxied_s3_storage.put("c", io.BytesIO(BODY))
    fault_proxy.add(fault, method="GET", path=r"/repo/c$")
    with pytest.raises(StorageError), proxied_s3_storage.open("c") as reader:
        assert reader.read() == BODY  # never reached whole


def test_stall_beyond_the_read_timeout_is_unreachable(proxied_s3_storage, fault_proxy):
    proxied_s3_storage.put("s", io.BytesIO(BODY))
    fault_proxy.add("stall", method="GET", path=r"/repo/s$", seconds=4)
    with pytest.raises(StorageUnreachableError):
        proxied_s3_storage.get("s")


def test_hold_stops_a_request_until_released(proxied_s3_storage, fault_proxy):
    rule = fault_proxy.hold(method="PUT", path=r"/repo/h$")
    done = threading.Event()

    def put() -> None:
        proxied_s3_storage.put("h", io.BytesIO(BODY))
        done.set()

    thread = threading.Thread(target=put)
    thread.start()
    rule.wait_arrived()
    assert not done.is_set()
    assert not proxied_s3_storage.exists("h")
    rule.release()
    thread.join(30)
    assert done.is_set() and proxied_s3_storage.get("h") == BODY


def test_a_dropped_hold_never_reaches_the_server(proxied_s3_storage, fault_proxy):
    rule = fault_proxy.hold(method="PUT", path=r"/repo/d$", times=3)  # every attempt
    failed = []

    def put() -> None:
        try:
            proxied_s3_storage.put("d", io.BytesIO(BODY))
        except StorageError as exc:
            failed.append(exc)

    thread = threading.Thread(target=put)
    thread.start()
    rule.wait_arrived()
    rule.drop()
    thread.join(30)
    assert rule.hits == 3 and len(failed) == 1
    assert isinstance(failed[0], StorageUnreachableError)
    assert not proxied_s3_storage.exists("d")


def test_fail_rate_hits_about_that_share(proxied_s3_storage, fault_proxy):
    rule = fault_proxy.fail_rate(0.3)
    stored = 0
    for n in range(40):
        try:
            proxied_s3_storage.put(f"r/{n}", io.BytesIO(b"x"))
            stored += 1
        except StorageError:
            pass  # all three attempts hit (~2.7% of puts)
    assert stored >= 30
    assert 0.15 < rule.hits / len(fault_proxy.log) < 0.45
