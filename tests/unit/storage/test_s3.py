"""S3 backend pieces without a server: error translation and the upload reader wrapper."""

from __future__ import annotations

import io

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    FlexibleChecksumError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from drbackup.errors import (
    BucketMissingError,
    ObjectNotFoundError,
    StorageError,
    StorageUnreachableError,
)
from drbackup.storage.s3 import _BodyReader, _FullReadCounter, _translate_error

ENDPOINT = "http://127.0.0.1:9000"


def client_error(code: str, status: int, message: str = "boom") -> ClientError:
    """A ``ClientError`` as botocore builds it from an error response."""
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "GetObject")


def translate(exc: Exception, bucket_op: bool = False) -> StorageError:
    return _translate_error(exc, "read", "backups/k", ENDPOINT, bucket_op)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (EndpointConnectionError(endpoint_url=ENDPOINT), "connection refused or no route"),
        (ConnectTimeoutError(endpoint_url=ENDPOINT), "connect timed out"),
        (ReadTimeoutError(endpoint_url=ENDPOINT), "read timed out"),
        # the server went away in the middle of an object's body
        (IncompleteReadError(actual_bytes=52, expected_bytes=106), "connection lost mid-object"),
    ],
)
def test_connection_failures_are_unreachable(exc, reason):
    error = translate(exc)
    assert type(error) is StorageUnreachableError
    assert str(error) == f"cannot read backups/k: s3 endpoint {ENDPOINT} unreachable ({reason})"
    assert error.hint == "check repository.s3.endpoint_url and that the server is running"


def test_tls_error_is_unreachable_with_verify_hint():
    error = translate(SSLError(endpoint_url=ENDPOINT, error="certificate verify failed"))
    assert type(error) is StorageUnreachableError
    assert str(error) == f"cannot read backups/k: tls error talking to {ENDPOINT}"
    assert "verify_tls" in error.hint


def test_missing_credentials_are_unreachable():
    error = translate(NoCredentialsError())
    assert type(error) is StorageUnreachableError
    assert str(error) == "cannot read backups/k: no usable s3 credentials"
    assert "access_key_id" in error.hint


@pytest.mark.parametrize(
    "exc",
    [
        client_error("AccessDenied", 403),
        client_error("InvalidAccessKeyId", 403),
        client_error("SignatureDoesNotMatch", 403),
        client_error("403", 403),
    ],
)
def test_refused_credentials_are_unreachable(exc):
    error = translate(exc)
    assert type(error) is StorageUnreachableError
    assert str(error).startswith("cannot read backups/k: access denied (")
    assert "access_key_id" in error.hint


def test_missing_bucket_is_a_configuration_error_never_damage():
    # issue 19: exit 2 (retrying cannot help), still an unreachable-kind error so that
    # verify and drills never conclude damage from it.
    error = translate(client_error("NoSuchBucket", 404))
    assert type(error) is BucketMissingError
    assert isinstance(error, StorageUnreachableError) and error.exit_code == 2
    assert str(error) == "cannot read backups/k: bucket does not exist"
    assert error.hint == "create the bucket, or fix the bucket name in the repository url"


def test_bare_404_on_a_bucket_operation_is_a_missing_bucket():
    assert type(translate(client_error("404", 404), bucket_op=True)) is BucketMissingError


@pytest.mark.parametrize("exc", [client_error("NoSuchKey", 404), client_error("404", 404)])
def test_missing_key_is_object_not_found(exc):
    error = translate(exc)
    assert type(error) is ObjectNotFoundError
    assert str(error) == "object not found: backups/k"


def test_other_server_errors_are_one_line_storage_errors():
    error = translate(client_error("InvalidRequest", 400, "we\nbroke  badly"))
    assert type(error) is StorageError
    assert str(error) == "cannot read backups/k: InvalidRequest: we broke badly"


@pytest.mark.parametrize(
    ("code", "status"),
    [("InternalError", 500), ("SlowDown", 503), ("503", 503), ("BadGateway", 502), ("", 429)],
)
def test_errors_that_outlast_the_retries_are_unreachable_not_damage(code, status):
    exc = client_error(code, status, "we\nbroke  badly")
    exc.response["ResponseMetadata"]["RetryAttempts"] = 4
    error = translate(exc)
    assert type(error) is StorageUnreachableError
    assert str(error) == (
        f"cannot read backups/k: s3 server kept failing ({code or status}: we broke badly; "
        "5 attempts)"
    )
    assert error.hint == (
        "the s3 server is overloaded or failing: try again later "
        "(repository.s3.max_attempts sets how often each request is tried)"
    )


def test_other_botocore_errors_are_storage_errors():
    error = translate(FlexibleChecksumError(error_msg="crc32 mismatch"))
    assert type(error) is StorageError
    assert str(error).startswith("cannot read backups/k: ")
    assert "\n" not in str(error)


class TrickleReader:
    """Returns at most 3 bytes per read."""

    def __init__(self, data: bytes):
        self._buf = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._buf.read(min(size, 3) if size >= 0 else 3)


def test_full_read_counter_fills_reads_and_counts():
    reader = _FullReadCounter(TrickleReader(b"0123456789"))
    assert reader.seekable() is False
    assert reader.read(4) == b"0123"
    assert reader.read(100) == b"456789"
    assert reader.read(4) == b""
    assert reader.count == 10


def test_full_read_counter_reads_the_rest():
    reader = _FullReadCounter(TrickleReader(b"0123456789"))
    reader.read(2)
    assert reader.read() == b"23456789"
    assert reader.count == 10


class BrokenBody:
    def read(self, size=None):
        raise ReadTimeoutError(endpoint_url=ENDPOINT)

    def close(self):
        self.closed = True


def test_body_reader_translates_stream_errors():
    body = BrokenBody()
    with _BodyReader(body, translate) as reader, pytest.raises(StorageUnreachableError):
        reader.read(10)
    assert body.closed
