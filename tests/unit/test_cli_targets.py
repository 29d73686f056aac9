"""How commands read target names (cli/targets.py, drill run's PLAN)."""

from __future__ import annotations

import pytest

from drbackup.cli.drill import split_plan
from drbackup.cli.targets import chosen_targets, pop_notes
from drbackup.errors import UsageError


def test_names_or_all_but_not_both():
    assert chosen_targets(("a", "b"), False, ()) == ["a", "b"]
    assert chosen_targets((), True, (), ["a", "b", "c"]) == ["a", "b", "c"]
    assert chosen_targets((), False, ()) == []
    with pytest.raises(UsageError, match="give target names or --all, not both"):
        chosen_targets(("a",), True, (), ["a", "b"])
    assert pop_notes() == []  # only the old spellings leave a note


@pytest.mark.parametrize(
    ("args", "plan", "targets"),
    [
        (("drills/monthly.yaml",), "drills/monthly.yaml", ()),
        (("monthly.yml", "app"), "monthly.yml", ("app",)),
        (
            ("/etc/drbackup/drills/plan", "app", "media"),
            "/etc/drbackup/drills/plan",
            ("app", "media"),
        ),
        (("app", "media"), None, ("app", "media")),
        ((), None, ()),
    ],
)
def test_drill_run_takes_a_path_first_as_its_plan(args, plan, targets):
    assert split_plan(args) == (plan, targets)
