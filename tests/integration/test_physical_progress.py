"""Progress of the physical path (issue 20 item 5): without a terminal a base backup and a
restore into a directory each print one line on stderr with the archive bytes and rate."""

from __future__ import annotations

import json
import re

from drbackup.units import human_size


def line_of(label: str, verb: str, size: int) -> re.Pattern:
    rate = r"\(\d+(\.\d)? (B|KiB|MiB|GiB)/s\)"
    return re.compile(
        rf"{re.escape(label)}: {verb} {re.escape(human_size(size))} in \d+\.\d s {rate}"
    )


def test_a_base_backup_and_its_restore_print_a_line_each(wal_home, archiving_cluster):
    cluster = archiving_cluster(wal_home)
    cluster.execute("CREATE TABLE t AS SELECT generate_series(1, 50000) AS i")
    made = wal_home.run("backup", "postgres", "app", "--physical", as_server_user=False)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("backup app/")
    backup_id = made.stdout.split()[1].split("/")[1]
    shown = wal_home.run("show", backup_id, "--json", as_server_user=False)
    tars = sum(i["size"] for i in json.loads(shown.stdout)["items"] if i["type"] == "pg-base-tar")
    assert made.stderr.splitlines() == [made.stderr.splitlines()[0]]
    assert line_of("backup app", "copied", tars).fullmatch(made.stderr.splitlines()[0])

    into = wal_home.root / "restored"
    restored = wal_home.run(
        "restore", "postgres", "app", "--into-dir", str(into), as_server_user=False
    )
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith("using ")
    (line,) = restored.stderr.splitlines()
    assert line_of("restore app", "extracted", tars).fullmatch(line)

    # verify reads every item, then the archives once more, file by file
    size = json.loads(shown.stdout)["size"]
    verified = wal_home.run("verify", backup_id, as_server_user=False)
    assert verified.returncode == 0, verified.stderr
    (line,) = verified.stderr.splitlines()
    assert line_of(f"verify app/{backup_id}", "read", size + tars).fullmatch(line)

    quiet = wal_home.run("backup", "postgres", "app", "--physical", "-q", as_server_user=False)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
