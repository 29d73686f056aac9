"""``python -m drbackup``: the same as the ``drbackup`` command (used to start background
processes with the interpreter that runs this one)."""

from drbackup.cli.main import run

run()
