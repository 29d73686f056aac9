"""Running the drbackup image with podman, as scripts/image does (its containers.conf: runc,
cgroupfs, host network), for the image tests and for other suites that run drbackup inside
the image (a bind-mounted workspace, any command)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# A tag of this checkout's own: checkouts building at once on one machine never share one.
_CHECKOUT = hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]
IMAGE = os.environ.get("DRBACKUP_IMAGE", f"localhost/drbackup:test-{_CHECKOUT}")
IMAGE_UID = 10001  # the image's drbackup user (Dockerfile)
ENV = {**os.environ, "CONTAINERS_CONF": str(ROOT / "deploy" / "podman" / "containers.conf")}


def podman(*args: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """``podman ARGS`` with the project's containers.conf; output captured as text."""
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, env=ENV,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if check and proc.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def build_image() -> str:
    """``scripts/image build`` (the base image is made once per machine, layers are cached)."""
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run 'scripts/image setup' (as root)")
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "image"), "build"], capture_output=True, text=True,
        timeout=1800, stdin=subprocess.DEVNULL, env={**ENV, "IMAGE": IMAGE},
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"scripts/image build failed:\n{proc.stdout}\n{proc.stderr}")
    return IMAGE


@dataclass
class Workspace:
    """A host directory the container sees: ``files`` -> container paths, owned by the
    image's user (the container runs as uid 10001, never root)."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="drbackup-image-")))
    mounts: dict[str, str] = field(default_factory=dict)  # host path -> container path[:ro]

    def __post_init__(self) -> None:
        self.root.chmod(0o755)

    def directory(self, name: str, mount_at: str, *, read_only: bool = False) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        self.mounts[str(path)] = mount_at + (":ro" if read_only else "")
        return path

    def chown(self) -> None:
        for path in [self.root, *self.root.rglob("*")]:
            os.chown(path, IMAGE_UID, IMAGE_UID)

    def volume_args(self) -> list[str]:
        self.chown()
        return [arg for host, inside in self.mounts.items() for arg in ("-v", f"{host}:{inside}")]

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def run_in_image(
    workspace: Workspace, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``drbackup ARGS`` in a throwaway container on the host's network."""
    env_args = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
    return podman(
        "run", "--rm", "--network", "host", *workspace.volume_args(), *env_args, IMAGE, *args,
        timeout=timeout,
    )  # fmt: skip
