"""The one config schema: the type, default and documentation of every key.

``load.py`` validates against these models and ``docs/configuration.md`` is generated from
them (a field's docstring is its description).  Secret fields are never set from the YAML
file: they come from their ``*_file`` key (read at validation) or the environment.
"""

import base64
import binascii
import difflib
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BeforeValidator,
    Field,
    PlainValidator,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from drbackup.config import types as t
from drbackup.config.retention import RetentionSettings
from drbackup.config.section import (  # noqa: F401 - found here by load.py and docs.py
    EMPTY_IS_DEFAULT,
    MIB,
    EnvSecret,
    Section,
    default_catalog_url,
    default_home,
    default_repository_url,
    env_only_marker,
    key_label,
)
from drbackup.config.types import Duration, EnvOnly, ReadableFile, SecretFile, config_error
from drbackup.config.wal import PhysicalSettings
from drbackup.errors import UsageError
from drbackup.sources.postgres.dump_options import find_problem


class S3Settings(Section):
    endpoint_url: t.HttpUrl | None = None
    """S3 API endpoint; unset means AWS. Env: AWS_ENDPOINT_URL."""
    region: str | None = None
    """Region; unset means the SDK default. Env: AWS_REGION."""
    access_key_id_file: SecretFile | None = None
    """File holding the access key id."""
    secret_access_key_file: SecretFile | None = None
    """File holding the secret access key."""
    access_key_id: Annotated[t.Secret | None, EnvOnly("AWS_ACCESS_KEY_ID")] = None
    """Access key id (environment only)."""
    secret_access_key: Annotated[t.Secret | None, EnvOnly("AWS_SECRET_ACCESS_KEY")] = None
    """Secret access key (environment only)."""
    session_token: Annotated[t.Secret | None, EnvOnly("AWS_SESSION_TOKEN")] = None
    """Session token (environment only)."""
    path_style: bool | None = None
    """Path-style addressing; unset means true when endpoint_url is set."""
    verify_tls: bool = True
    """Verify the endpoint's TLS certificate."""
    part_size: t.Size = 8 * MIB
    """Multipart upload part size, 5MiB to 5GiB."""
    max_concurrency: int = Field(4, ge=1, le=64)
    """Parallel part uploads per object."""
    connect_timeout: Duration = timedelta(seconds=10)
    """Give up connecting to the endpoint after this long (per attempt)."""
    read_timeout: Duration = timedelta(seconds=60)
    """Give up waiting for an answer after this long (per attempt)."""
    max_attempts: int = Field(5, ge=1, le=20)
    """Attempts per request, retries with backoff included; 1 means no retry."""

    secret_files: ClassVar[dict[str, str]] = {
        "access_key_id": "access_key_id_file",
        "secret_access_key": "secret_access_key_file",
    }

    @field_validator("part_size")
    @classmethod
    def _part_size_in_s3_limits(cls, value: int) -> int:
        if not 5 * MIB <= value <= 5 * 1024 * MIB:
            template = "part_size must be between 5MiB and 5GiB (s3 multipart limits)"
            raise config_error("size", template)
        return value

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> Self:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            template = "set both the access key id and the secret access key, or neither"
            raise config_error("pair", template)
        return self


_KEY_SOURCES = ("passphrase", "key_file", "public_key")


class EncryptionSettings(Section):
    passphrase: Annotated[t.Secret | None, EnvOnly("DRBACKUP_PASSPHRASE")] = None
    """Passphrase (environment only)."""
    passphrase_file: SecretFile | None = None
    """File holding the passphrase."""
    key_file: ReadableFile | None = None
    """File holding a raw repository key. Env: DRBACKUP_KEY_FILE."""
    public_key: str | None = None
    """Public key: backups are written without needing the private key."""
    private_key_file: ReadableFile | None = None
    """Private key matching public_key, needed to read backups."""

    secret_files: ClassVar[dict[str, str]] = {"passphrase": "passphrase_file"}

    @model_validator(mode="after")
    def _one_key_source(self) -> Self:
        if self.private_key_file is not None and self.public_key is None:
            raise config_error("one_of", "'private_key_file' needs 'public_key'")
        found = [name for name in _KEY_SOURCES if getattr(self, name) is not None]
        if len(found) > 1:
            template = "set only one key source: passphrase, key_file or public_key (found {found})"
            raise config_error("one_of", template, found=", ".join(found))
        return self

    @property
    def method(self) -> Literal["passphrase", "key_file", "public_key"] | None:
        """Which key source is configured; None means none is."""
        found = [name for name in _KEY_SOURCES if getattr(self, name) is not None]
        return found[0] if found else None  # type: ignore[return-value]


class CompressionSettings(Section):
    level: int = Field(1, ge=1, le=22)
    """zstd level: 1 fastest, 22 smallest.  Level 1 is the default because a backup is
    CPU-bound: on pg_dump output it compresses about as well as level 3 (2.86:1 against 2.82:1
    on the benchmark data) at half the CPU (bench/README.md).  Raise it when storage costs more
    than CPU; levels above 9 are rarely worth it."""
    threads: int = Field(0, ge=0, le=256)
    """Compression threads; 0 means one per core."""


class ObjectLockSettings(Section):
    mode: Literal["GOVERNANCE", "COMPLIANCE"] = "GOVERNANCE"
    """S3 Object Lock mode of every object written (the bucket must have Object Lock on)."""
    days: int = Field(ge=1)
    """Days each object stays locked."""


class RepositorySettings(Section):
    url: t.RepositoryUrl = Field(
        default_factory=default_repository_url,
        json_schema_extra={"default_text": "$DRBACKUP_HOME/repo"},
    )
    """s3://bucket/prefix, file:///path or an absolute path."""
    s3: Annotated[S3Settings, EMPTY_IS_DEFAULT] = Field(default_factory=S3Settings)
    """How to reach an s3:// repository."""
    encryption: Annotated[EncryptionSettings, EMPTY_IS_DEFAULT] = Field(
        default_factory=EncryptionSettings
    )
    """The repository key: a passphrase, a key file, or a public key."""
    compression: Annotated[CompressionSettings, EMPTY_IS_DEFAULT] = Field(
        default_factory=CompressionSettings
    )
    """zstd compression of stored objects."""
    object_lock: ObjectLockSettings | None = None
    """S3 Object Lock; unset means no lock."""

    @model_validator(mode="after")
    def _object_lock_needs_s3(self) -> Self:
        if self.object_lock is not None and not self.url.startswith("s3://"):
            raise config_error("object_lock", "object_lock needs an s3:// repository url")
        return self

    def s3_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``drbackup.storage.open_storage(url, s3=...)``, secrets revealed."""
        s3 = self.s3
        path_style = s3.endpoint_url is not None if s3.path_style is None else s3.path_style
        return {
            "endpoint_url": s3.endpoint_url,
            "region": s3.region,
            "access_key_id": reveal(s3.access_key_id),
            "secret_access_key": reveal(s3.secret_access_key),
            "session_token": reveal(s3.session_token),
            "path_style": path_style,
            "verify_tls": s3.verify_tls,
            "part_size": s3.part_size,
            "max_concurrency": s3.max_concurrency,
            "connect_timeout": s3.connect_timeout.total_seconds(),
            "read_timeout": s3.read_timeout.total_seconds(),
            "max_attempts": s3.max_attempts,
        }


def reveal(secret: SecretStr | None) -> str | None:
    """The secret's value, or None."""
    return None if secret is None else secret.get_secret_value()


def _databases(value: Any) -> list[str] | Literal["all"]:
    if value == "all":
        return "all"
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise config_error("databases", "expected a non-empty list of database names or 'all'")
    return value


@dataclass(frozen=True)
class _CheckedOption:
    """A pg_dump option with what :func:`find_problem` said about it in its list."""

    text: str
    problem: str | None


def _check_pg_dump_options(value: Any) -> Any:
    # The list is read as pg_dump reads its argv (a value may be the next word), and each
    # problem is raised at its own item, so that its path names the word.
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return value  # list[str] validation says what is wrong
    found = find_problem(value)
    problems = dict([found]) if found else {}
    return [_CheckedOption(text, problems.get(index)) for index, text in enumerate(value)]


def _pg_dump_option(value: Any) -> str:
    if isinstance(value, _CheckedOption):
        if value.problem:
            raise config_error("pg_dump_option", "{problem}", problem=value.problem)
        return value.text
    if not isinstance(value, str):
        raise config_error("string_type", "input should be a valid string")
    return value


Databases = Annotated[list[str] | Literal["all"], PlainValidator(_databases)]
PgDumpOptions = Annotated[
    list[Annotated[str, PlainValidator(_pg_dump_option)]],
    BeforeValidator(_check_pg_dump_options),
    t.DocType("list of strings"),
]
Fingerprint = Annotated[
    Literal["off", "counts", "full"],
    BeforeValidator(lambda v: "off" if v is False else v),  # YAML 1.1 reads a bare off as false
]
PgDsn = t.pg_dsn("'password_file', PGPASSWORD or ~/.pgpass")
ScratchDsn = t.pg_dsn("PGPASSWORD or ~/.pgpass")
RPO, RTO = timedelta(hours=24), timedelta(hours=1)  # defaults of every target kind


class PostgresTarget(PhysicalSettings, Section):
    """A PostgreSQL server: dumps (pg_dump) and/or base backups and WAL (docs/pitr.md)."""

    kind: ClassVar[str] = "postgres"

    dsn: PgDsn
    """libpq connection string, without a password."""
    password_file: SecretFile | None = None
    """File holding the password (libpq also reads PGPASSWORD and ~/.pgpass)."""
    password: EnvSecret = None
    """Password (environment only)."""
    databases: Annotated[Databases, t.DocType("list of names, or all")]
    """Databases to dump, or `all` (every database but the templates)."""
    rpo: Duration = RPO
    """Recovery point objective: the oldest a latest backup may be."""
    rto: Duration = RTO
    """Recovery time objective: the longest a restore may take."""
    include_schemas: list[str] = []
    """Dump only these schemas (pg_dump -n)."""
    exclude_schemas: list[str] = []
    """Skip these schemas (pg_dump -N)."""
    include_tables: list[str] = []
    """Dump only these tables (pg_dump -t)."""
    exclude_tables: list[str] = []
    """Skip these tables (pg_dump -T)."""
    pg_dump_options: PgDumpOptions = []
    """Extra pg_dump options, read as pg_dump reads them (abbreviations too); only options
    that cannot change where the dump goes, its format or its source are allowed."""
    fingerprint: Fingerprint = "full"
    """Taken at dump time for drills: off, counts (row counts) or full (counts and hashes)."""
    jobs: int = Field(1, ge=1, le=64)
    """Parallel jobs where the archive allows it (pg_restore -j)."""
    pg_bin_dir: t.LocalPath | None = None
    """Directory of the pg_dump, pg_dumpall and pg_restore this target uses; unset: the
    newest installed (/usr/lib/postgresql/<major>/bin), which works with every older
    server (docs/operations.md, PostgreSQL majors)."""

    retention: Annotated[RetentionSettings, EMPTY_IS_DEFAULT] = Field(
        default_factory=RetentionSettings
    )
    """Which backups 'drbackup prune' keeps (docs/retention.md)."""

    secret_files: ClassVar[dict[str, str]] = {"password": "password_file"}


class MinioTarget(Section):
    """An S3-compatible server (MinIO, Ceph, AWS) whose buckets are snapshotted."""

    kind: ClassVar[str] = "minio"

    endpoint: t.Endpoint
    """http(s)://host:port, or host:port with `secure`."""
    access_key_file: SecretFile | None = None
    """File holding the access key."""
    secret_key_file: SecretFile | None = None
    """File holding the secret key."""
    access_key: EnvSecret = None
    """Access key (environment only)."""
    secret_key: EnvSecret = None
    """Secret key (environment only)."""
    buckets: list[t.BucketName] = Field(min_length=1)
    """Buckets to snapshot."""
    secure: bool | None = None
    """Use TLS; unset means as the endpoint's scheme says (https without one)."""
    verify_tls: bool = True
    """Verify the server's TLS certificate."""
    connect_timeout: Duration = timedelta(seconds=10)
    """Give up connecting to the endpoint after this long (per attempt)."""
    read_timeout: Duration = timedelta(minutes=2)
    """Give up waiting for an answer after this long (per attempt)."""
    max_attempts: int = Field(5, ge=1, le=20)
    """Attempts per request, retries with backoff included (5xx, SlowDown, timeouts); 1 means no retry."""
    include_prefixes: list[str] = []
    """Snapshot only keys under these prefixes."""
    exclude_prefixes: list[str] = []
    """Skip keys under these prefixes."""
    rpo: Duration = RPO
    """Recovery point objective: the oldest a latest snapshot may be."""
    rto: Duration = RTO
    """Recovery time objective: the longest a restore may take."""

    retention: Annotated[RetentionSettings, EMPTY_IS_DEFAULT] = Field(
        default_factory=RetentionSettings
    )
    """Which backups 'drbackup prune' keeps (docs/retention.md)."""

    secret_files: ClassVar[dict[str, str]] = {
        "access_key": "access_key_file",
        "secret_key": "secret_key_file",
    }

    @model_validator(mode="after")
    def _secure_matches_scheme(self) -> Self:
        scheme_secure = t.split_endpoint(self.endpoint)[1]
        if None not in (self.secure, scheme_secure) and self.secure != scheme_secure:
            raise config_error("secure", "'secure' contradicts the endpoint's scheme")
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``minio.Minio(...)``, secrets revealed."""
        host, scheme_secure = t.split_endpoint(self.endpoint)
        return {
            "endpoint": host,
            "access_key": reveal(self.access_key),
            "secret_key": reveal(self.secret_key),
            "secure": next(v for v in (self.secure, scheme_secure, True) if v is not None),
            "cert_check": self.verify_tls,
            "connect_timeout": self.connect_timeout.total_seconds(),
            "read_timeout": self.read_timeout.total_seconds(),
            "max_attempts": self.max_attempts,
        }


class DrillSettings(Section):
    signing_key_file: ReadableFile | None = None
    """Private key that signs drill reports."""
    trusted_keys: list[str] = []
    """Public keys (base64, as 'drill public-key' printed them) of signing keys this one
    replaced: reports they signed still verify after a key rotation."""

    @field_validator("trusted_keys")
    @classmethod
    def _ed25519_public_keys(cls, value: list[str]) -> list[str]:
        for key in value:
            try:
                raw = base64.b64decode(key.strip(), validate=True)
            except (binascii.Error, ValueError):
                raw = b""
            if len(raw) != 32:
                template = "'{key}' is not an ed25519 public key (32 bytes, base64)"
                raise config_error("public_key", template, key=key[:60])
        return value

    scratch_dsn: ScratchDsn | None = None
    """Server for scratch restores; unset means a private local cluster (docs/drills.md)."""
    scratch_on_source_server: bool = False
    """Without scratch_dsn, restore drills into scratch databases on each target's own
    server instead of a private cluster: a full copy on the production server. Opt-in."""
    scratch_prefix: str = Field("drbackup_drill_", pattern=r"^[a-z_][a-z0-9_]{0,39}$")
    """Name prefix of scratch databases; drills drop only those they created and marked."""


class WebhookSettings(Section):
    url_file: SecretFile | None = None
    """File holding the webhook URL (webhook URLs carry tokens)."""
    url: EnvSecret = None
    timeout: Duration = timedelta(seconds=10)
    """How long a POST may take."""

    secret_files: ClassVar[dict[str, str]] = {"url": "url_file"}


class EmailSettings(Section):
    host: str
    """SMTP server."""
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password_file: SecretFile | None = None
    """File holding the SMTP password."""
    password: EnvSecret = None
    sender: str
    """From address."""
    to: list[str] = Field(min_length=1)
    """Recipients."""
    subject_prefix: str = "[drbackup]"
    timeout: Duration = timedelta(seconds=10)

    secret_files: ClassVar[dict[str, str]] = {"password": "password_file"}


class NotificationSettings(Section):
    urls_file: SecretFile | None = None
    """File of Apprise URLs, one per line ('#' comments): slack://, msteams://, ntfy://,
    discord://, pagerduty://, mailto://, json:// ... (docs/daemon.md); they carry tokens."""
    urls: EnvSecret = None
    webhook: WebhookSettings | None = None
    """A webhook URL: a service Apprise recognises by its address (Slack, Discord, ...), else
    JSON with the message in 'text' (earlier versions' setting; urls_file says more)."""
    email: EmailSettings | None = None
    """SMTP email, sent as Apprise's mailto:// (earlier versions' setting)."""
    on_failure: bool = True
    """The daemon notifies each failed job."""

    secret_files: ClassVar[dict[str, str]] = {"urls": "urls_file"}


Target = PostgresTarget | MinioTarget


class Config(Section):
    repository: Annotated[RepositorySettings, EMPTY_IS_DEFAULT] = Field(
        default_factory=RepositorySettings
    )
    """Where backups live and how they are stored."""
    catalog: t.CatalogUrl = Field(
        default_factory=default_catalog_url,
        json_schema_extra={"default_text": "sqlite:///$DRBACKUP_HOME/catalog.db"},
    )
    """SQLAlchemy URL of the catalog, an index rebuildable from the repository."""
    postgres: Annotated[dict[t.TargetName, PostgresTarget], EMPTY_IS_DEFAULT] = {}
    """PostgreSQL targets by name."""
    minio: Annotated[dict[t.TargetName, MinioTarget], EMPTY_IS_DEFAULT] = {}
    """Bucket targets by name."""
    drill: Annotated[DrillSettings, EMPTY_IS_DEFAULT] = Field(default_factory=DrillSettings)
    """Restore drill settings."""
    notifications: Annotated[NotificationSettings, EMPTY_IS_DEFAULT] = Field(
        default_factory=NotificationSettings
    )
    """Where failures and reports are sent."""

    _source: str | None = PrivateAttr(None)

    @field_validator("minio")
    @classmethod
    def _names_unique(cls, value: dict[str, MinioTarget], info: ValidationInfo) -> Any:
        twice = sorted(value.keys() & info.data.get("postgres", {}).keys())
        if twice:
            template = "target '{name}' is also a postgres target (names must be unique)"
            raise config_error("duplicate", template, name=twice[0])
        return value

    @property
    def source(self) -> str | None:
        """The file this config was loaded from; None for built-in defaults."""
        return self._source

    @property
    def targets(self) -> dict[str, Target]:
        """Every target by name, postgres first."""
        return {**self.postgres, **self.minio}

    def target(self, name: str) -> Target:
        """The target called ``name``; raises UsageError naming the known targets."""
        targets = self.targets
        if name in targets:
            return targets[name]
        close = difflib.get_close_matches(name, targets, n=1)
        message = f"unknown target '{name}'" + (f" (did you mean '{close[0]}'?)" if close else "")
        if not targets:
            hint = "no targets are configured; add one under 'postgres:' or 'minio:'"
            raise UsageError(message, hint=hint)
        raise UsageError(message, hint=f"known targets: {', '.join(sorted(targets))}")


def redacted_dict(cfg: Config) -> dict[str, Any]:
    """The effective config as plain data: secrets ``"***"``, durations ``24h``, sizes ``8MiB``."""
    return cfg.model_dump(mode="json")
