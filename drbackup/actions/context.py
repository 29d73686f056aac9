"""From a loaded configuration to the objects actions work with: storage, repository, catalog.

Actions receive an :class:`AppContext`; they never read the environment or files themselves.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from drbackup.actions.runs import CatalogIndex
from drbackup.codec import keys
from drbackup.codec.pipeline import CodecSettings
from drbackup.errors import ConfigError
from drbackup.repository.keyring import Secrets
from drbackup.repository.repo import Repository
from drbackup.storage import open_storage

if TYPE_CHECKING:
    from drbackup.catalog import Catalog
    from drbackup.config import Config
    from drbackup.config.schema import EncryptionSettings
    from drbackup.storage.base import Storage


@dataclass
class AppContext:
    """Lazily built collaborators of one command run."""

    config: Config
    progress: bool = False  # show progress bars (stderr is a terminal)
    # What went wrong beside the run without failing it (a catalog write): the command
    # line prints these after the command, the daemon logs those of its workers.
    warnings: list[str] = field(default_factory=list)
    _repo: Repository | None = field(default=None, repr=False)
    _repo_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def storage(self) -> Storage:
        repo_cfg = self.config.repository
        s3 = None
        if str(repo_cfg.url).startswith("s3://"):
            s3 = repo_cfg.s3_kwargs()
            if repo_cfg.object_lock is not None:
                s3["object_lock"] = (repo_cfg.object_lock.mode, repo_cfg.object_lock.days)
        return open_storage(str(repo_cfg.url), s3=s3)

    @cached_property
    def secrets(self) -> Secrets:
        return secrets_from_config(self.config.repository.encryption)

    def codec_settings(self, chunk_size: int) -> CodecSettings:
        comp = self.config.repository.compression
        return CodecSettings(level=comp.level, threads=comp.threads, chunk_size=chunk_size)

    def repository(self, *, background_key: bool = False) -> Repository:
        """Open the configured repository (cached for the run).  ``background_key``: derive
        a passphrase's key in a helper thread, its errors raised where the key is first used
        (for commands that have other work to start meanwhile)."""
        with self._repo_lock:  # parallel targets open it once (one scrypt, not one each)
            if self._repo is None:
                repo = Repository.open(self.storage, self.secrets, background_key=background_key)
                repo.codec = self.codec_settings(repo.codec.chunk_size)
                self._repo = repo
            return self._repo

    @cached_property
    def catalog(self) -> Catalog:
        from drbackup.catalog import Catalog

        return Catalog.open(str(self.config.catalog))

    @cached_property
    def index(self) -> CatalogIndex:
        """The catalog for recording runs and backups: its failures land in ``warnings``."""
        return CatalogIndex(lambda: self.catalog, self.warnings.append)


def secrets_from_config(enc: EncryptionSettings) -> Secrets:
    """Read key material named by ``repository.encryption`` (files are read here, once)."""
    passphrase = enc.passphrase.get_secret_value() if enc.passphrase is not None else None
    key_file = keys.read_key_file(enc.key_file, "key file") if enc.key_file else None
    private = (
        keys.read_key_file(enc.private_key_file, "private key file")
        if enc.private_key_file
        else None
    )
    public = None
    if enc.public_key:
        public = keys.unb64(enc.public_key, "repository.encryption.public_key")
        if len(public) != 32:
            raise ConfigError("repository.encryption.public_key must be 32 bytes, base64-encoded")
    return Secrets(passphrase=passphrase, key_file=key_file, public_key=public, private_key=private)
