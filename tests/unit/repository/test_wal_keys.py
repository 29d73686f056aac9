"""The WAL archive's keys: one per file, sortable by timeline and position, parsed back."""

from __future__ import annotations

import pytest

from drbackup.errors import UsageError
from drbackup.repository.wal import cluster_name, parse_cluster_name, parse_wal_key, wal_file_key

C = cluster_name(15, 7301234567890123456)
TAG = "0123456789abcdef"


def test_cluster_names_carry_major_and_system_identifier():
    assert C == "pg15-7301234567890123456"
    assert parse_cluster_name(C) == (15, 7301234567890123456)
    with pytest.raises(UsageError):
        parse_cluster_name("15-1")


@pytest.mark.parametrize(
    ("name", "upto", "key"),
    [
        (
            "000000010000000200000003",
            None,
            f"wal/app/{C}/0000000100000002/000000010000000200000003-{TAG}",
        ),
        (
            "000000010000000200000003.partial",
            0x1000,
            f"wal/app/{C}/0000000100000002/000000010000000200000003.partial.00001000-{TAG}",
        ),
        (
            "000000010000000200000003.00000028.backup",
            None,
            f"wal/app/{C}/0000000100000002/000000010000000200000003.00000028.backup-{TAG}",
        ),
        ("00000002.history", None, f"wal/app/{C}/history/00000002.history-{TAG}"),
    ],
)
def test_keys_round_trip(name, upto, key):
    assert wal_file_key("app", C, name, TAG, upto) == key
    stored = parse_wal_key(key)
    assert (stored.name, stored.upto, stored.tag) == (name, upto, TAG)


def test_keys_sort_by_timeline_then_position():
    names = ["000000020000000000000001", "000000010000000100000000", "000000010000000000000FFF"]
    keys = sorted(wal_file_key("app", C, n, TAG) for n in names)
    assert [parse_wal_key(k).name for k in keys] == sorted(names)


def test_bad_names_and_misplaced_lengths_are_refused():
    with pytest.raises(UsageError, match="not a WAL file name"):
        wal_file_key("app", C, "../x", TAG)
    with pytest.raises(UsageError, match="needs its length"):
        wal_file_key("app", C, "000000010000000200000003.partial", TAG)
    with pytest.raises(UsageError, match="only partial"):
        wal_file_key("app", C, "000000010000000200000003", TAG, 5)
    assert parse_wal_key(f"wal/app/{C}/0000000100000002/000000010000000200000003") is None
