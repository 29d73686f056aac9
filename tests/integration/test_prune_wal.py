"""``prune`` of base backups and the WAL archive: the WAL from the oldest base backup left
stays, across timelines and while the server keeps archiving; dumps and base backups are
kept by the policy each on their own."""

from __future__ import annotations

import threading

import yaml

from drbackup.actions.backup_physical import backup_physical
from drbackup.actions.backup_postgres import backup_target
from drbackup.actions.prune import prune_targets
from drbackup.actions.wal_check import analyze_archive
from drbackup.repository.wal import WalArchive
from drbackup.sources.postgres.wal import parse_lsn, parse_wal_file_name
from tests.fixtures.walarchive import switch_wal, wait_archived


def _keep_last(home, n: int) -> None:
    doc = yaml.safe_load(home.config_path.read_text())
    doc["postgres"]["app"]["retention"] = {"keep_last": n, "leftover_grace": "1h"}
    home.config_path.write_text(yaml.safe_dump(doc))


def _files(home) -> list[str]:
    """Segments and backup history files (not timeline history files)."""
    archive = WalArchive(home.app().repository(), "app")
    return [s.name for s in archive.list_files(archive.current_cluster()) if not s.is_history]


def test_prune_keeps_the_wal_of_the_oldest_base_backup_left(wal_home, archiving_cluster):
    cluster = archiving_cluster(wal_home)
    cluster.execute("CREATE TABLE t (i int)")
    backups = []
    for _ in range(3):
        cluster.execute("INSERT INTO t SELECT generate_series(1, 1000)")
        wait_archived(cluster, switch_wal(cluster))
        backups.append(backup_physical(wal_home.app(), "app"))
    dump = backup_target(wal_home.app(), "app")  # a dump, kept by its own keep_last
    wait_archived(cluster, switch_wal(cluster))
    _keep_last(wal_home, 2)
    before = _files(wal_home)

    dry = prune_targets(wal_home.app(), ["app"], dry_run=True).targets[0]
    assert [b.backup_id for b in dry.remove] == [backups[0].backup_id]
    assert dry.wal.removed > 0 and _files(wal_home) == before  # nothing deleted

    stop = threading.Event()

    def keep_archiving():  # prune runs next to a server that goes on archiving
        while not stop.is_set():
            cluster.execute("INSERT INTO t VALUES (0)")
            switch_wal(cluster)

    writer = threading.Thread(target=keep_archiving)
    writer.start()
    try:
        result = prune_targets(wal_home.app(), ["app"]).targets[0]
    finally:
        stop.set()
        writer.join()
    wait_archived(cluster, switch_wal(cluster))
    assert result.removed == [backups[0].backup_id]
    assert dump.backup_id in {b.backup_id for b, _reasons in result.keep}
    size = backups[1].meta["wal_segment_size"]
    first_kept = parse_lsn(backups[1].meta["start_lsn"]) // size
    after = _files(wal_home)
    assert min(parse_wal_file_name(n).segno(size) for n in after) == first_kept
    assert any(n.endswith(".backup") for n in before)  # backup history files go too
    assert result.wal.removed == len(
        [n for n in before if parse_wal_file_name(n).segno(size) < first_kept]
    )
    status = analyze_archive(wal_home.app().repository(), "app")
    assert status.gaps == [] and status.breaks == [] and status.restorable
    assert status.base_backups == 2
