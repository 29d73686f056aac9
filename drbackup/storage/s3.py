"""S3 (and S3-compatible) storage: atomic puts by single PUT or multipart upload.

boto3 does the work: retries come from botocore's ``standard`` retry mode and multipart
uploads from the transfer manager, which aborts the upload when anything fails, so a failed
``put`` leaves no object behind.  Every botocore error is translated to the drbackup error
hierarchy in :func:`_translate_error`, the one place that knows botocore's exception types.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import boto3
import boto3.s3.transfer
import botocore.config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
)

from drbackup.errors import (
    ConfigError,
    StorageError,
)
from drbackup.storage.base import Capabilities, ObjectInfo, StatBacked, validate_key
from drbackup.storage.s3_errors import (
    _OBJECT_LOCK_HINT,
    _translate_error,
)

MIB = 1 << 20
MIN_PART_SIZE = 5 * MIB  # S3 rejects smaller parts (except the last one)
OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")


class S3Storage(StatBacked):
    """A bucket (optionally under a prefix) as a flat key space.  See ``storage.base``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        path_style: bool = True,
        verify_tls: bool | str = True,
        part_size: int = 8 * MIB,
        max_concurrency: int = 4,
        max_attempts: int = 5,
        object_lock: tuple[str, int] | None = None,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        list_page_size: int = 1000,
    ):
        """Build the client; no network I/O happens until the first call.

        ``max_attempts`` counts every attempt of a request (1: no retry); timeouts are in
        seconds; ``object_lock`` is ``(mode, days)`` of retention set on every put;
        ``list_page_size`` is the listing page size (tests lower it to cover paging).
        Raises ``ConfigError`` for an empty bucket, an invalid prefix, a part size below
        S3's 5 MiB minimum, non-positive concurrency/attempts or a bad ``object_lock``.
        """
        _check_options(bucket, part_size, max_concurrency, max_attempts, object_lock)
        self.bucket = bucket
        self.prefix = _normalize_prefix(prefix)
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self.capabilities = Capabilities(object_lock=object_lock is not None)
        self._object_lock = object_lock
        self._list_page_size = list_page_size
        self._transfer_config = _transfer_config(part_size, max_concurrency)
        config = botocore.config.Config(
            # botocore's "max_attempts" counts retries only; ours counts every attempt.
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
            s3={"addressing_style": "path" if path_style else "auto"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        # A session per storage: boto3 sessions are not thread-safe, and credentials given
        # here must not leak into (or be overridden by) the default session.
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            region_name=region,
        )
        self._client = session.client(
            "s3", endpoint_url=endpoint_url, verify=verify_tls, config=config
        )

    def _key(self, key: str) -> str:
        """The bucket key for the storage-relative ``key`` (validated)."""
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, s3_key: str) -> str:
        """The storage-relative key for a bucket key under the prefix."""
        return s3_key[len(self.prefix) + 1 :] if self.prefix else s3_key

    @contextmanager
    def _errors(self, action: str, name: str, *, bucket_op: bool = False) -> Iterator[None]:
        """Translate botocore errors raised inside the block; see ``_translate_error``."""
        try:
            yield
        except (BotoCoreError, ClientError) as exc:
            endpoint = self._client.meta.endpoint_url
            raise _translate_error(exc, action, name, endpoint, bucket_op) from exc

    def prepare(self) -> None:
        """Nothing to create: the bucket must exist (creating buckets is an operator's call).

        With object lock configured, raise ``ConfigError`` unless the bucket has S3 Object
        Lock enabled: without it every put would fail (or, on some servers, silently store
        unlocked objects).
        """
        if self._object_lock is not None:
            self._require_object_lock()

    def _require_object_lock(self) -> None:
        try:
            response = self._client.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ObjectLockConfigurationNotFoundError":
                endpoint = self._client.meta.endpoint_url
                raise _translate_error(exc, "access", self.url, endpoint, True) from exc
            response = {}
        except BotoCoreError as exc:
            endpoint = self._client.meta.endpoint_url
            raise _translate_error(exc, "access", self.url, endpoint, True) from exc
        if response.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise ConfigError(
                f"bucket {self.bucket} does not have object lock enabled "
                "(repository.object_lock needs it)",
                hint=_OBJECT_LOCK_HINT.format(bucket=self.bucket),
            )

    def check(self) -> None:
        """Raise ``StorageUnreachableError`` unless the bucket exists and is accessible."""
        with self._errors("access", self.url, bucket_op=True):
            self._client.head_bucket(Bucket=self.bucket)

    def put(self, key: str, reader: BinaryIO) -> int:
        """Stream ``reader`` into ``key`` atomically; return the number of bytes stored.

        The reader need not be seekable.  Memory stays near part size x (concurrency + 2):
        the parts in flight, one queued and one being read.
        Exceptions raised by the reader itself propagate unchanged (after the upload is
        aborted); botocore errors become ``StorageError`` / ``StorageUnreachableError``.
        """
        s3_key = self._key(key)
        counting = _FullReadCounter(reader)
        with self._errors("write", key):
            self._client.upload_fileobj(
                counting,
                self.bucket,
                s3_key,
                ExtraArgs=self._put_extra_args() or None,
                Config=self._transfer_config,
            )
        return counting.count

    def _put_extra_args(self) -> dict:
        """``ExtraArgs`` for an upload: object lock retention when configured."""
        if self._object_lock is None:
            return {}
        mode, days = self._object_lock
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
        return {"ObjectLockMode": mode, "ObjectLockRetainUntilDate": until}

    def open(self, key: str) -> BinaryIO:
        """A streaming reader of ``key``; the caller closes it.  Missing key: not found."""
        with self._errors("read", key):
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        return _BodyReader(response["Body"], lambda exc: self._read_error(exc, key))

    def _read_error(self, exc: Exception, key: str) -> StorageError:
        """Translate an error raised while streaming the body of ``key``."""
        endpoint = self._client.meta.endpoint_url
        return _translate_error(exc, "read", key, endpoint, False)

    def get(self, key: str) -> bytes:
        """The whole object ``key`` as bytes (small objects only)."""
        with self.open(key) as body:
            return body.read()

    def stat(self, key: str) -> ObjectInfo:
        """``ObjectInfo`` for ``key``; raises ``ObjectNotFoundError`` if it is missing."""
        with self._errors("stat", key):
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        return ObjectInfo(key=key, size=head["ContentLength"], mtime=_mtime(head))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted, one page at a time."""
        s3_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        paginator = self._client.get_paginator("list_objects_v2")
        pages = iter(
            paginator.paginate(
                Bucket=self.bucket,
                Prefix=s3_prefix,
                PaginationConfig={"PageSize": self._list_page_size},
            )
        )
        while True:
            with self._errors("list", prefix or self.url):
                page = next(pages, None)
            if page is None:
                return
            for obj in page.get("Contents", ()):
                if obj["Key"].endswith("/"):
                    continue  # a "folder" marker made by a console, not an object
                yield ObjectInfo(
                    key=self._relative(obj["Key"]),
                    size=obj["Size"],
                    mtime=obj["LastModified"].timestamp(),
                )

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error (S3 is idempotent)."""
        with self._errors("delete", key):
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def locked_until(self, key: str) -> dt.datetime | None:
        """Until when S3 Object Lock protects ``key`` (UTC), or None if it does not now.

        A legal hold counts as locked forever (``datetime.max``).  Optional method (prune
        uses it when a backend has it): on a versioned bucket a plain delete of a locked
        object "succeeds" by adding a delete marker, so prune asks before deleting.
        Raises ``ObjectNotFoundError`` for a missing key.
        """
        with self._errors("stat", key):
            head = self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        if head.get("ObjectLockLegalHoldStatus") == "ON":
            return dt.datetime.max.replace(tzinfo=dt.UTC)
        until = head.get("ObjectLockRetainUntilDate")
        if until is None or until <= dt.datetime.now(dt.UTC):
            return None
        return until.astimezone(dt.UTC)


class _FullReadCounter:
    """Wraps a reader: ``read(n)`` returns ``n`` bytes unless at EOF, and counts them.

    The transfer manager treats a short read as the end of a part (a part below 5 MiB is
    rejected by S3) or, on the first read, as a small object, and then calls ``read()`` for
    the rest, which would load a whole pipe into memory.  Filling each read avoids both.
    It reports itself non-seekable so every reader takes the same bounded-memory path.
    """

    def __init__(self, reader: BinaryIO):
        self._reader = reader
        self.count = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> bytes:
        """Read ``size`` bytes (fewer only at EOF); all the rest if ``size`` is negative."""
        if size is None or size < 0:
            data = b"".join(iter(lambda: self._read_full(MIB), b""))
        else:
            data = self._read_full(size)
        self.count += len(data)
        return data

    def _read_full(self, size: int) -> bytes:
        first = self._reader.read(size)
        if not first or len(first) >= size:
            return first
        # Accumulate in a BytesIO: getvalue() hands over its buffer, where joining a list
        # of chunks would briefly hold the part twice.
        buffer = io.BytesIO(first)
        buffer.seek(0, io.SEEK_END)
        while (remaining := size - buffer.tell()) > 0:
            chunk = self._reader.read(remaining)
            if not chunk:
                break
            buffer.write(chunk)
        return buffer.getvalue()


class _BodyReader:
    """A thin reader over botocore's ``StreamingBody`` that translates its errors."""

    def __init__(self, body, translate):
        self._body = body
        self._translate = translate

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes (all remaining if negative); ``b""`` at the end."""
        try:
            return self._body.read(None if size is None or size < 0 else size)
        except (BotoCoreError, ClientError) as exc:
            raise self._translate(exc) from exc

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        """Release the HTTP connection."""
        self._body.close()

    def __enter__(self) -> _BodyReader:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _mtime(head: dict) -> float:
    """Seconds since the epoch from a response's ``LastModified`` (0 when absent)."""
    last_modified = head.get("LastModified")
    return last_modified.timestamp() if last_modified else 0.0


def _normalize_prefix(prefix: str) -> str:
    """``prefix`` without leading/trailing slashes; ``ConfigError`` if it is not a key."""
    prefix = prefix.strip("/")
    if prefix:
        try:
            validate_key(prefix)
        except ValueError:
            raise ConfigError(
                f"invalid s3 prefix: {prefix!r}",
                hint="use '/'-separated names without empty, '.' or '..' parts",
            ) from None
    return prefix


def _check_options(
    bucket: str,
    part_size: int,
    max_concurrency: int,
    max_attempts: int,
    object_lock: tuple[str, int] | None,
) -> None:
    """Raise ``ConfigError`` for the first option S3 cannot work with."""
    if not bucket or "/" in bucket:
        raise ConfigError(f"invalid s3 bucket name: {bucket!r}", hint="use s3://bucket/prefix")
    if part_size < MIN_PART_SIZE:
        raise ConfigError(
            f"s3 part_size {part_size} is below the s3 minimum of {MIN_PART_SIZE}",
            hint="set repository.s3.part_size to at least 5 MiB",
        )
    if max_concurrency < 1 or max_attempts < 1:
        raise ConfigError("s3 max_concurrency and max_attempts must be at least 1")
    if object_lock is not None:
        mode, days = object_lock
        if mode not in OBJECT_LOCK_MODES or days < 1:
            raise ConfigError(
                f"invalid s3 object lock: {mode!r} for {days} days",
                hint="use GOVERNANCE or COMPLIANCE and at least 1 day",
            )


def _transfer_config(part_size: int, max_concurrency: int) -> boto3.s3.transfer.TransferConfig:
    """Transfer settings: multipart above ``part_size``, memory ~ part_size x concurrency."""
    config = boto3.s3.transfer.TransferConfig(
        multipart_threshold=part_size,
        multipart_chunksize=part_size,
        max_concurrency=max_concurrency,
        use_threads=True,
        # The CRT client ignores the memory bounds below; keep the classic one.
        preferred_transfer_client="classic",
    )
    # s3transfer buffers this many parts of a non-seekable upload (default 10); boto3's
    # TransferConfig does not take it as an argument but inherits the attribute.
    config.max_in_memory_upload_chunks = max_concurrency
    return config
