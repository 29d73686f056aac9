"""Every command a CLI module defines is reachable through the lazy command table."""

from __future__ import annotations

import importlib
import pkgutil

import drbackup.cli
from drbackup.cli.main import LAZY_COMMANDS, load_command, main


def test_every_module_command_is_registered():
    defined = set()
    for info in pkgutil.iter_modules(drbackup.cli.__path__):
        module = importlib.import_module(f"drbackup.cli.{info.name}")
        defined |= {command.name for command in getattr(module, "COMMANDS", [])}
    assert defined == set(LAZY_COMMANDS)
    for name in LAZY_COMMANDS:
        assert load_command(name) is not None, name


def test_subcommands_attached_by_other_modules_are_loaded():
    assert {"postgres", "minio"} <= set(load_command("restore").commands)
    assert {"postgres", "all"} <= set(load_command("backup").commands)


def test_help_lists_every_command_and_the_exit_codes(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in LAZY_COMMANDS:
        assert f"  {name} " in out, name
    assert "Exit codes:" in out and "130  interrupted" in out


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["frobnicate"]) == 2
    # issue 20: click's errors in drbackup's one-line style (was click's "No such command")
    assert capsys.readouterr().err.splitlines() == [
        "drbackup: error: no such command 'frobnicate'",
        "hint: see 'drbackup --help'",
    ]


def test_an_invalid_restore_bucket_name_is_a_usage_error(capsys):
    """Checked before any repository or server is touched (minio's client would raise a
    bare ValueError deep inside the restore)."""
    for name in ("r4", "Bad_Name"):
        assert main(["restore", "minio", "media", "--into-bucket", name]) == 2
        assert f"invalid bucket name '{name}'" in capsys.readouterr().err
