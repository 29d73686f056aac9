"""What an S3 failure means for drbackup: botocore's errors translated into the storage
contract's (unreachable, not found, bucket missing, other), one line with a hint."""

from __future__ import annotations

from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from drbackup.errors import (
    BucketMissingError,
    ObjectNotFoundError,
    StorageError,
    StorageUnreachableError,
)

_ENDPOINT_HINT = "check repository.s3.endpoint_url and that the server is running"
_CREDENTIALS_HINT = (
    "check repository.s3.access_key_id_file / secret_access_key_file (or AWS_ACCESS_KEY_ID / "
    "AWS_SECRET_ACCESS_KEY) and the bucket policy"
)
_BUCKET_HINT = "create the bucket, or fix the bucket name in the repository url"
_OBJECT_LOCK_HINT = (
    "enable it (AWS, versioned bucket: aws s3api put-object-lock-configuration --bucket "
    "{bucket} --object-lock-configuration ObjectLockEnabled=Enabled; MinIO: only at creation, "
    "mc mb --with-lock), or remove repository.object_lock"
)
_TLS_HINT = "check repository.s3.verify_tls (a CA bundle path, or false for a test server)"
_ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
    }
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# What botocore's standard retry mode retries as transient or throttling: still failing after
# every attempt means the server is unavailable now, not that anything stored is wrong.
_TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
_THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "BandwidthLimitExceeded",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)
_TRANSIENT_HINT = (
    "the s3 server is overloaded or failing: try again later "
    "(repository.s3.max_attempts sets how often each request is tried)"
)
# botocore connection error class -> what the user reads.
_CONNECTION_REASONS = {
    "EndpointConnectionError": "connection refused or no route",
    "ConnectTimeoutError": "connect timed out",
    "ReadTimeoutError": "read timed out",
    "ConnectionClosedError": "connection closed",
    "ProxyConnectionError": "proxy connection failed",
    "ResponseStreamingError": "response interrupted",
    "IncompleteReadError": "connection lost mid-object",
}


def _translate_error(
    exc: Exception, action: str, name: str, endpoint: str, bucket_op: bool
) -> StorageError:
    """The drbackup error for a botocore error during ``action`` on ``name``.

    Unreachable (with a hint): connection failures and timeouts, TLS errors, missing or
    refused credentials; a missing bucket too, as ``BucketMissingError`` (exit 2: retrying
    cannot help).  Not found: 404 / NoSuchKey on an object
    operation.  Anything else: ``StorageError`` with S3's error code.
    """
    what = f"cannot {action} {name}"
    if isinstance(exc, SSLError):
        return StorageUnreachableError(f"{what}: tls error talking to {endpoint}", hint=_TLS_HINT)
    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        reason = _CONNECTION_REASONS.get(type(exc).__name__, "connection failed")
        return StorageUnreachableError(
            f"{what}: s3 endpoint {endpoint} unreachable ({reason})", hint=_ENDPOINT_HINT
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return StorageUnreachableError(f"{what}: no usable s3 credentials", hint=_CREDENTIALS_HINT)
    if isinstance(exc, ClientError):
        return _translate_client_error(exc, what, name, bucket_op)
    return StorageError(f"{what}: {_one_line(str(exc))}")


def _translate_client_error(
    exc: ClientError, what: str, name: str, bucket_op: bool
) -> StorageError:
    """The drbackup error for an error response from the S3 server.

    5xx, 429 and throttling codes (SlowDown) that outlasted botocore's retries are
    unreachable: nothing can be concluded about the object, so nothing is called damaged.
    """
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    metadata = exc.response.get("ResponseMetadata", {})
    status = metadata.get("HTTPStatusCode")
    if code == "NoSuchBucket" or (bucket_op and (status == 404 or code in _NOT_FOUND_CODES)):
        return BucketMissingError(f"{what}: bucket does not exist", hint=_BUCKET_HINT)
    if status == 403 or code in _ACCESS_DENIED_CODES:
        return StorageUnreachableError(
            f"{what}: access denied ({code or status})", hint=_CREDENTIALS_HINT
        )
    if code in _NOT_FOUND_CODES or status == 404:
        return ObjectNotFoundError(name)
    message = _one_line(str(error.get("Message", ""))) or f"http {status}"
    if status in _TRANSIENT_STATUSES or code in _THROTTLING_CODES:
        attempts = int(metadata.get("RetryAttempts") or 0) + 1
        return StorageUnreachableError(
            f"{what}: s3 server kept failing ({code or status}: {message}; "
            f"{attempts} attempt{'s' if attempts > 1 else ''})",
            hint=_TRANSIENT_HINT,
        )
    return StorageError(f"{what}: {code or 'error'}: {message}")


def _one_line(text: str) -> str:
    """``text`` with all whitespace runs (newlines included) collapsed to one space."""
    return " ".join(text.split())
