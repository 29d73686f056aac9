"""Scratch names and the prefix guard: a drill never touches a database outside its prefix."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from drbackup.drill.scratch import (
    MAX_IDENTIFIER,
    is_drill_id,
    new_drill_id,
    require_scratch_name,
    scratch_database_name,
    signals_deferred,
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
    ],
)
def test_the_guard_refuses_anything_outside_the_prefix(name):
    with pytest.raises(UsageError) as info:
        require_scratch_name(name, PREFIX)
    assert info.value.message == (
        f"refusing to touch database {name!r}: not a scratch database "
        "(scratch names start with 'drbackup_drill_')"
    )


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
