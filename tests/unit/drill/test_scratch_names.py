"""Scratch names, markers and the guard: a drill touches only what it named and marked."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from drbackup.drill.scratch import (
    MARKER_FILE,
    MAX_IDENTIFIER,
    drill_id_of_name,
    is_drill_id,
    marked_by,
    new_drill_id,
    owner_of,
    remove_stale_clusters,
    require_scratch_name,
    scratch_database_name,
    scratch_marker,
    signals_deferred,
    unmarked_clusters,
)
from drbackup.errors import UsageError

PREFIX = "drbackup_drill_"
DRILL = "20261123T020000Z-a1b2c3"


def test_drill_ids_sort_by_time():
    drill_id = new_drill_id(datetime(2026, 11, 23, 2, 0, tzinfo=UTC))
    assert drill_id.startswith("20261123T020000Z-") and is_drill_id(drill_id)
    assert not is_drill_id("../etc") and not is_drill_id("20261123T020000Z")


def test_scratch_name_is_prefix_target_drill_id():
    assert (
        scratch_database_name(PREFIX, "app", DRILL) == "drbackup_drill_app_20261123t020000z_a1b2c3"
    )
    assert scratch_database_name(PREFIX, "app", DRILL, 2).endswith("_a1b2c3_2")


def test_scratch_name_is_a_safe_identifier_within_63_bytes():
    name = scratch_database_name(PREFIX, "Billing.EU-West" + "x" * 80, DRILL)
    assert len(name) == MAX_IDENTIFIER
    assert name.startswith(PREFIX + "billing_eu_west") and name.endswith("_20261123t020000z_a1b2c3")
    assert require_scratch_name(name, PREFIX) == name


@pytest.mark.parametrize(
    "name",
    [
        "app",  # an ordinary database
        "postgres",
        "drbackup_drill_",  # the prefix alone
        "drbackup_drillapp",  # close, but not the prefix
        "DRBACKUP_DRILL_app",  # case matters: a quoted identifier is another database
        'drbackup_drill_x" OR 1=1',  # quoting tricks
        "drbackup_drill_x; DROP DATABASE app",
        "drbackup_drill_" + "x" * 60,  # longer than PostgreSQL keeps: would be truncated
        "",
        # the prefix is not enough: a drill's names end with its drill id
        "drbackup_drill_important",
        "drbackup_drill_app_20261123t020000z",
        "drbackup_drill__20261123t020000z_a1b2c3",  # no target part
        "drbackup_drill_app_20261123t020000z_a1b2c3_x",
        "drbackup_drill_app_20261123T020000Z-a1b2c3",  # not the generated spelling
    ],
)
def test_the_guard_refuses_anything_a_drill_does_not_generate(name):
    with pytest.raises(UsageError) as info:
        require_scratch_name(name, PREFIX)
    assert info.value.message == (
        f"refusing to touch database {name!r}: not a scratch database "
        "(scratch names are drbackup_drill_<target>_<drill id>)"
    )


def test_a_short_prefix_does_not_make_other_databases_scratch():
    # scratch_prefix: vic once let a drill drop "victim"
    with pytest.raises(UsageError):
        require_scratch_name("victim", "vic")
    assert drill_id_of_name(scratch_database_name("vic", "app", DRILL), "vic") == DRILL


def test_the_marker_names_the_scratch_and_the_drill():
    name = scratch_database_name(PREFIX, "app", DRILL)
    marker = scratch_marker(DRILL, name)
    assert marker == f"drbackup drill scratch {name} of drill {DRILL}"
    assert marked_by(marker, name) == (DRILL, False)
    assert marked_by(scratch_marker(DRILL, name, kept=True), name) == (DRILL, True)
    assert owner_of(name, marker, PREFIX) == (DRILL, False)
    # renamed after it was made, another drill's marker, a hand-written comment, none
    other = scratch_database_name(PREFIX, "app", "20261123T020000Z-ffffff")
    assert owner_of(other, marker, PREFIX) is None
    assert owner_of(other, scratch_marker("20261123T020000Z-ffffff", name), PREFIX) is None
    assert owner_of(name, scratch_marker(DRILL, name) + " ", PREFIX) is None
    assert owner_of(name, "drbackup drill scratch, kept for inspection", PREFIX) is None
    assert owner_of(name, "", PREFIX) is None and owner_of(name, None, PREFIX) is None
    assert owner_of("drbackup_drill_important", marker, PREFIX) is None


def test_only_marked_cluster_directories_are_removed(tmp_path):
    base, outside = tmp_path / "drills", tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    ours = base / DRILL
    ours.mkdir()
    (ours / MARKER_FILE).write_text(scratch_marker(DRILL, DRILL) + "\n")
    (ours / "data").mkdir()
    unmarked = base / "20261123T020000Z-bbbbbb"  # a user's directory, or an old drbackup's
    unmarked.mkdir()
    (unmarked / "file").write_text("x")
    wrong = base / "20261123T020000Z-cccccc"  # a marker naming another directory
    wrong.mkdir()
    (wrong / MARKER_FILE).write_text(scratch_marker(DRILL, DRILL))
    link = base / "20261123T020000Z-dddddd"  # a link named like a cluster
    link.symlink_to(outside)
    assert remove_stale_clusters(base, include_kept=True) == [ours]
    assert not ours.exists() and (unmarked / "file").exists() and (wrong / MARKER_FILE).exists()
    assert (outside / "precious").read_text() == "keep me" and link.is_symlink()
    assert unmarked_clusters(base) == [unmarked, wrong, link]


@pytest.mark.parametrize("prefix", ["", "Drill_", "drill-", "a b"])
def test_an_unsafe_prefix_is_refused(prefix):
    with pytest.raises(UsageError, match="invalid scratch prefix"):
        scratch_database_name(prefix, "app", DRILL)
    with pytest.raises(UsageError, match="invalid scratch prefix"):
        require_scratch_name("drill_app", prefix)


def test_signals_are_deferred_during_cleanup_and_raised_after():
    import os
    import signal

    done = []
    with pytest.raises(KeyboardInterrupt), signals_deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        done.append("cleanup finished")
    assert done == ["cleanup finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
