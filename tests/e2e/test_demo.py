"""The README quick start's command: `drbackup demo` runs the whole cycle on embedded defaults."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DRBACKUP = Path(sys.executable).with_name("drbackup")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DRBACKUP), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_demo_backs_up_restores_and_drills(tmp_path):
    demo = run("demo", "--dir", str(tmp_path / "demo"), cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    out = demo.stdout
    assert "4. created an encrypted repository" in out
    assert re.search(
        r"8\. drill \S+: restored into a scratch database on a private cluster and checked it, "
        r"(\d+) of \1 checks passed",
        out,
    ), out
    assert "fail " not in out

    config = tmp_path / "demo" / "drbackup.yaml"
    listing = run("-c", str(config), "list", "--json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert '"target": "demo"' in listing.stdout

    report = run("-c", str(config), "report", cwd=tmp_path)
    assert report.returncode == 0, report.stdout + report.stderr  # nagios OK: drill passed

    # A second run reuses the repository (its data and key stay in the demo directory).
    again = run("demo", "--dir", str(tmp_path / "demo"), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "4. using the existing repository" in again.stdout
