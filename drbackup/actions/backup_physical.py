"""``backup postgres TARGET --physical``: a base backup, streamed into the repository.

The server sends the data directory and each tablespace as tar archives and then its
``backup_manifest`` (sources/postgres/basebackup.py); each is stored as one item of a backup
of kind ``postgres-physical`` as it arrives.  The backup is committed (its manifest written)
only once every WAL segment from its start to its end is in the repository's WAL archive:
a base backup without that WAL cannot be restored.  It records the start and stop LSN,
timeline and time, the system identifier and major version, so that a restore can choose it
by time or LSN without reading it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from drbackup.actions.backup_postgres import PgTarget
from drbackup.actions.progress import SILENT, Progress, Total, estimate_beside, previous_size
from drbackup.actions.runs import recorded_backup
from drbackup.errors import LockedError, SourceError
from drbackup.repository.manifest import Manifest
from drbackup.repository.wal import WalArchive, cluster_name
from drbackup.sources.postgres import physical
from drbackup.sources.postgres.basebackup import MANIFEST_CHECKSUMS, BaseBackupStream
from drbackup.sources.postgres.connection import connect
from drbackup.sources.postgres.wal import format_lsn, segment_name, segno_of, segno_of_end

if TYPE_CHECKING:
    from drbackup.actions.context import AppContext

KIND = "postgres-physical"
TAR_TYPE = "pg-base-tar"
MANIFEST_TYPE = "pg-backup-manifest"


def backup_physical(app: AppContext, name: str, *, progress: Progress = SILENT) -> Manifest:
    """Take a base backup of target ``name``; record the run in the catalog."""
    target = PgTarget.from_config(name, app.config.target(name))
    return recorded_backup(app, name, lambda: _backup(app, target, progress))


def _backup(app: AppContext, target: PgTarget, progress: Progress) -> Manifest:
    repo = app.repository(background_key=True)
    repo.keyring.require(write=True)
    wait = app.config.target(target.name).wal.backup_wait.total_seconds()
    with connect(target.dsn, target.password) as control:
        if not physical.take_physical_lock(control, target.name):
            raise LockedError(
                f"another physical backup of target {target.name} is running",
                hint="wait for it to finish; physical backups of one target never overlap",
            )
        facts = physical.server_facts(control)
        expected = _expected_size(repo, control, target.name, progress)
        label = f"drbackup {target.name} {started_label()}"
        with BaseBackupStream(target.dsn, target.password, label) as stream:
            archive = WalArchive(repo, target.name)
            cluster = _cluster_of(archive, facts, stream.system_identifier)
            with repo.new_backup(target.name, KIND) as writer:
                phase = progress.phase(f"backup {target.name}", "copied", expected, estimate=True)
                with phase as tick:
                    _store_archives(writer, stream, tick)
                stop_clock = physical.server_clock(control)
                next_xid = physical.next_xid(control)
                positions = stream.positions
                _wait_for_wal(archive, cluster, positions, facts.segment_size, wait)
                writer.recovery_point = stop_clock
                writer.meta.update(_meta(facts, stream, cluster, label, stop_clock))
                writer.meta["next_xid"] = str(next_xid)
                return writer.commit()


def _expected_size(repo, control, name: str, progress: Progress) -> Total:
    """What the base backup will weigh, for progress: the previous one's size, else the
    size of the server's databases."""
    if not progress.wants_total:
        return None
    on_disk = physical.cluster_size(control)
    return estimate_beside(lambda: previous_size(repo, name, KIND, TAR_TYPE), on_disk)


def started_label() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cluster_of(archive: WalArchive, facts, system_identifier: int) -> str:
    """The target's cluster; registers it for a target that has none, refuses another."""
    cluster = cluster_name(facts.major, system_identifier)
    current = archive.current_cluster()
    if current is None:
        identity = {
            "system_identifier": system_identifier,
            "major": facts.major,
            "wal_segment_size": facts.segment_size,
        }
        archive.register(identity, "backup")
    elif current != cluster:
        raise SourceError(
            f"the server of target {archive.target} is cluster {cluster}, but the target "
            f"archives cluster {current}",
            hint="after initdb or pg_upgrade, 'drbackup wal register "
            f"{archive.target}' registers the server; check the target's dsn otherwise",
        )
    return cluster


def _store_archives(writer, stream: BaseBackupStream, progress) -> None:
    for archive in stream.archives():
        if archive.is_manifest:
            writer.add_stream(archive.name, MANIFEST_TYPE, archive.blocks)
            continue
        # the server sends the tablespace list before any archive: complete by now
        spaces = {f"{t.oid}.tar": t for t in stream.positions.tablespaces if t.oid}
        space = spaces.get(archive.name)
        meta = {"tablespace": {"oid": space.oid, "location": space.location}} if space else {}
        writer.add_stream(archive.name, TAR_TYPE, archive.blocks, meta, progress)
    if not any(item.type == MANIFEST_TYPE for item in writer.items):
        raise SourceError("the server sent no backup_manifest")


def _wait_for_wal(archive: WalArchive, cluster: str, positions, segment_size: int, wait: float):
    """Poll the WAL archive until every segment from the start to the stop LSN is there.

    Raises SourceError naming the first missing segment after ``wait`` seconds.
    """
    timeline = positions.start_timeline
    first = segno_of(positions.start_lsn, segment_size)
    last = segno_of_end(positions.stop_lsn, segment_size)
    needed = [segment_name(timeline, n, segment_size) for n in range(first, last + 1)]
    deadline, delay = time.monotonic() + wait, 0.05
    while True:
        present = {s.name for s in archive.list_files(cluster, start=needed[0])}
        missing = [n for n in needed if n not in present]
        if not missing:
            return
        if time.monotonic() > deadline:
            raise SourceError(
                f"the WAL this base backup needs is not in the repository after {wait:g}s: "
                f"{missing[0]} (of {format_lsn(positions.start_lsn)}..{format_lsn(positions.stop_lsn)})",
                hint="configure archive_command = 'drbackup wal-push ...' on the server and "
                "check that it succeeds (pg_stat_archiver); docs/pitr.md",
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _meta(facts, stream: BaseBackupStream, cluster: str, label: str, stop_clock) -> dict:
    p = stream.positions
    return {
        "method": "base_backup",
        "label": label,
        "start_lsn": format_lsn(p.start_lsn),
        "stop_lsn": format_lsn(p.stop_lsn),
        "timeline": p.start_timeline,
        "stop_timeline": p.stop_timeline,
        "start_time": facts.clock.astimezone(UTC).isoformat(),
        "stop_time": stop_clock.astimezone(UTC).isoformat(),
        "system_identifier": str(stream.system_identifier),
        "major": facts.major,
        "cluster": cluster,
        "server_version": facts.version,
        "server_version_num": facts.version_num,
        "wal_segment_size": facts.segment_size,
        "superuser": facts.superuser,
        "data_checksums": facts.data_checksums,
        "from_standby": facts.in_recovery,
        "tablespaces": [
            {"oid": t.oid, "location": t.location} for t in p.tablespaces if t.oid is not None
        ],
        "manifest_checksums": MANIFEST_CHECKSUMS,
    }
