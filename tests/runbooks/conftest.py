"""Fixtures of the runbook tests: a terminal's environment, the release artefacts, and the
report of what each runbook ran and which of its blocks it did not run, and why."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runbooks.markdown import ROOT
from tests.runbooks.runner import NOT_RUN, RUN, Shell

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CHECKOUT_BIN = str(Path(sys.executable).parent)  # the checkout's venv: its drbackup
# What a terminal on this machine has besides PATH and HOME: the locale, the package
# index settings (pip reads them), proxies.  Nothing of drbackup's or AWS's.
_PASSED = ("LANG", "LC_ALL", "TZ", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")  # fmt: skip


def terminal_env(home: Path, *, path: str = f"{CHECKOUT_BIN}:{SYSTEM_PATH}", **extra: str):
    """A fresh login's environment: ``PATH``, ``HOME`` (a new, empty one: no catalog, no
    config, no ``~/.aws``), a UTF-8 locale, unbuffered Python output (a terminal's order of
    stdout and stderr), and no AWS instance metadata lookups on a machine that has none."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k in _PASSED or k.startswith("PIP_")}
    env.setdefault("LANG", "C.UTF-8")
    env.update(
        PATH=path,
        HOME=str(home),
        PYTHONUNBUFFERED="1",
        AWS_EC2_METADATA_DISABLED="true",
        **extra,
    )
    return env


@pytest.fixture
def shell_factory(tmp_path):
    """``shell_factory(cwd, **env overrides)``: a :class:`Shell` with :func:`terminal_env`."""

    def make(cwd: Path, **env: str) -> Shell:
        state = tmp_path / "shell-state"
        state.mkdir(exist_ok=True)
        return Shell(terminal_env(tmp_path / "home", **env), Path(cwd), state)

    return make


@pytest.fixture(scope="session")
def release_dist(tmp_path_factory) -> Path:
    """The release artefacts as ``scripts/release`` builds them (the wheel, the hashed
    ``requirements.lock``, ``SHA256SUMS``), in a directory of their own."""
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "release"), "--build-only"], cwd=ROOT,
        env={**os.environ, "DIST": str(dist)}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"scripts/release exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return dist


def pytest_terminal_summary(terminalreporter) -> None:
    if not RUN and not NOT_RUN:
        return
    write = terminalreporter.write_line
    terminalreporter.section("runbooks")
    for name, count in RUN.items():
        write(f"runbook {name}: {count} commands run")
    for where, (name, command, reason) in NOT_RUN.items():
        write(f"not run: {where} (runbook {name}) `{command}`: {reason}")
