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
    _remove_cluster_dir,
    claim_scratch_directory,
)


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
        self._lock = claim_scratch_directory(self.base_dir, self.drill_id, "scratch")
        self._made = True
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
