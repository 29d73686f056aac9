"""Where backups go: the :class:`Storage` contract, its backends, and :func:`open_storage`."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from drbackup.errors import ConfigError
from drbackup.storage.base import Capabilities, ObjectInfo, Storage
from drbackup.storage.local import LocalStorage

__all__ = ["Capabilities", "ObjectInfo", "Storage", "open_storage"]

ACCEPTED_FORMS = "file:///path, a plain path, or s3://bucket/prefix"
# Keys of the repository.s3 config section passed through to S3Storage.
S3_OPTIONS = frozenset(
    {
        "endpoint_url",
        "region",
        "access_key_id",
        "secret_access_key",
        "session_token",
        "path_style",
        "verify_tls",
        "part_size",
        "max_concurrency",
        "max_attempts",
        "object_lock",
        "connect_timeout",
        "read_timeout",
    }
)


def open_storage(url: str, s3: dict | None = None) -> Storage:
    """Build the backend a repository url names.

    ``url`` is ``file:///path``, a plain path, or ``s3://bucket/prefix``; ``s3`` holds the
    ``repository.s3`` options (``None`` values mean the default).  No I/O happens here:
    call ``check()`` on the result.  Raises ``ConfigError`` for an unknown scheme, a
    malformed url, or an unknown s3 option.
    """
    if not url:
        raise ConfigError("empty repository url", hint=f"use {ACCEPTED_FORMS}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "s3":
        return _open_s3(url, parts.netloc, parts.path, s3 or {})
    if scheme == "file":
        return _open_local(_file_url_path(url, parts.netloc, parts.path))
    if "://" in url or (scheme and len(scheme) > 1 and not url.startswith(("/", "."))):
        raise ConfigError(f"unsupported repository url: {url}", hint=f"use {ACCEPTED_FORMS}")
    return _open_local(url)


def _file_url_path(url: str, host: str, path: str) -> str:
    """The local path of a ``file://`` url; only an empty host or localhost is local."""
    if host not in ("", "localhost") or not path:
        raise ConfigError(
            f"invalid file url: {url}", hint="use file:///absolute/path (three slashes)"
        )
    return unquote(path)


def _open_local(path: str) -> Storage:
    """A ``LocalStorage`` on ``path``."""
    return LocalStorage(path)


def _open_s3(url: str, bucket: str, path: str, options: dict) -> Storage:
    """An ``S3Storage`` on ``bucket`` under ``path``, with the non-``None`` options."""
    if not bucket:
        raise ConfigError(f"s3 url has no bucket: {url}", hint="use s3://bucket/prefix")
    unknown = sorted(set(options) - S3_OPTIONS)
    if unknown:
        raise ConfigError(
            f"unknown s3 option: {', '.join(unknown)}",
            hint=f"accepted: {', '.join(sorted(S3_OPTIONS))}",
        )
    from drbackup.storage.s3 import S3Storage  # lazy: boto3 is slow to import

    kwargs = {k: v for k, v in options.items() if v is not None}
    if isinstance(kwargs.get("object_lock"), list):
        kwargs["object_lock"] = tuple(kwargs["object_lock"])
    return S3Storage(bucket, unquote(path), **kwargs)
