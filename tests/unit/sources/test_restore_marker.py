"""Restore markers and generated names: what proves a database is a restore's own."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from drbackup.sources.postgres.restore_marker import (
    MARKER_PREFIX,
    RestoreMarker,
    is_leftover,
    new_database_name,
    old_database_name,
    parse_marker,
    start_marker,
    user_comment,
)

NOW = datetime(2026, 11, 23, 1, 30, 5, tzinfo=UTC)


def marker(role="target", target="app", **changes) -> RestoreMarker:
    base = start_marker(target, "app/20261123T013000Z-abcdef", NOW)
    return base.as_role(role, **changes)


def test_a_marker_round_trips_through_its_comment():
    m = marker(previous_comment="the shop's database — prod", keep=True)
    assert m.comment().startswith(MARKER_PREFIX)
    assert parse_marker(m.comment()) == m
    assert m.started == "2026-11-23T01:30:05+00:00"
    assert m.restore_id.startswith("20261123T013005Z-")
    assert m.describe() == (
        f"backup app/20261123T013000Z-abcdef, started 2026-11-23T01:30:05+00:00 "
        f"by pid {m.pid} on {m.host}"
    )


@pytest.mark.parametrize(
    "comment",
    [
        None,
        "",
        "a user's comment",
        MARKER_PREFIX + "not json",
        MARKER_PREFIX + "{}",
        MARKER_PREFIX + '{"role": "new"}',
        marker().comment().replace('"role": "target"', '"role": "victim"'),
        marker().comment().replace('"restore_id": "', '"restore_id": "x'),
        " " + marker().comment(),
    ],
)
def test_anything_else_is_not_a_marker(comment):
    assert parse_marker(comment) is None


def test_user_comment_is_the_comment_or_the_one_a_marker_keeps():
    assert user_comment(None) is None
    assert user_comment("ours") == "ours"
    assert user_comment(marker(previous_comment="ours").comment()) == "ours"
    assert user_comment(marker().comment()) is None


def test_generated_names_fit_postgres_identifiers():
    m = marker()
    new = new_database_name(m.restore_id)
    assert new == "drbackup_restore_" + m.restore_id.lower().replace("-", "_")
    assert len(new) == 40
    long_target = "é" * 40  # 80 bytes: the target's part is cut on a character boundary
    old = old_database_name(long_target, m.restore_id)
    assert len(old.encode()) <= 63
    assert old.endswith("_replaced_" + m.restore_id.lower().replace("-", "_"))
    assert old.startswith("é" * 15)
    assert (
        old_database_name("app", m.restore_id) == "app_replaced_" + new[len("drbackup_restore_") :]
    )


def test_a_leftover_needs_its_marker_and_its_exact_generated_name():
    new, old = marker("new"), marker("old")
    new_name = new_database_name(new.restore_id)
    old_name = old_database_name("app", old.restore_id)
    assert is_leftover(new_name, new, "app")
    assert is_leftover(old_name, old, "app")
    # the name alone proves nothing, nor does a marker on another name
    assert not is_leftover(new_name, None, "app")
    assert not is_leftover("drbackup_restore_important", new, "app")
    assert not is_leftover(old_name, new, "app")
    assert not is_leftover(new_database_name(marker("new").restore_id), new, "app")
    # another target's leftovers are not this restore's business
    assert not is_leftover(new_name, marker("new", target="billing"), "app")
    # a database kept on purpose, and a target being restored in place, are never leftovers
    assert not is_leftover(old_name, old.as_role("old", keep=True), "app")
    assert not is_leftover("app", marker("target"), "app")
