"""The scratch of a physical drill: a marked, locked directory holding the restored cluster.

``<base_dir>/<drill id>/`` (the same place, marker file and lock as the ephemeral cluster of
a logical drill, drill/scratch.py) holds ``data/`` (the restored data directory: the cluster,
no initdb), ``data.tablespaces/`` when the backup has tablespaces, and ``run-*/`` (the
server's socket, log and WAL spool).  The server is tied to the drill process
(``pdeathsig``), so a drill killed with SIGKILL leaves a stopped server's files, marked and
unlocked, which the next drill (or ``drill cleanup``) stops and removes like any leftover
cluster: :func:`drbackup.drill.scratch.remove_stale_clusters` stops every server under the
directory first.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from drbackup.drill.scratch import (
    MARKER_FILE,
    _flock,
    _remove_cluster_dir,
    _write_marker,
    is_drill_id,
    scratch_marker,
)
from drbackup.errors import SourceError, UsageError


@dataclass
class PhysicalScratch:
    """One physical drill's directory; :meth:`prepare` makes it, :meth:`finish` removes it."""

    base_dir: Path
    drill_id: str
    keep: bool = False
    restore: object | None = None  # the PhysicalRestore living here, once there is one
    _lock: object | None = field(default=None, repr=False)
    _made: bool = field(default=False, repr=False)

    @property
    def directory(self) -> Path:
        return self.base_dir / self.drill_id

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def prepare(self) -> Path:
        """Lock, make and mark the directory; returns it.  SourceError if it exists."""
        if not is_drill_id(self.drill_id):
            raise UsageError(f"invalid drill id {self.drill_id!r}")
        if not self.base_dir.exists():
            self.base_dir.mkdir(parents=True)
            self.base_dir.chmod(0o755)  # the server's user must traverse it when we are root
        self._lock = _flock(self.base_dir / f"{self.drill_id}.lock", blocking=True)
        try:
            self.directory.mkdir()
        except OSError as exc:
            raise SourceError(f"cannot make scratch directory {self.directory}: {exc}") from None
        self.directory.chmod(0o755)
        self._made = True
        _write_marker(self.directory / MARKER_FILE, scratch_marker(self.drill_id, self.drill_id))
        return self.directory

    def finish(self) -> None:
        """Stop the server and remove the directory (or mark it kept), then unlock."""
        try:
            server = getattr(self.restore, "server", None)
            if self.keep and server is not None and server.is_running:
                (self.base_dir / f"{self.drill_id}.kept").touch()
            elif self._made:
                if self.restore is not None:
                    self.restore.stop()
                if self.directory.exists():
                    _remove_cluster_dir(self.directory)
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None
            if not self.keep:
                with contextlib.suppress(OSError):  # already gone: nothing to unlock
                    (self.base_dir / f"{self.drill_id}.lock").unlink()
