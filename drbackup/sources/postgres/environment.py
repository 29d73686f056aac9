"""The environment of every child process drbackup starts, built in this one place.

Children are PostgreSQL programs (pg_dump, pg_restore, pg_dumpall, psql, initdb, pg_ctl,
postgres) and small helpers (``locale``, ``pg_config``).  None of them needs drbackup's
own secrets, and a child's environment is readable by anything that runs as its user
(``/proc/<pid>/environ``) and is inherited by whatever it starts in turn (a server's
``archive_command``).  So :func:`child_environ` is ``os.environ`` without:

* every ``DRBACKUP_*`` variable except the few that only name locations
  (:data:`KEPT_DRBACKUP`): ``DRBACKUP_PASSPHRASE``, ``DRBACKUP_KEY_FILE`` and the
  ``DRBACKUP__SECTION__KEY`` overrides, which may carry any secret of the config;
* the AWS credentials (:data:`AWS_SECRETS`), which the repository and bucket clients read.

Secrets read from ``*_file`` keys never enter the environment.  A database password
travels to a client tool as ``PGPASSWORD`` in its environment (:func:`client_env`), never
in argv, where ``ps`` shows it to every user of the machine: the argv builders in
``commands`` strip it from the connection string (:func:`dsn_without_password`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from drbackup.errors import ConfigError

KEPT_DRBACKUP = frozenset(
    {"DRBACKUP_CONFIG", "DRBACKUP_HOME", "DRBACKUP_PG_BIN", "DRBACKUP_PG_CLIENT_BIN"}
)
AWS_SECRETS = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"}
)
CONNECT_TIMEOUT_S = "10"


def is_secret_variable(name: str) -> bool:
    """True for an environment variable that must not reach a child process."""
    if name.startswith("DRBACKUP_"):
        return name not in KEPT_DRBACKUP
    return name in AWS_SECRETS


def child_environ(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) without drbackup's secrets: the start of every
    child's environment."""
    source = os.environ if base is None else base
    return {k: v for k, v in source.items() if not is_secret_variable(k)}


def server_env() -> dict[str, str]:
    """Environment for initdb and postgres: a child's (no secrets of ours), minus PG*
    variables, English messages."""
    env = {key: value for key, value in child_environ().items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def client_env(password: str | None, dsn: str | None = None) -> dict[str, str]:
    """Environment for a PostgreSQL client tool connecting with ``password`` (else the
    password written in ``dsn``, which the argv builders leave out of argv)."""
    env = child_environ()
    password = password or (dsn_password(dsn) if dsn else None)
    if password:
        env["PGPASSWORD"] = password
    env.setdefault("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT_S)
    return env


def dsn_password(dsn: str) -> str | None:
    """The password written in ``dsn`` (URL or key=value form), or None.

    Raises ConfigError for a dsn libpq cannot parse."""
    return _parse(dsn).get("password") or None


def dsn_without_password(dsn: str) -> str:
    """``dsn`` without its password (in key=value form if it had one); unchanged otherwise.

    Raises ConfigError for a dsn libpq cannot parse (it could hide a password anywhere)."""
    params = _parse(dsn)
    if "password" not in params:
        return dsn
    del params["password"]
    return make_conninfo("", **params)


def _parse(dsn: str) -> dict:
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        reason = " ".join(str(exc).split())  # never the dsn itself: it may hold a password
        raise ConfigError(
            f"invalid postgres dsn: {reason}",
            hint="e.g. postgresql://user@host:5432/dbname or 'host=... dbname=...'",
        ) from None


def mask_dsn(text: str) -> str:
    """Hide a password in a DSN, or in any text that may hold one (messages and logs):
    ``user:PASSWORD@`` in a URL, and ``password=...`` in key=value form or a URL's query."""
    text = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", text)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]+)", r"\1***", text, flags=re.I)
