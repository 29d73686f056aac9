"""Value types of the config schema: durations, sizes, names, secrets, files, URLs.

Each type is an ``Annotated`` alias that pydantic validates and serializes (JSON mode, for
``redacted_dict``); :class:`DocType` is its name in the generated docs.  Validators raise
``PydanticCustomError`` so users read these messages as written; none echoes a secret.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, SecretStr
from pydantic_core import PydanticCustomError


@dataclass(frozen=True)
class DocType:
    """The type name shown for a field in docs/configuration.md."""

    label: str


@dataclass(frozen=True)
class EnvOnly:
    """Marks a secret field the YAML file may not set; ``env`` is its own variable, if any."""

    env: str | None = None


def config_error(kind: str, template: str, **context: Any) -> PydanticCustomError:
    """A validation error whose message is ``template`` filled from ``context``."""
    return PydanticCustomError(kind, template, context)


# -- durations -------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
# The longest duration anything takes (retention of a century): far beyond any objective,
# and short enough that "now minus it" is always a valid time.
MAX_DURATION = timedelta(days=36500)


class DurationTooLongError(ValueError):
    """A duration above :data:`MAX_DURATION`."""


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``24h``, ``7d`` or combinations (``1h30m``) -> timedelta.

    Raises ValueError for anything else and for a zero duration, DurationTooLongError
    (a ValueError) above :data:`MAX_DURATION`.
    """
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None or not any(match.groups()):
        raise ValueError(f"invalid duration {text!r}")
    pairs = zip(match.groups(), _UNITS, strict=True)
    total = sum(int(count) * seconds for count, (_, seconds) in pairs if count)
    if total == 0:
        raise ValueError("a duration must be greater than zero")
    if total > MAX_DURATION.total_seconds():
        raise DurationTooLongError(f"duration {text!r} is longer than {MAX_DURATION.days}d")
    return timedelta(seconds=total)


def format_duration(value: timedelta) -> str:
    """timedelta -> text :func:`parse_duration` reads back; days only from 2d (1 day is 24h)."""
    total = int(value.total_seconds())
    if total >= 2 * 86400 and total % 86400 == 0:
        return f"{total // 86400}d"
    parts = []
    for unit, seconds in _UNITS[1:]:
        count, total = divmod(total, seconds)
        parts.append(f"{count}{unit}" if count else "")
    return "".join(parts) or "0s"


def _to_duration(value: Any) -> timedelta:
    if isinstance(value, timedelta) and timedelta(0) < value <= MAX_DURATION:
        return value
    try:
        return parse_duration(value if isinstance(value, str) else "")
    except DurationTooLongError:
        template = "duration '{value}' is too long (at most {days}d, a century)"
        raise config_error("duration", template, value=str(value), days=MAX_DURATION.days) from None
    except ValueError:
        template = "invalid duration '{value}' (use e.g. 30s, 15m, 24h, 7d)"
        raise config_error("duration", template, value=str(value)) from None


_AS_TEXT = PlainSerializer(format_duration, return_type=str, when_used="json")
Duration = Annotated[timedelta, BeforeValidator(_to_duration), _AS_TEXT, DocType("duration")]

# -- sizes -----------------------------------------------------------------------------

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)", re.IGNORECASE)
_SIZE_NAMES = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
_SIZE_NAMES += (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3), ("B", 1))
_SIZE_UNITS = {name.lower(): factor for name, factor in _SIZE_NAMES} | {"": 1}


def parse_size(value: str | int) -> int:
    """``8MiB``, ``5MB``, ``1.5GiB``, ``4096`` or an int -> bytes (units case-insensitive).

    KiB..TiB are powers of 1024, KB..TB powers of 1000.  Raises ValueError for anything
    else, negative numbers and fractions of a byte.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"invalid size {value!r}")
    number: int | Decimal = value if isinstance(value, int) else Decimal(-1)
    match = _SIZE_RE.fullmatch(value.strip()) if isinstance(value, str) else None
    if match and match.group(2).lower() in _SIZE_UNITS:
        number = Decimal(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if number < 0 or number != int(number):
        raise ValueError(f"invalid size {value!r}")
    return int(number)


def format_size(value: int) -> str:
    """Bytes -> the largest exact unit: ``8MiB``, ``5MB``, else ``<n>B``."""
    for name, factor in _SIZE_NAMES:
        if value >= factor and value % factor == 0:
            return f"{value // factor}{name}"
    return f"{value}B"


def _to_size(value: Any) -> int:
    try:
        return parse_size(value)
    except ValueError:
        template = "invalid size '{value}' (use e.g. 8MiB, 5MB or a number of bytes)"
        raise config_error("size", template, value=str(value)) from None


_AS_UNITS = PlainSerializer(format_size, return_type=str, when_used="json")
Size = Annotated[int, BeforeValidator(_to_size), _AS_UNITS, DocType("size")]

# -- names -----------------------------------------------------------------------------

_TARGET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
_BUCKET_NAME_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def _check_target_name(name: str) -> str:
    if not _TARGET_NAME_RE.fullmatch(name):
        template = (
            "invalid target name '{name}' (use up to 63 of a-z, 0-9, '_', '.', '-', "
            "starting with a letter or digit)"
        )
        raise config_error("target_name", template, name=name)
    return name


def check_bucket_name(name: str) -> str:
    """Return ``name`` if it is a valid S3 bucket name; raise a validation error otherwise."""
    if not _BUCKET_NAME_RE.fullmatch(name):
        template = "invalid bucket name '{name}' (use 3-63 of a-z, 0-9, '.', '-')"
        raise config_error("bucket_name", template, name=name)
    return name


TargetName = Annotated[str, AfterValidator(_check_target_name)]
BucketName = Annotated[str, AfterValidator(check_bucket_name), DocType("bucket name")]

# -- secrets and files -----------------------------------------------------------------

# "***" even in python-mode dumps: only get_secret_value() reveals a secret.
Secret = Annotated[SecretStr, PlainSerializer(lambda _: "***", return_type=str), DocType("secret")]


def _unreadable(path: Path, exc: OSError) -> PydanticCustomError:
    reason = (exc.strerror or type(exc).__name__).lower()
    return config_error("file", "cannot read '{path}': {reason}", path=str(path), reason=reason)


def _check_readable(path: Path) -> Path:
    try:
        with path.open("rb") as stream:
            stream.read(1)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    return path


def read_secret_file(path: Path) -> SecretStr:
    """The secret in ``path`` without trailing newlines.

    Raises a validation error naming the path if the file cannot be read, is not UTF-8 or
    is empty; the content never appears in an error.
    """
    try:
        text = path.read_bytes().decode("utf-8").rstrip("\r\n")
    except OSError as exc:
        raise _unreadable(path, exc) from None
    except UnicodeDecodeError:
        raise config_error("secret", "secret file '{path}' is not utf-8", path=str(path)) from None
    if not text:
        raise config_error("secret", "secret file '{path}' is empty", path=str(path))
    return SecretStr(text)


def _expand_user(value: Any) -> Any:
    return Path(value).expanduser() if isinstance(value, (str, Path)) else value


_PATH = (BeforeValidator(_expand_user), DocType("path"))
ReadableFile = Annotated[Path, *_PATH, AfterValidator(_check_readable)]
LocalPath = Annotated[Path, *_PATH]  # a path that may not exist yet (created when used)
# Read at validation too, so an unreadable or empty secret file is reported at its own key.
SecretFile = Annotated[Path, *_PATH, AfterValidator(lambda path: read_secret_file(path) and path)]

# -- URLs, DSNs, endpoints -------------------------------------------------------------

_PASSWORD_PARAM = re.compile(r"(?:^|[\s?&])password\s*=", re.IGNORECASE)


def has_password(url: str) -> bool:
    """Whether a URL or libpq DSN carries a password (``user:pw@``, ``password=``)."""
    try:
        in_userinfo = urlsplit(url).password is not None
    except ValueError:
        in_userinfo = False
    return in_userinfo or bool(_PASSWORD_PARAM.search(url))


def no_password(alternative: str) -> AfterValidator:
    """A validator refusing a URL with a password; its error suggests ``alternative``."""

    def check(value: str) -> str:
        if has_password(value):
            template = "contains a password; inline secrets are not allowed (use {alternative})"
            raise config_error("inline_secret", template, alternative=alternative)
        return value

    return AfterValidator(check)


def _check_dsn(value: str) -> str:
    if value.startswith(("postgresql://", "postgres://")) or "=" in value:
        return value
    template = "invalid dsn (use postgresql://user@host:port/dbname or 'host=... dbname=...')"
    raise config_error("dsn", template)


def pg_dsn(alternative: str) -> Any:
    """A libpq connection string type without a password; errors suggest ``alternative``."""
    return Annotated[str, no_password(alternative), AfterValidator(_check_dsn), DocType("dsn")]


def split_endpoint(value: str) -> tuple[str, bool | None]:
    """``http(s)://host:port`` or ``host:port`` -> (``host:port``, secure per the scheme)."""
    scheme, _, rest = value.rpartition("://")
    host = rest.rstrip("/")
    if scheme not in ("", "http", "https") or not host or "/" in host:
        template = "invalid endpoint '{value}' (use host:port or http(s)://host:port)"
        raise config_error("endpoint", template, value=value)
    return host, {"": None, "http": False, "https": True}[scheme]


def _check_endpoint(value: str, *, scheme_required: bool = False) -> str:
    if split_endpoint(value)[1] is None and scheme_required:
        raise config_error("url", "invalid url '{value}' (use http(s)://host:port)", value=value)
    return value


_NO_PASSWORD = no_password("the '*_file' keys")
Endpoint = Annotated[str, _NO_PASSWORD, AfterValidator(_check_endpoint), DocType("endpoint")]
_HTTP_URL = AfterValidator(lambda value: _check_endpoint(value, scheme_required=True))
HttpUrl = Annotated[str, _NO_PASSWORD, _HTTP_URL, DocType("url")]


def _check_repository_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep:
        path = Path(value).expanduser()
        if not path.is_absolute():
            raise config_error("url", "repository path '{path}' is not absolute", path=value)
        return str(path)
    if scheme == "s3":
        check_bucket_name(rest.split("/", 1)[0])
        return value
    if scheme == "file" and rest.startswith("/"):
        return value
    template = (
        "unsupported repository url (use s3://bucket/prefix, file:///path or an absolute path)"
    )
    raise config_error("url", template)


def _check_catalog_url(value: str) -> str:
    scheme, sep, _ = value.partition("://")
    if not sep or not scheme.replace("+", "").isalnum():
        template = "invalid catalog url (use e.g. sqlite:////var/lib/drbackup/catalog.db)"
        raise config_error("url", template)
    return value


_AWS_CREDENTIALS = "'access_key_id_file', 'secret_access_key_file' or AWS_* variables"
RepositoryUrl = Annotated[
    str, no_password(_AWS_CREDENTIALS), AfterValidator(_check_repository_url), DocType("url")
]
CatalogUrl = Annotated[
    str, no_password("PGPASSWORD or ~/.pgpass"), AfterValidator(_check_catalog_url), DocType("url")
]
