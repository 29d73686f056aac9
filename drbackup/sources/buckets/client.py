"""The S3 source side: a ``minio`` client with one retry policy and one error translation.

Requests are retried by urllib3 (:func:`retry_policy`) as botocore's ``standard`` mode
retries the repository's: connection and read errors, 5xx and 429 answers (SlowDown),
with exponential backoff.  Every call goes through :meth:`BucketClient._errors`, the one
place that knows the ``minio`` and ``urllib3`` exception types: unreachable servers,
timeouts, TLS failures, refused credentials and server errors that outlast the retries
become :class:`SourceUnreachableError`; a missing bucket and other server errors
:class:`SourceError`; a key that disappeared :class:`ObjectGoneError`; a failed
``If-Match`` :class:`ObjectChangedError`; a key the client cannot address
:class:`UnsupportedKeyError` (subclasses of SourceError, raised so the snapshot can record
them instead of failing).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import Tags
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from drbackup.errors import SourceError, SourceUnreachableError
from drbackup.sources.buckets.versions import ListedVersion, parse_versions_page

# Standard headers kept with an object besides its content type and user metadata.
PRESERVED_HEADERS = ("cache-control", "content-disposition", "content-encoding", "content-language")
_META_PREFIX = "x-amz-meta-"
_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
}
# Retried as botocore's standard mode retries them; still failing after every attempt is
# "unavailable now", never a fact about an object.
TRANSIENT_STATUSES = (429, 500, 502, 503, 504)
_THROTTLING_CODES = {"SlowDown", "Throttling", "RequestThrottled", "TooManyRequests"}
_BACKOFF = {"backoff_factor": 0.5, "backoff_max": 20.0, "backoff_jitter": 0.5}


class ObjectGoneError(SourceError):
    """The object was deleted between the listing and the read (recorded as vanished)."""


class ObjectChangedError(SourceError):
    """The object's ETag is no longer the one expected (``If-Match`` failed)."""


class UnsupportedKeyError(SourceError):
    """A key the S3 client cannot address (see :func:`unsupported_key_reason`)."""


def unsupported_key_reason(key: str) -> str | None:
    """Why ``key`` cannot be read or written through this client, or None if it can.

    A ``.`` or ``..`` path segment (``../x``, ``a/./b``): HTTP clients normalise such paths,
    so the request would name another object; the minio client refuses them (and MinIO
    itself rejects such names), while AWS S3 and others accept them.  The empty key is
    not an object name at all.
    """
    if not key:
        return "an empty key"
    if any(part in (".", "..") for part in key.split("/")):
        return "a '.' or '..' path segment, which the s3 client cannot address"
    return None


def retry_policy(max_attempts: int) -> urllib3.Retry:
    """urllib3's retry of every request, up to ``max_attempts`` tries in all.

    Like botocore's ``standard`` mode (the repository side): connection errors, timeouts
    and 429/5xx answers, for every method (S3 requests are idempotent, POSTs included),
    with exponential backoff (0.5 s doubling to at most 20 s, plus jitter) and the
    server's ``Retry-After``.  The last error answer is handed to minio, which reads its
    S3 error code (``SlowDown``), instead of a bare "too many 503 responses".
    """
    return urllib3.Retry(
        total=max_attempts - 1,
        allowed_methods=None,
        status_forcelist=TRANSIENT_STATUSES,
        raise_on_status=False,
        respect_retry_after_header=True,
        **_BACKOFF,
    )


@dataclass(frozen=True)
class ListedObject:
    """What a listing says about an object."""

    key: str
    size: int
    etag: str
    last_modified: str  # ISO 8601 UTC, milliseconds


def redact_key(message: str, bucket: str, key: str) -> str:
    """``message`` with object ``key`` of ``bucket`` taken out (for what is stored or sent,
    see errors.shareable): ``bucket/key`` becomes "an object in bucket <bucket>"; if the key
    still appears (a server's own text quoting it), the text stops before it."""
    phrase = f"an object in bucket {bucket}"
    parts = message.replace(f"{bucket}/{key}", phrase).split(phrase)
    for i, part in enumerate(parts):
        if len(key) > 2 and key in part:  # a key of one or two characters tells nothing
            cut = part[: part.index(key)].rstrip(" :(/'\"")
            return phrase.join([*parts[:i], cut + " (the rest names the object)"])
    return phrase.join(parts)


def iso_time(ts: datetime | None) -> str:
    """``2026-11-23T02:44:00.123Z`` (the form stored in snapshot indexes)."""
    if ts is None:
        return ""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def split_headers(headers) -> tuple[str, dict[str, str], dict[str, str]]:
    """(content type, user metadata, preserved standard headers) from response headers."""
    content_type = "application/octet-stream"
    metadata: dict[str, str] = {}
    kept: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower == "content-type":
            content_type = value or content_type
        elif lower.startswith(_META_PREFIX):
            metadata[lower[len(_META_PREFIX) :]] = value
        elif lower in PRESERVED_HEADERS:
            kept[lower] = value
    return content_type, metadata, kept


def put_headers(metadata: dict[str, str], headers: dict[str, str]) -> dict[str, str]:
    """Request headers that recreate user metadata and the preserved standard headers."""
    out = {f"{_META_PREFIX}{name}": value for name, value in metadata.items()}
    out.update({name: value for name, value in headers.items() if name in PRESERVED_HEADERS})
    return out


class SourceObject:
    """An open GET of one object: its attributes from the response headers, and ``read``."""

    def __init__(self, response, key: str, translate):
        self._response, self._translate = response, translate
        headers = response.headers
        self.key = key
        self.etag = (headers.get("ETag") or "").strip('"')
        self.size = int(headers.get("Content-Length") or 0)
        modified = headers.get("Last-Modified")
        self.last_modified = iso_time(parsedate_to_datetime(modified)) if modified else ""
        self.content_type, self.metadata, self.headers = split_headers(headers)
        self.tag_count = int(headers.get("x-amz-tagging-count") or 0)
        version = headers.get("x-amz-version-id")
        self.version_id = version if version and version != "null" else None

    def read(self, n: int = 1 << 20) -> bytes:
        try:
            return self._response.read(n)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self._translate(exc) from exc

    def close(self) -> None:
        self._response.close()
        self._response.release_conn()

    def __enter__(self) -> SourceObject:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BucketClient:
    """An S3-compatible server (MinIO, Ceph RGW, AWS...) reached with the ``minio`` client."""

    def __init__(
        self,
        endpoint: str,
        access_key: str | None,
        secret_key: str | None,
        *,
        secure: bool = True,
        cert_check: bool = True,
        label: str = "",
        max_connections: int = 16,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        max_attempts: int = 5,
    ):
        """No I/O here.  ``label`` names the config entry in hints (``minio.<label>``);
        timeouts are per attempt, in seconds; ``max_attempts`` counts every try of a request."""
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            maxsize=max_connections,
            cert_reqs="CERT_REQUIRED" if cert_check else "CERT_NONE",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
            retries=retry_policy(max_attempts),
        )
        self._minio = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, http_client=http
        )
        self.endpoint = f"{'https' if secure else 'http'}://{endpoint}"
        self._section = f"minio.{label}" if label else "the minio target"

    @classmethod
    def from_target(cls, name: str, cfg, *, max_connections: int = 16) -> BucketClient:
        """A client for the ``minio.<name>`` config entry (``MinioTarget``)."""
        return cls(**cfg.client_kwargs(), label=name, max_connections=max_connections)

    # --- error translation ---------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str, bucket: str, key: str | None = None) -> Iterator[None]:
        if key is not None and (reason := unsupported_key_reason(key)):
            raise UnsupportedKeyError(f"cannot {action} {bucket}/{key!r}: the key has {reason}")
        try:
            yield
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            error = self.translate(exc, action, bucket, key)
            if key is not None:
                error.redacted = redact_key(error.message, bucket, key)
            raise error from exc

    def translate(self, exc: Exception, action: str, bucket: str, key: str | None) -> SourceError:
        """The drbackup error for a minio/urllib3 error while doing ``action``."""
        what = f"cannot {action} {bucket}/{key}" if key is not None else f"cannot {action} {bucket}"
        if isinstance(exc, S3Error):
            return self._s3_error(exc, what, bucket, key)
        if isinstance(exc, ServerError | InvalidResponseError):
            status = _status_of(exc)
            if status in TRANSIENT_STATUSES:
                return self._kept_failing(what, f"http {status}")
            return SourceError(f"{what}: {_one_line(str(exc))}")
        reason = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
        if isinstance(reason, urllib3.exceptions.SSLError):
            return SourceUnreachableError(
                f"{what}: tls error talking to {self.endpoint}",
                hint=f"check {self._section}.verify_tls and the endpoint's scheme",
            )
        if isinstance(reason, urllib3.exceptions.ResponseError):
            return self._kept_failing(what, _one_line(str(reason)))
        return SourceUnreachableError(
            f"{what}: {self.endpoint} unreachable ({type(reason).__name__})",
            hint=f"check {self._section}.endpoint and that the server is running",
        )

    def _kept_failing(self, what: str, reason: str) -> SourceUnreachableError:
        """A server still answering 5xx/429 after every retry: unavailable now."""
        return SourceUnreachableError(
            f"{what}: {self.endpoint} kept failing ({reason})",
            hint="the server is overloaded or failing: try again later "
            f"({self._section}.max_attempts sets how often each request is tried)",
        )

    def _s3_error(self, exc: S3Error, what: str, bucket: str, key: str | None) -> SourceError:
        code = exc.code or ""
        if code in _THROTTLING_CODES or _status_of(exc) in TRANSIENT_STATUSES:
            return self._kept_failing(
                what, f"{code or _status_of(exc)}: {_one_line(exc.message or '')}"
            )
        if code in ("NoSuchKey", "NoSuchVersion") and key is not None:
            return ObjectGoneError(f"{what}: object no longer exists")
        if code == "PreconditionFailed":
            return ObjectChangedError(f"{what}: object changed while being read")
        if code == "NoSuchBucket":
            return SourceError(
                f"{what}: bucket {bucket} does not exist on {self.endpoint}",
                hint=f"check {self._section}.buckets",
            )
        if code in _DENIED:
            return SourceUnreachableError(
                f"{what}: access denied by {self.endpoint} ({code})",
                hint=f"check {self._section}.access_key_file / secret_key_file and the policy",
            )
        return SourceError(f"{what}: {code or 'error'}: {_one_line(exc.message or '')}")

    # --- reading ------------------------------------------------------------------------

    def check_bucket(self, bucket: str) -> None:
        """Raise SourceError if ``bucket`` does not exist, SourceUnreachableError if unreachable."""
        if not self.bucket_exists(bucket):
            raise SourceError(
                f"bucket {bucket} does not exist on {self.endpoint}",
                hint=f"check {self._section}.buckets",
            )

    def bucket_exists(self, bucket: str) -> bool:
        with self._errors("access", bucket):
            return self._minio.bucket_exists(bucket)

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[ListedObject]:
        """Objects under ``prefix`` in key order, one page at a time (constant memory)."""
        with self._errors("list", bucket):
            pages = self._minio.list_objects(bucket, prefix=prefix or None, recursive=True)
        while True:
            with self._errors("list", bucket):
                obj = next(pages, None)
            if obj is None:
                return
            yield ListedObject(
                key=obj.object_name,
                size=obj.size or 0,
                etag=(obj.etag or "").strip('"'),
                last_modified=iso_time(obj.last_modified),
            )

    def versioning(self, bucket: str) -> str:
        """The bucket's versioning status: ``Enabled``, ``Suspended``, ``Off`` (never set), or
        ``Unknown`` when the credentials may not read it (a policy from before versioned
        capture: the bucket is then snapshotted as unversioned, not refused)."""
        with self._errors("read the versioning of", bucket):
            try:
                return self._minio.get_bucket_versioning(bucket).status or "Off"
            except S3Error as exc:
                if exc.code != "AccessDenied":
                    raise
                return "Unknown"

    def list_versions(self, bucket: str, prefix: str = "") -> Iterator[ListedVersion]:
        """Every version and delete marker under ``prefix``, by key, newest first within a
        key, one page at a time (constant memory).

        Parsed here rather than by the minio client, which lists a page's versions before
        its delete markers and so loses their order.
        """
        page = None
        while page is None or page.truncated:
            query = {"versions": "", "prefix": prefix, "max-keys": "1000", "delimiter": ""}
            if page is not None:
                query["key-marker"] = page.next_key or ""
                if page.next_version:
                    query["version-id-marker"] = page.next_version
            with self._errors("list versions of", bucket):
                # the minio client's own request path (signing, retries); it has no public
                # call that returns a version page as the server ordered it
                response = self._minio._execute("GET", bucket, query_params=query)  # noqa: SLF001
                page = parse_versions_page(response.data)
            yield from page.versions

    def first_key(self, bucket: str) -> str | None:
        """Any one key of ``bucket`` (None when empty): the non-empty-destination guard."""
        return next((o.key for o in self.list_objects(bucket)), None)

    def open_object(
        self, bucket: str, key: str, *, if_match: str | None = None, version_id: str | None = None
    ) -> SourceObject:
        """GET ``key`` (its ``version_id`` if given); with ``if_match``, ObjectChangedError
        unless its ETag still matches.

        Raises ObjectGoneError if the key (or version) no longer exists.  The caller closes
        the result.
        """
        headers = {"If-Match": f'"{if_match}"'} if if_match else None
        with self._errors("read", bucket, key):
            response = self._minio.get_object(
                bucket, key, request_headers=headers, version_id=version_id
            )
        return SourceObject(response, key, lambda exc: self.translate(exc, "read", bucket, key))

    def get_tags(self, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
        """The object's (or its version's) tags (``{}`` when it has none)."""
        with self._errors("read tags of", bucket, key):
            tags = self._minio.get_object_tags(bucket, key, version_id=version_id)
        return dict(tags or {})

    # --- writing (restores, drills) -------------------------------------------------------

    def put_object(
        self,
        bucket: str,
        key: str,
        reader,
        length: int,
        *,
        content_type: str,
        metadata: dict[str, str],
        tags: dict[str, str],
        headers: dict[str, str],
    ) -> None:
        """Upload ``length`` bytes from ``reader`` with metadata and tags.

        Large objects go up in parts; if ``reader`` raises, the upload is aborted and the
        exception propagates unchanged, so no partial object appears.
        """
        object_tags = None
        if tags:
            object_tags = Tags(for_object=True)
            object_tags.update(tags)
        with self._errors("write", bucket, key):
            self._minio.put_object(
                bucket,
                key,
                reader,
                length,
                content_type=content_type,
                metadata=put_headers(metadata, headers) or None,
                tags=object_tags,
                num_parallel_uploads=1,  # objects are uploaded in parallel instead
            )

    def list_buckets(self) -> list[str]:
        """The names of every bucket the credentials can see."""
        with self._errors("list buckets of", self.endpoint):
            return [b.name for b in self._minio.list_buckets()]

    def make_bucket(self, bucket: str) -> None:
        with self._errors("create bucket", bucket):
            self._minio.make_bucket(bucket)

    def set_bucket_tags(self, bucket: str, tags: dict[str, str]) -> None:
        """Replace the bucket's tags with ``tags``."""
        bucket_tags = Tags.new_bucket_tags()
        bucket_tags.update(tags)
        with self._errors("tag bucket", bucket):
            self._minio.set_bucket_tags(bucket, bucket_tags)

    def get_bucket_tags(self, bucket: str) -> dict[str, str]:
        """The bucket's tags (``{}`` when it has none)."""
        with self._errors("read the tags of bucket", bucket):
            tags = self._minio.get_bucket_tags(bucket)
        return dict(tags or {})

    def remove_bucket(self, bucket: str) -> None:
        """Delete every object of ``bucket`` and then the bucket (missing: not an error)."""
        if not self.bucket_exists(bucket):
            return
        while True:
            keys = [DeleteObject(o.key) for o in itertools.islice(self.list_objects(bucket), 1000)]
            if not keys:
                break
            with self._errors("empty bucket", bucket):
                errors = list(self._minio.remove_objects(bucket, keys))
            if errors:
                raise SourceError(f"cannot empty bucket {bucket}: {errors[0].message}")
        with self._errors("remove bucket", bucket):
            self._minio.remove_bucket(bucket)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _status_of(exc: MinioException) -> int | None:
    """The HTTP status of a minio error response, when it carries one."""
    if isinstance(exc, ServerError):
        return exc.status_code
    if isinstance(exc, InvalidResponseError):
        return exc._code  # noqa: SLF001 - minio keeps it only there
    response = getattr(exc, "response", None)
    return getattr(response, "status", None)
