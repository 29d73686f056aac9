"""click's own usage errors (missing argument, unknown option or command, bad choice or
value) speak like every other error (issue 20): ``drbackup: error: <one line>``, a hint
naming the command's ``--help``, exit 2 (usage), nothing on stdout, no ``Usage:`` block."""

from __future__ import annotations

import subprocess

import pytest

from tests.e2e.conftest import cli_argv


@pytest.mark.parametrize(
    ("args", "lines"),
    [
        (
            ("drill", "verify-report"),
            [
                "drbackup: error: missing argument 'FILE'",
                "hint: see 'drbackup drill verify-report --help'",
            ],
        ),
        (
            ("list", "--bogus"),
            ["drbackup: error: no such option '--bogus'", "hint: see 'drbackup list --help'"],
        ),
        (
            ("backup", "postgres", "-t", "app"),
            [
                "drbackup: error: no such option '-t'",
                "hint: name targets as arguments: 'drbackup backup postgres NAME...' (or --all), "
                "see 'drbackup backup postgres --help'",
            ],
        ),
        (
            ("report", "-c", "x.yaml"),
            [
                "drbackup: error: no such option '-c'",
                "hint: -c goes before the command: 'drbackup -c ... report'",
            ],
        ),
        (
            ("drill", "run", "--json"),  # not "did you mean '--point'"
            [
                "drbackup: error: no such option '--json'",
                "hint: 'drbackup drill run' writes JSON with --format json",
            ],
        ),
        (
            ("report", "--tar", "x"),  # the hidden --target is not suggested
            [
                "drbackup: error: no such option '--tar'. Did you mean '--all'?",
                "hint: see 'drbackup report --help'",
            ],
        ),
        (
            ("report", "--format", "xml"),
            [
                "drbackup: error: invalid value for '--format': 'xml' is not one of 'text', "
                "'json', 'markdown', 'prometheus', 'nagios', 'html'",
                "hint: see 'drbackup report --help'",
            ],
        ),
        (
            ("gc", "--grace", "soon"),
            [
                "drbackup: error: invalid value for '--grace': invalid duration 'soon' "
                "(use e.g. 24h, 90m, 7d)",
                "hint: see 'drbackup gc --help'",
            ],
        ),
        (
            ("nosuch",),
            ["drbackup: error: no such command 'nosuch'", "hint: see 'drbackup --help'"],
        ),
    ],
)
def test_usage_errors_are_one_line_with_a_hint_and_exit_2(run_cli, args, lines):
    result = run_cli(*args)
    assert (result.code, result.stdout, result.error_lines) == (2, "", lines)


def test_the_console_script_exits_2_on_a_usage_error(tmp_path):
    proc = subprocess.run(
        cli_argv("restore", "postgres", "--into", "postgresql://x/y"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.splitlines() == [
        "drbackup: error: missing argument 'TARGET'",
        "hint: see 'drbackup restore postgres --help'",
    ]
    assert "Traceback" not in proc.stderr and "Usage:" not in proc.stderr


def test_a_group_alone_still_shows_its_help(run_cli):
    result = run_cli("key")
    assert result.code == 2
    assert "Usage: drbackup key [OPTIONS] COMMAND [ARGS]..." in result.stderr
    assert "generate" in result.stderr and "list" in result.stderr
