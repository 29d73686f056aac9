"""Application groups: a PostgreSQL target and the minio targets its rows name."""

from __future__ import annotations

from drbackup.config import types as t
from drbackup.config.section import Section
from drbackup.config.types import config_error


class GroupSettings(Section):
    """An application: its database and the buckets its rows name (``restore group``)."""

    postgres: t.TargetName
    """The PostgreSQL target."""
    minio: list[t.TargetName] = []
    """Its minio targets (every bucket of each)."""
    references: list[str] = []
    """Queries returning (bucket, key) rows that must name objects, checked after a group
    restore (docs/operations.md, "One recovery point for an application")."""


def check_group_targets(config):
    """Raise a validation error for a group naming a target that is not configured (the
    ``Config`` model's validator: returns ``config``)."""
    for name, group in config.groups.items():
        if group.postgres not in config.postgres:
            raise config_error(
                "group",
                "groups.{group}.postgres: '{target}' is not a postgres target",
                group=name,
                target=group.postgres,
            )
        for target in group.minio:
            if target not in config.minio:
                raise config_error(
                    "group",
                    "groups.{group}.minio: '{target}' is not a minio target",
                    group=name,
                    target=target,
                )
    return config
