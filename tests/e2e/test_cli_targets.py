"""One way to name targets (issue 20 item 5): TARGET... as arguments, or --all; the older
--target/-t/--targets still work, hidden, and a run that used one ends with a note."""

from __future__ import annotations

import pytest

from drbackup.cli.main import main

NOTE = "drbackup: note: {flag} is deprecated: name targets as arguments, '{path}' (or --all for every target)"


@pytest.fixture
def two_targets(local_repo_config, pg_db, run_cli):
    local_repo_config.set_target("app", pg_db.dsn, retention={"keep_last": 1})
    local_repo_config.set_target("other", pg_db.dsn, retention={"keep_last": 1})
    assert run_cli("backup", "postgres", "--all", "-q").code == 0
    return local_repo_config


def test_prune_takes_names_as_arguments_and_the_old_option_with_a_note(two_targets, run_cli):
    new = run_cli("prune", "app", "--dry-run")
    assert new.code == 0, new.stderr
    assert (
        [line for line in new.stdout.splitlines() if line.startswith("target ")]
        == [line for line in new.stdout.splitlines() if line.startswith("target app:")]
        != []
    )
    old = run_cli("prune", "-t", "app", "--dry-run")
    assert (old.code, old.stdout) == (0, new.stdout)
    assert old.error_lines[-1] == NOTE.format(flag="-t/--target", path="drbackup prune app")
    assert new.stderr.count("deprecated") == 0
    every = run_cli("prune", "--all", "--dry-run")
    assert every.code == 0 and "target other:" in every.stdout and "target app:" in every.stdout


def test_report_and_backup_all_take_names_as_arguments(two_targets, run_cli):
    new = run_cli("report", "app", "--format", "json")
    old = run_cli("report", "--target", "app", "--format", "json")
    assert [t["target"] for t in new.json()["targets"]] == ["app"]
    assert (old.code, [t["target"] for t in old.json()["targets"]]) == (new.code, ["app"])
    assert old.error_lines[-1] == NOTE.format(flag="--target", path="drbackup report app")

    quiet = run_cli("backup", "all", "other", "--quiet")
    assert (quiet.code, quiet.stdout, quiet.stderr) == (0, "", "")
    made = run_cli("backup", "all", "other", "--json")
    assert made.code == 0, made.stderr
    assert [m["target"] for m in made.json()["members"]] == ["other"]
    old = run_cli("backup", "all", "--targets", "app,other", "--json")
    assert old.code == 0, old.stderr
    assert [m["target"] for m in old.json()["members"]] == ["app", "other"]
    assert old.error_lines == [NOTE.format(flag="--targets", path="drbackup backup all app other")]


def test_names_and_all_together_are_refused_and_a_failed_run_has_no_note(two_targets, run_cli):
    for args in (("prune", "app", "--all"), ("backup", "postgres", "app", "--all")):
        both = run_cli(*args)
        assert (both.code, both.error_lines) == (
            2,
            [
                "drbackup: error: give target names or --all, not both",
                "hint: drop the names to take every target",
            ],
        ), args
    unknown = run_cli("backup", "all", "--targets", "app,nosuch")
    assert unknown.code == 2
    assert not any("deprecated" in line for line in unknown.error_lines)


def test_help_shows_the_arguments_not_the_old_options(capsys):
    for command in (["prune"], ["report"], ["backup", "all"], ["drill", "run"]):
        assert main([*command, "--help"]) == 0
        usage = capsys.readouterr().out
        assert "--all" in usage, command
        assert "--target" not in usage and "-t," not in usage, command
        assert "TARGET" in usage or "[TARGETS]" in usage, command


def test_mixed_spellings_note_every_name_and_a_name_given_twice_is_one_target(two_targets, run_cli):
    mixed = run_cli("prune", "other", "-t", "app", "--dry-run")
    assert mixed.code == 0, mixed.stderr
    assert "target other:" in mixed.stdout and "target app:" in mixed.stdout
    assert mixed.error_lines[-1] == NOTE.format(flag="-t/--target", path="drbackup prune other app")
    twice = run_cli("backup", "postgres", "app", "app", "--json")
    assert twice.code == 0, twice.stderr  # not "another backup of target app is running"
    assert twice.json()["target"] == "app"  # one record: one backup


def test_a_partly_failed_backup_names_the_backups_it_stored(two_targets, pg_db, run_cli):
    two_targets.data["postgres"]["other"]["databases"] = ["no_such_database"]
    two_targets.write()
    run = run_cli("backup", "postgres", "app", "other")
    assert run.code != 0
    error = next(line for line in run.error_lines if line.startswith("drbackup: error:"))
    assert error.startswith("drbackup: error: 1 of 2 backups failed: other: "), error
    stored = error.split("(stored: ")[1].rstrip(")")
    listed = run_cli("list", "--target", "app", "--json").json()
    assert stored == f"app/{listed[-1]['backup_id']}"
