"""Progress (issue 20 item 5): without a terminal each phase of a backup, restore or verify
prints one line on stderr when it ends (bytes, time, rate); stdout says what it said
before; --quiet prints nothing and --json only its document.  On a terminal a bar shows
the bytes against the total."""

from __future__ import annotations

import re
import uuid

import psycopg
import pytest

from drbackup.units import human_size
from tests.e2e.test_minio_cli import setup  # noqa: F401 - the bucket fixture
from tests.fixtures.terminal import on_a_terminal

SIZE = r"\d+(\.\d)? (B|KiB|MiB|GiB)"
RATE = rf"\({SIZE}/s\)"


def phase_line(label: str, verb: str, size: str = SIZE) -> re.Pattern:
    """``backup app: dumped 1.2 MiB in 0.3 s (4.0 MiB/s)``; ``size`` exact when given."""
    return re.compile(rf"{re.escape(label)}: {verb} {size} in \d+\.\d s {RATE}")


def screens(terminal: str) -> list[str]:
    """The lines a terminal showed, each redraw apart (after a carriage return)."""
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", terminal)
    return [s for s in re.split(r"[\r\n]", plain) if s.strip()]


@pytest.fixture
def table(pg_db):
    pg_db.execute(
        "CREATE TABLE t (n integer PRIMARY KEY, s text);"
        "INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 20000) i"
    )
    return pg_db


def test_a_backup_restore_and_verify_print_a_line_per_phase_on_stderr(
    local_repo_config, table, run_cli
):
    made = run_cli("backup", "postgres", "app")
    assert made.code == 0, made.stderr
    assert re.fullmatch(r"backup app/\S+ complete: 1 database\(s\), .*\n", made.stdout)
    backup_id = made.stdout.split()[1].split("/")[1].rstrip(":")
    shown = run_cli("show", backup_id, "--json").json()
    dump_size = next(i["size"] for i in shown["items"] if i["type"] == "pg_dump")
    (line,) = made.error_lines
    assert phase_line("backup app", "dumped", re.escape(human_size(dump_size))).fullmatch(line)

    into = table.cluster.dsn(f"e2e_progress_{uuid.uuid4().hex[:10]}")
    try:
        restored = run_cli("restore", "postgres", "app", "--into", into, "--create")
        assert restored.code == 0, restored.stderr
        assert restored.stdout.startswith("using ") and "\nrestored " in restored.stdout
        (line,) = restored.error_lines  # post-data's time is in the summary, on stdout
        assert phase_line("restore app", "read", re.escape(human_size(dump_size))).fullmatch(line)
        with psycopg.connect(into) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 20000
    finally:
        table.cluster.drop_database(psycopg.conninfo.conninfo_to_dict(into)["dbname"])

    verified = run_cli("verify", backup_id)
    assert verified.code == 0 and verified.stdout.startswith(f"backup app/{backup_id} ok: ")
    (line,) = verified.error_lines
    size = re.escape(human_size(shown["size"]))
    assert phase_line(f"verify app/{backup_id}", "read", size).fullmatch(line)


def test_quiet_and_json_print_no_progress(local_repo_config, table, run_cli):
    quiet = run_cli("backup", "postgres", "app", "--quiet")
    assert (quiet.code, quiet.stdout, quiet.stderr) == (0, "", "")
    as_json = run_cli("backup", "postgres", "app", "--json")
    assert (as_json.code, as_json.stderr) == (0, "")
    assert as_json.json()["target"] == "app"
    verified = run_cli("verify", as_json.json()["backup_id"], "--json")
    assert (verified.code, verified.stderr, verified.json()["ok"]) == (0, "", True)


def test_several_targets_print_a_line_each(local_repo_config, table, run_cli):
    local_repo_config.set_target("other", table.dsn)
    both = run_cli("backup", "postgres", "app", "other")
    assert both.code == 0, both.stderr
    assert sorted(line.split(":")[0] for line in both.error_lines) == [
        "backup app",
        "backup other",
    ]
    assert all(
        phase_line(line.split(":")[0], "dumped").fullmatch(line) for line in both.error_lines
    )


def test_on_a_terminal_a_restore_draws_its_bytes_against_the_dump_size(
    local_repo_config, table, run_cli
):
    made = run_cli("backup", "postgres", "app", "--json").json()
    dump_size = next(i["size"] for i in made["items"] if i["type"] == "pg_dump")
    into = table.cluster.dsn(f"e2e_progress_{uuid.uuid4().hex[:10]}")
    try:
        code, out, terminal = on_a_terminal(
            "restore", "postgres", "app", "--into", into, "--create"
        )
        assert code == 0, terminal
        assert out.startswith("using ")
        total = human_size(dump_size)
        assert f"{total} of {total}, " in terminal and "100%" in terminal
        assert "/s; building indexes and constraints (post-data)" in terminal  # the primary key
        # the bar ends as the line a log has: the real size, no note
        assert phase_line("restore app", "read", re.escape(total)).fullmatch(screens(terminal)[-1])
    finally:
        table.cluster.drop_database(psycopg.conninfo.conninfo_to_dict(into)["dbname"])
    code, out, terminal = on_a_terminal("backup", "postgres", "app")
    assert code == 0, terminal
    assert f" of ~{total}, " in terminal  # the previous backup's size: an estimate


def test_a_snapshot_and_a_bucket_restore_print_a_line_each(setup, run_cli):  # noqa: F811
    objects = 5 + 4 + 400  # bucket photos (see the setup fixture)
    snap = run_cli("snapshot", "minio", "files")
    assert snap.code == 0 and snap.stdout.startswith("snapshot files/"), snap.stderr
    (line,) = snap.error_lines
    assert phase_line("snapshot files", "read", f"{objects} B").fullmatch(line)

    done = run_cli("restore", "minio", "files", "--into-bucket", "restored")
    assert done.code == 0 and done.stdout.startswith("using "), done.stderr
    (line,) = done.error_lines
    assert phase_line("restore files", "restored", f"{objects} B").fullmatch(line)

    code, out, terminal = on_a_terminal("restore", "minio", "files", "--into-bucket", "again")
    assert code == 0 and out.startswith("using "), terminal
    assert f" of {objects} B, " in terminal  # the bar, then the line in its place
    assert phase_line("restore files", "restored", f"{objects} B").fullmatch(screens(terminal)[-1])

    # verify reads the snapshot's index, then every object it names
    snapshot_id = snap.stdout.split()[1].split("/")[1]
    index_size = run_cli("show", snapshot_id, "--json").json()["size"]
    verified = run_cli("verify", snapshot_id)
    assert verified.code == 0, verified.stderr
    (line,) = verified.error_lines
    read = re.escape(human_size(index_size + objects))
    assert phase_line(f"verify files/{snapshot_id}", "read", read).fullmatch(line)


def test_a_spooled_restore_notes_pg_restore_s_phases_beside_its_bar(
    local_repo_config, table, run_cli
):
    made = run_cli("backup", "postgres", "app", "--json").json()
    dump_size = next(i["size"] for i in made["items"] if i["type"] == "pg_dump")
    dsn = table.cluster.dsn
    logged, shown = (dsn(f"e2e_progress_{uuid.uuid4().hex[:10]}") for _ in range(2))
    try:
        restored = run_cli("restore", "postgres", "app", "--into", logged, "--create", "-j", "2")
        assert restored.code == 0, restored.stderr
        (line,) = restored.error_lines
        assert phase_line("restore app", "read", re.escape(human_size(dump_size))).fullmatch(line)
        args = ("restore", "postgres", "app", "--into", shown, "--create", "-j", "2")
        code, out, terminal = on_a_terminal(*args)
        assert code == 0 and out.startswith("using "), terminal
        for note in (
            "pg_restore --jobs 2: creating the schema (pre-data)",
            "pg_restore --jobs 2: loading data",
            "building indexes and constraints (post-data)",
        ):
            assert f"/s; {note}" in terminal, note
    finally:
        for into in (logged, shown):
            table.cluster.drop_database(psycopg.conninfo.conninfo_to_dict(into)["dbname"])


def test_at_80_columns_no_line_drawn_is_wider_than_79(local_repo_config, table, run_cli):
    made = run_cli("backup", "postgres", "app", "--json").json()
    dump_size = human_size(next(i["size"] for i in made["items"] if i["type"] == "pg_dump"))
    into = table.cluster.dsn(f"e2e_progress_{uuid.uuid4().hex[:10]}")
    try:
        code, out, terminal = on_a_terminal(
            "restore", "postgres", "app", "--into", into, "--create", columns=80
        )
        assert code == 0, terminal
        drawn = screens(terminal)
        assert max(len(s) for s in drawn) <= 79, max(drawn, key=len)
        # beside the note, the rate and the percentage gave way
        noted = f"restore app  {dump_size} of {dump_size}; building indexes and constraints"
        assert any(s.startswith(noted) for s in drawn), drawn
        assert phase_line("restore app", "read", re.escape(dump_size)).fullmatch(drawn[-1])
    finally:
        table.cluster.drop_database(psycopg.conninfo.conninfo_to_dict(into)["dbname"])
    code, out, terminal = on_a_terminal("verify", made["backup_id"], columns=80)
    assert code == 0 and out.startswith(f"backup app/{made['backup_id']} ok: "), terminal
    drawn = screens(terminal)
    assert max(len(s) for s in drawn) <= 79, max(drawn, key=len)
    assert phase_line(f"verify app/{made['backup_id']}", "read").fullmatch(drawn[-1])
