"""The ``minio:`` target: an S3-compatible server whose buckets are snapshotted."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, ClassVar, Self

from pydantic import Field, model_validator

from drbackup.config import types as t
from drbackup.config.retention import RetentionSettings
from drbackup.config.section import EMPTY_IS_DEFAULT, EnvSecret, Section, reveal
from drbackup.config.types import Duration, SecretFile, config_error

RPO, RTO = timedelta(hours=24), timedelta(hours=1)  # defaults of every target kind


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
    events_token_file: SecretFile | None = None
    """File holding the bearer token bucket event notifications must carry (docs/buckets.md)."""
    events_token: EnvSecret = None
    """Bearer token for bucket event notifications (environment only)."""

    retention: Annotated[RetentionSettings, EMPTY_IS_DEFAULT] = Field(
        default_factory=RetentionSettings
    )
    """Which backups 'drbackup prune' keeps (docs/retention.md)."""

    secret_files: ClassVar[dict[str, str]] = {
        "access_key": "access_key_file",
        "secret_key": "secret_key_file",
        "events_token": "events_token_file",
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
