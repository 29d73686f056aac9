"""``pg_dump_options`` are read as pg_dump's getopt_long reads them: abbreviations, values as
the next word, short-option bundles.  Each bypass of the old name-only check is refused."""

from __future__ import annotations

import pytest

from drbackup.errors import ConfigError
from drbackup.sources.postgres.commands import pg_dump_argv
from drbackup.sources.postgres.dump_options import OPTIONS, find_problem


@pytest.mark.parametrize(
    ("options", "index", "problem"),
    [
        # abbreviations (pg_dump 15 reads --fil as --file; 17 knows --filter too)
        (["--fil=/tmp/x"], 0, "pg_dump option '--fil=/tmp/x' is ambiguous (--file, --filter)"),
        (["--form=plain"], 0, "pg_dump option '--form=plain' (--format) is set by drbackup"),
        (["--compr=9"], 0, "pg_dump option '--compr=9' (--compress) is set by drbackup"),
        (["--jo=4"], 0, "pg_dump option '--jo=4' (--jobs) is set by drbackup (use 'jobs')"),
        (["--snap=0000-1"], 0, "pg_dump option '--snap=0000-1' (--snapshot) is set by drbackup"),
        (["--no-sy"], 0, "pg_dump option '--no-sy' (--no-sync) is about the output file"),
        # the value as the next word
        (["--file", "/tmp/x"], 1, "pg_dump option '--file /tmp/x' is set by drbackup"),
        (["-v", "--form", "p"], 2, "pg_dump option '--form p' (--format) is set by drbackup"),
        (["--host", "elsewhere"], 1, "pg_dump option '--host elsewhere' is set by drbackup"),
        # short options, bundled with each other and with their value
        (["-Fp"], 0, "pg_dump option '-Fp' (--format) is set by drbackup (remove it)"),
        (["-f/tmp/x"], 0, "pg_dump option '-f/tmp/x' (--file) is set by drbackup"),
        (["-vf/tmp/x"], 0, "pg_dump option '-vf/tmp/x' (--file) is set by drbackup"),
        (["-xOZ9"], 0, "pg_dump option '-xOZ9' (--compress) is set by drbackup"),
        (["-f", "/tmp/x"], 0, "pg_dump option '-f' (--file) is set by drbackup"),
        (["-d", "other"], 0, "pg_dump option '-d' (--dbname) is set by drbackup (use 'dsn')"),
        # connection, selection, partial dumps, not dump options at all
        (["--rol=admin"], 0, "pg_dump option '--rol=admin' (--role) is a connection option"),
        (["-tusers"], 0, "pg_dump option '-tusers' (--table) is set by drbackup"),
        (["--filter=f.txt"], 0, "pg_dump option '--filter=f.txt' is a selection drbackup"),
        (["-s"], 0, "pg_dump option '-s' (--schema-only) is a partial dump"),
        (["--vers"], 0, "pg_dump option '--vers' (--version) is not a dump option"),
        (["-?"], 0, "pg_dump option '-?' (--help) is not a dump option"),
        (["--binary-upgrade"], 0, "pg_dump option '--binary-upgrade' is for upgrade utilities"),
        # malformed: pg_dump would read these differently from what was meant
        (["--lock-wait-timeout"], 0, "pg_dump option '--lock-wait-timeout' needs a value"),
        (["-v", "-E"], 1, "pg_dump option '-E' needs a value"),
        (["--inserts=yes"], 0, "pg_dump option '--inserts=yes' takes no value"),
        (["--e"], 0, "pg_dump option '--e' is ambiguous (--exclude-schema, --exclude-table,"),
        (["--frobnicate"], 0, "pg_dump option '--frobnicate' is not one drbackup knows"),
        (["-K"], 0, "pg_dump option '-K' (in '-K') is not one drbackup knows"),
        (["-v", "/tmp/x"], 1, "pg_dump option '/tmp/x' must start with '-'"),
        (["--", "-f"], 0, "pg_dump option '--' ends pg_dump's options"),
    ],
)
def test_refused_options_name_the_word_and_what_pg_dump_reads(options, index, problem):
    found = find_problem(options)
    assert found is not None and found[0] == index
    assert found[1].startswith(problem), found[1]


@pytest.mark.parametrize(
    "options",
    [
        ["-v"],
        ["--lock-wait-timeout=5s"],
        ["--lock-wait-timeout", "5s"],  # the value as the next word
        ["--lock-wait-timeout", "-f/tmp/x"],  # that word is the value, as pg_dump reads it
        ["--no-comm", "--no-publ", "--no-tablesp"],  # unambiguous abbreviations of allowed ones
        ["-vxO", "-EUTF8", "-E", "LATIN1"],
        ["--large-objects", "--no-acl", "--attribute-inserts"],  # aliases
        ["--exclude-table-data=audit_log", "--exclude-extension", "postgis"],
        ["--no-toast-compression", "--quote-all-identifiers", "--serializable-deferrable"],
        [],
    ],
)
def test_allowed_options_pass(options):
    assert find_problem(options) is None


def test_every_long_name_is_unique_and_short_letters_too():
    names = [n for o in OPTIONS for n in o.names]
    letters = [o.short for o in OPTIONS if o.short]
    assert len(names) == len(set(names)) and len(letters) == len(set(letters))


def test_pg_dump_argv_refuses_them_too(tmp_path):
    with pytest.raises(ConfigError) as info:
        pg_dump_argv(tmp_path, "dbname=app", snapshot=None, extra=["--form=plain"])
    assert info.value.message == (
        "pg_dump option '--form=plain' (--format) is set by drbackup (remove it)"
    )
    argv = pg_dump_argv(tmp_path, "dbname=app", snapshot=None, extra=["--no-comm"])
    assert argv[-2:] == ["--no-comm", "--dbname=dbname=app"]
