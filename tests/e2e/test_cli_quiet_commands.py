"""``--quiet`` on ``verify``, ``prune`` and ``drill run`` (issue 20 item 5): nothing printed
when they succeed; warnings and errors still on stderr; refused beside what asks for output."""

from __future__ import annotations

from tests.e2e.conftest import load_awkward
from tests.e2e.test_drill_cli import add_signing_key, scratch_databases


def test_quiet_verify_and_prune_print_nothing(local_repo_config, pg_db, run_cli):
    local_repo_config.set_target("app", pg_db.dsn, retention={"keep_last": 1})
    made = run_cli("backup", "postgres", "app", "--json").json()
    verified = run_cli("verify", made["backup_id"], "--quiet")
    assert (verified.code, verified.stdout, verified.stderr) == (0, "", "")
    loud = run_cli("verify", made["backup_id"])
    assert loud.code == 0 and loud.stdout.startswith(f"backup app/{made['backup_id']} ok: ")

    pruned = run_cli("prune", "-q")
    assert (pruned.code, pruned.stdout, pruned.stderr) == (0, "", "")
    assert run_cli("prune").stdout.splitlines()[0].startswith("target app: ")


def test_quiet_is_refused_beside_output_it_would_hide(local_repo_config, run_cli):
    cases = {
        ("verify", "x", "-q", "--json"): "--quiet and --json exclude each other",
        ("prune", "-q", "--json"): "--quiet and --json exclude each other",
        ("prune", "-q", "--dry-run"): "--quiet and --dry-run exclude each other",
        ("drill", "run", "app", "-q", "--format", "json"): (
            "--quiet and --format json exclude each other"
        ),
    }
    for args, message in cases.items():
        refused = run_cli(*args)
        assert (refused.code, refused.stdout, refused.error_lines) == (
            2,
            "",
            [f"drbackup: error: {message}", "hint: drop one of them"],
        ), args


def test_a_quiet_drill_says_only_which_check_warned(local_repo_config, pg_db, run_cli):
    add_signing_key(local_repo_config)
    load_awkward(pg_db)
    assert run_cli("backup", "postgres", "app", "-q").code == 0
    drilled = run_cli("drill", "run", "app", "--quiet")
    assert (drilled.code, drilled.stdout) == (0, ""), drilled.stderr
    (line,) = drilled.error_lines
    assert line.startswith("drbackup: warning: drill ")
    assert ": foreign_keys: 1 pre-existing inconsistency: foreign key reviews_customer_fk" in line
    assert scratch_databases(pg_db.cluster) == []
