"""Loading the config: the YAML file (or built-in defaults), the environment, validation.

Precedence, later wins: built-in defaults < the YAML file < ``DRBACKUP_PASSPHRASE`` and
``DRBACKUP_KEY_FILE`` < ``DRBACKUP__SECTION__KEY`` overrides; but a key from the environment
beside another key source in the file is an error, not a silent choice.  ``AWS_*``
variables only fill ``repository.s3`` keys that are still unset, and only for an
``s3://`` repository.
Every problem found is reported at once, each with its path, in one :class:`ConfigError`.
"""

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from drbackup.config.schema import (
    Config,
    default_catalog_url,
    default_repository_url,
    env_only_marker,
)
from drbackup.errors import ConfigError

CONFIG_ENV = "DRBACKUP_CONFIG"
OVERRIDE_PREFIX = "DRBACKUP__"
DEFAULTS_SOURCE = "(built-in defaults)"
# Keys refused as inline secrets wherever they appear, on top of the schema's own secrets.
SECRET_KEYS = {"password", "passphrase", "secret", "secret_key", "secret_access_key", "token"}
SECRET_KEYS |= {"access_key", "access_key_id", "session_token", "private_key", "signing_key"}
_KEY_ENV = {"DRBACKUP_PASSPHRASE": "passphrase", "DRBACKUP_KEY_FILE": "key_file"}
_AWS_SETTINGS = {"AWS_ENDPOINT_URL": "endpoint_url", "AWS_REGION": "region"}
_AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "access_key_id",
    "AWS_SECRET_ACCESS_KEY": "secret_access_key",
    "AWS_SESSION_TOKEN": "session_token",
}

KeyPath = tuple[str | int, ...]


def load_config(
    path: str | os.PathLike | None = None, *, env: Mapping[str, str] | None = None
) -> Config:
    """Load and validate the config from ``path``, else ``$DRBACKUP_CONFIG``, else defaults.

    ``env`` defaults to ``os.environ``.  Raises ConfigError: for a missing or unreadable
    file or a YAML syntax error (one line), or listing every invalid key with its path.
    """
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV) or None
    data = read_config_file(path) if path else {}
    findings = pop_inline_secrets(data, Config, ())
    overlay = apply_environment(data, env)
    findings += overlay.findings
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        findings += validation_findings(exc, overlay.origins)
    if findings:
        raise ConfigError(summarize(str(path) if path else DEFAULTS_SOURCE, findings))
    cfg._source = str(path) if path else None
    return cfg


def format_validation_error(
    exc: ValidationError, source: str, *, origins: Mapping[KeyPath, str] | None = None
) -> str:
    """The ConfigError message for ``exc``: a summary line, then one line per error.

    ``origins`` maps config paths to the environment variables that set them.
    """
    return summarize(source, validation_findings(exc, origins or {}))


def summarize(source: str, findings: list[str]) -> str:
    count = len(findings)
    return f"config {source} has {count} error{'' if count == 1 else 's'}\n" + "\n".join(findings)


# -- the file --------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key repeated in one mapping (YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                # Every key drbackup reads is a name: a target called `off` or `2024` would
                # otherwise arrive as False or 2024 and fail with a puzzling message.
                raise yaml.constructor.ConstructorError(
                    None, None, _not_a_name(key, key_node), key_node.start_mark
                )
            if isinstance(key, str | int) and key in seen:
                problem = f"duplicate key '{key}'"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _not_a_name(key: Any, node: yaml.Node) -> str:
    if not isinstance(node, yaml.ScalarNode):
        return "a key must be a name, not a list or mapping"
    if key is None:
        kind = "null"
    elif isinstance(key, date):  # datetime too
        kind = "a date"
    else:
        kind = {bool: "a boolean", int: "a number", float: "a number"}.get(
            type(key), f"a {type(key).__name__}"
        )
    return f"key {node.value!r} is read as {kind}: quote it ('{node.value}')"


def read_yaml_mapping(path: str | os.PathLike, what: str, *, not_found: str, hint: str) -> Any:
    """The YAML document at ``path`` (duplicate keys refused); raises one-line ConfigErrors.

    ``what`` names the file in messages ("config", "drill plan"); ``not_found`` is the
    message for a missing file.  The caller checks the document's shape.
    """
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{not_found}: {path}", hint=hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not utf-8 text"
        raise ConfigError(f"cannot read {what} {path}: {reason.lower()}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{what} {path}: invalid yaml{where}: {exc.problem}") from None


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in the YAML file at ``path`` ({} when empty); raises ConfigError."""
    hint = f"pass an existing file or set {CONFIG_ENV}; drbackup.example.yaml shows the format"
    data = read_yaml_mapping(path, "config", not_found="config file not found", hint=hint)
    if not isinstance(data, dict | None):
        raise ConfigError(
            f"config {path}: expected a mapping of sections, got {type(data).__name__}"
        )
    return data or {}


# -- the schema, walked by key ---------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    """The model class or ``dict[...]`` behind Annotated and Optional wrappers."""
    while get_origin(annotation) in (Annotated, Union, UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        annotation = args[0]
    return annotation


def is_model(node: Any) -> bool:
    """Whether ``node`` is a config model class."""
    return isinstance(node, type) and issubclass(node, BaseModel)


def child_node(node: Any, key: Any) -> Any:
    """The schema node (model class, ``dict[...]`` or None) for ``key`` under ``node``."""
    if is_model(node):
        field = node.model_fields.get(key) if isinstance(key, str) else None
        return _unwrap(field.annotation) if field else None
    if get_origin(node) is dict:
        return _unwrap(get_args(node)[1])
    return None


def node_at(path: KeyPath) -> Any:
    node: Any = Config
    for key in path:
        node = child_node(node, key)
    return node


def dotted(path: KeyPath) -> str:
    """``('postgres', 'app', 'databases', 0)`` -> ``postgres.app.databases[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) and text else f"{'.' if text else ''}{part}"
    return text


def _file_keys(node: Any) -> list[str]:
    """Keys the YAML file may set under ``node``."""
    fields = node.model_fields if is_model(node) else {}
    return [key for key in fields if not env_only_marker(node, key)]


# -- inline secrets --------------------------------------------------------------------


def pop_inline_secrets(data: Any, node: Any, where: KeyPath) -> list[str]:
    """Remove secrets written inline in ``data``; one finding per secret, never its value."""
    if not isinstance(data, dict):
        return []
    findings = []
    for key in list(data):
        path = (*where, key)
        if key in SECRET_KEYS or (is_model(node) and env_only_marker(node, str(key))):
            del data[key]
            findings.append(
                f"at '{dotted(path)}': inline secrets are not allowed ({_secret_hint(node, path)})"
            )
        else:
            findings += pop_inline_secrets(data[key], child_node(node, key), path)
    return findings


def _secret_hint(node: Any, path: KeyPath) -> str:
    key = str(path[-1])
    options = [f"'{key}_file'"] if f"{key}_file" in _file_keys(node) else []
    marker = env_only_marker(node, key) if is_model(node) else None
    if marker:
        options.append(marker.env or override_name(path))
    return "use " + (" or ".join(options) if options else "a '*_file' key")


def override_name(path: KeyPath) -> str:
    """The environment variable that overrides the key at ``path``."""
    return OVERRIDE_PREFIX + "__".join(str(p).upper() for p in path)


# -- the environment -------------------------------------------------------------------


@dataclass
class Overlay:
    """The environment applied to the config data: which variable set which path, and
    findings for variables that cannot apply."""

    data: dict
    origins: dict[KeyPath, str] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)

    def set(self, path: KeyPath, value: Any, var: str) -> None:
        parent = _section(self.data, path[:-1])
        if parent is None:
            where = f"'{dotted(path[:-1])}' is not a section"
            self.findings.append(f"{var}: cannot set '{dotted(path)}': {where}")
            return
        parent[path[-1]] = value
        self.origins[path] = var


def apply_environment(data: dict, env: Mapping[str, str]) -> Overlay:
    """Apply the environment to ``data`` in place, in the order the module docstring gives."""
    overlay = Overlay(data)
    for var, key in _KEY_ENV.items():
        if env.get(var):
            overlay.set(("repository", "encryption", key), env[var], var)
    for var in sorted(v for v in env if v.startswith(OVERRIDE_PREFIX)):
        _apply_override(overlay, var, env[var])
    _fill_from_aws(overlay, env)
    repository = _section(data, ("repository",))
    if repository is not None:
        repository.setdefault("url", default_repository_url(env))
    data.setdefault("catalog", default_catalog_url(env))
    return overlay


def _section(data: dict, path: KeyPath) -> dict | None:
    """The mapping at ``path``, created if absent; None if something else is in the way."""
    for key in path:
        if data.get(key) is None:
            data[key] = {}
        data = data[key]
        if not isinstance(data, dict):
            return None
    return data


def _apply_override(overlay: Overlay, var: str, text: str) -> None:
    path = tuple(part.lower() for part in var[len(OVERRIDE_PREFIX) :].split("__"))
    if not all(path):
        overlay.findings.append(f"{var}: empty key in the name (use DRBACKUP__SECTION__KEY)")
        return
    parent = node_at(path[:-1])
    if is_model(parent) and env_only_marker(parent, path[-1]):
        value: Any = text  # secrets are taken verbatim: "0123" or "yes" must stay strings
    else:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            overlay.findings.append(f"{var}: invalid yaml value")
            return
    overlay.set(path, value, var)


def _fill_from_aws(overlay: Overlay, env: Mapping[str, str]) -> None:
    repository = overlay.data.get("repository")
    if not isinstance(repository, dict) or not str(repository.get("url", "")).startswith("s3://"):
        return
    s3 = _section(overlay.data, ("repository", "s3"))
    if s3 is None:
        return
    filled = dict(_AWS_SETTINGS)
    # Credentials come as a set: never mix a file's keys with an ambient session token.
    if not {"access_key_id_file", "secret_access_key_file"} & s3.keys():
        filled |= _AWS_CREDENTIALS
    for var, key in filled.items():
        if env.get(var) and s3.get(key) is None:
            overlay.set(("repository", "s3", key), env[var], var)


# -- validation errors -----------------------------------------------------------------


def validation_findings(exc: ValidationError, origins: Mapping[KeyPath, str]) -> list[str]:
    """One ``at '<path>': <message>`` line per error in ``exc``, inputs never shown."""
    return [
        _finding(error, origins) for error in exc.errors(include_input=False, include_url=False)
    ]


def _finding(error: Any, origins: Mapping[KeyPath, str]) -> str:
    path = tuple(p for p in error["loc"] if p != "[key]")
    text = _message(error, path)
    # Variables that set this key, a parent of it, or a key directly under it.
    env = [var for where, var in origins.items() if _related(path, where) and var not in text]
    text += f" (from {', '.join(env)})" if env else ""
    return f"at '{dotted(path)}': {text}" if path else text


def _related(path: KeyPath, where: KeyPath) -> bool:
    if path[: len(where)] == where:
        return True
    return bool(path) and len(where) == len(path) + 1 and where[: len(path)] == path


def _message(error: Any, path: KeyPath) -> str:
    kind = error["type"]
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown_key(path)
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "expected a mapping of keys to values"
    msg = error["msg"]
    return msg[:1].lower() + msg[1:]


def _unknown_key(path: KeyPath) -> str:
    known = _file_keys(node_at(path[:-1]))
    close = difflib.get_close_matches(str(path[-1]), known, n=1)
    if close:
        return f"unknown key (did you mean '{close[0]}'?)"
    return f"unknown key (known keys: {', '.join(known)})"
