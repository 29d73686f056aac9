"""``drbackup mark NAME`` (a named restore point) and ``drbackup wal register TARGET``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from drbackup.actions.backup_postgres import PgTarget
from drbackup.errors import SourceError
from drbackup.repository.wal import Registration, WalArchive, cluster_name
from drbackup.sources.postgres.basebackup import identify_system
from drbackup.sources.postgres.connection import connect
from drbackup.sources.postgres.physical import RestorePoint, create_restore_point, server_facts
from drbackup.sources.postgres.wal import format_lsn

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext


@dataclass(frozen=True)
class Mark:
    point: RestorePoint
    cluster: str
    key: str  # where the repository records it


def mark_restore_point(app: AppContext, target: str, name: str, *, switch: bool = True) -> Mark:
    """Create restore point ``name`` on the target's server and record it in the repository,
    so that ``restore --restore-point NAME`` knows which base backup comes before it.

    ``switch``: complete the current WAL segment, so that archive_command archives the point
    now rather than when the segment fills.  Raises SourceError if the server refuses.
    """
    cfg = PgTarget.from_config(target, app.config.target(target))
    if not name or len(name) >= 64:
        raise SourceError("a restore point name has 1 to 63 characters")
    archive = WalArchive(app.repository(), target)
    cluster = archive.current_cluster()
    if cluster is None:
        raise SourceError(
            f"target {target} archives no WAL yet",
            hint="configure archive_command (docs/pitr.md) or take a physical backup first",
        )
    with connect(cfg.dsn, cfg.password) as conn:
        point = create_restore_point(conn, name, switch=switch)
    doc = {
        "name": name,
        "lsn": format_lsn(point.lsn),
        "time": point.time.isoformat(),
        "timeline": int(point.segment[:8], 16),
        "segment": point.segment,
    }
    return Mark(point, cluster, archive.put_mark(cluster, doc))


def register_cluster(app: AppContext, target: str) -> Registration:
    """Register the cluster now serving the target's dsn as the one it archives (after
    initdb or pg_upgrade re-created it).  Its WAL goes to its own directory; the old
    cluster's WAL stays for the old base backups."""
    cfg = PgTarget.from_config(target, app.config.target(target))
    with connect(cfg.dsn, cfg.password) as conn:
        facts = server_facts(conn)
    system_identifier = identify_system(cfg.dsn, cfg.password)
    archive = WalArchive(app.repository(), target)
    name = cluster_name(facts.major, system_identifier)
    if archive.current_cluster() == name:
        return archive.registrations()[-1]
    identity = {
        "system_identifier": system_identifier,
        "major": facts.major,
        "wal_segment_size": facts.segment_size,
    }
    return archive.register(identity, "register")
