"""The base of every config model (:class:`Section`) and the defaults that depend on the
environment; shared by schema.py and the sections in their own modules."""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator

from drbackup.config import types as t
from drbackup.config.types import EnvOnly, config_error

MIB = 2**20
EnvSecret = Annotated[t.Secret | None, EnvOnly()]


def default_home(env: Mapping[str, str]) -> Path:
    """``$DRBACKUP_HOME``, else ``~/.local/share/drbackup`` (``HOME`` taken from ``env``)."""
    if env.get("DRBACKUP_HOME"):
        return Path(env["DRBACKUP_HOME"]).expanduser()
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".local" / "share" / "drbackup"


def default_repository_url(env: Mapping[str, str] = os.environ) -> str:
    return str(default_home(env) / "repo")


def default_catalog_url(env: Mapping[str, str] = os.environ) -> str:
    return f"sqlite:///{default_home(env) / 'catalog.db'}"


def env_only_marker(model: type[BaseModel], key: str) -> EnvOnly | None:
    """The :class:`EnvOnly` marker of ``model.key``, or None if the file may set it."""
    field = model.model_fields.get(key)
    return next((m for m in field.metadata if isinstance(m, EnvOnly)), None) if field else None


def key_label(model: type[BaseModel], key: str) -> str:
    """``'passphrase' (DRBACKUP_PASSPHRASE)`` for a key with its own variable, else ``'key'``."""
    marker = env_only_marker(model, key)
    return f"'{key}' ({marker.env})" if marker and marker.env else f"'{key}'"


def _none_as_empty(value: Any) -> Any:
    return {} if value is None else value


class Section(BaseModel):
    """Base of every config model: unknown keys are errors; inputs never echo in errors."""

    model_config = ConfigDict(
        extra="forbid", hide_input_in_errors=True, use_attribute_docstrings=True
    )
    secret_files: ClassVar[dict[str, str]] = {}  # secret field -> the *_file key supplying it

    @model_validator(mode="after")
    def _read_secret_files(self) -> Self:
        for secret, file_key in self.secret_files.items():
            path = getattr(self, file_key)
            if path is not None and getattr(self, secret) is not None:
                a, b = key_label(type(self), secret), f"'{file_key}'"
                raise config_error("one_of", "set only one of {a} and {b}", a=a, b=b)
            if path is not None:
                setattr(self, secret, t.read_secret_file(path))
        return self


# On a section: an empty YAML value (`s3:`) means the section's defaults.
EMPTY_IS_DEFAULT = BeforeValidator(_none_as_empty)
