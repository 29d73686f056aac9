"""One error hierarchy and the one exit-code table.

Every error drbackup raises on purpose derives from :class:`DrbackupError`.  Its message is
one lowercase line; ``hint`` (optional) says what to try.  ``cli.main`` maps the class to an
exit code through :data:`EXIT_CODES` and prints ``drbackup: error: <message>`` plus
``hint: <hint>``; the traceback is shown only with ``--debug``.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CHECK_FAILED = 3
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130

# (code, meaning) listed in `drbackup --help`; the single source of truth.
EXIT_CODE_TABLE: list[tuple[int, str]] = [
    (EXIT_OK, "success"),
    (EXIT_FAILED, "the operation failed (backup, restore, integrity, source error)"),
    (EXIT_USAGE, "usage or configuration error"),
    (EXIT_CHECK_FAILED, "a verification or drill check failed"),
    (EXIT_UNREACHABLE, "storage or server unreachable"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C / SIGTERM)"),
]


class DrbackupError(Exception):
    """Base of every deliberate drbackup error.

    ``redacted``: the message without bucket object keys, when it names any.  Object keys
    are the users' data (names of people, of files); the operator sees them on stderr, but
    what is stored or sent (the catalog's runs, ``report``, notifications to chat) takes
    :func:`shareable` instead.
    """

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None, redacted: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.redacted = redacted

    def __str__(self) -> str:
        return self.message


def shareable(exc: BaseException) -> str:
    """The text of ``exc`` fit to store or send: its message without bucket object keys."""
    if isinstance(exc, DrbackupError):
        return exc.redacted or exc.message
    return str(exc) or type(exc).__name__


class UsageError(DrbackupError):
    """Bad command-line input: unknown backup id, conflicting options."""

    exit_code = EXIT_USAGE


class ConfigError(DrbackupError):
    """The configuration file or environment is invalid."""

    exit_code = EXIT_USAGE


class EncryptionKeyError(DrbackupError):
    """Wrong passphrase/key, or a key that cannot do what was asked (public key reading)."""

    exit_code = EXIT_FAILED


class StorageError(DrbackupError):
    """A storage operation failed for a reason other than reachability."""

    exit_code = EXIT_FAILED


class StorageUnreachableError(StorageError):
    """The storage endpoint cannot be reached, or access is denied."""

    exit_code = EXIT_UNREACHABLE


class BucketMissingError(StorageUnreachableError):
    """The repository's bucket does not exist: a configuration error, not worth retrying.

    A subclass of StorageUnreachableError, so that nothing concludes damage from it; exit 2
    because retrying cannot help (the url names a bucket that is not there).
    """

    exit_code = EXIT_USAGE


class CommitUncertainError(StorageUnreachableError):
    """A manifest write failed and reading it back did not tell whether it took effect.

    The backup's data is kept (it may be a committed backup): the message names the backup
    and the hint what to run once the storage answers again.
    """

    exit_code = EXIT_UNREACHABLE


class ObjectNotFoundError(StorageError):
    """A named object does not exist in the storage backend."""

    def __init__(self, key: str, *, hint: str | None = None):
        super().__init__(f"object not found: {key}", hint=hint)
        self.key = key


class RepositoryError(DrbackupError):
    """The repository is missing, of an unsupported format, or already exists."""

    exit_code = EXIT_USAGE


class IntegrityError(DrbackupError):
    """Stored data failed authentication or a checksum: corrupted, truncated or tampered."""

    exit_code = EXIT_FAILED


class SourceError(DrbackupError):
    """The backup source (PostgreSQL server, bucket) failed or refused."""

    exit_code = EXIT_FAILED


class SourceUnreachableError(SourceError):
    """The source server cannot be reached."""

    exit_code = EXIT_UNREACHABLE


class RestoreError(DrbackupError):
    """A restore failed or was refused (non-empty target, pg_restore errors)."""

    exit_code = EXIT_FAILED


class LeaseLostError(DrbackupError):
    """A running writer lost its lease (removed by prune, or not renewed in time): its
    data may be gone, so it refuses to commit."""

    exit_code = EXIT_FAILED


class LockedError(DrbackupError):
    """Another run holds the lock for this target."""

    exit_code = EXIT_FAILED


class CheckFailedError(DrbackupError):
    """A verification or drill check failed."""

    exit_code = EXIT_CHECK_FAILED


DrillFailedError = CheckFailedError
