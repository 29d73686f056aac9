"""The backup_manifest checks and the streaming tar checks/extraction, on synthetic backups."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from drbackup.errors import IntegrityError, RestoreError
from drbackup.sources.postgres.basebackup_files import (
    VerifyState,
    extract_archive,
    member_path,
    parse_backup_manifest,
)


def _manifest(files: dict[str, bytes], *, tamper: bool = False) -> bytes:
    entries = [
        {
            "Path": p,
            "Size": len(d),
            "Last-Modified": "x",
            "Checksum-Algorithm": "SHA256",
            "Checksum": hashlib.sha256(d).hexdigest(),
        }
        for p, d in files.items()
    ]
    body = json.dumps(
        {
            "PostgreSQL-Backup-Manifest-Version": 1,
            "Files": entries,
            "WAL-Ranges": [{"Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100"}],
        }
    )
    head = body[:-1] + ",\n"
    checksum = hashlib.sha256(head.encode()).hexdigest()
    if tamper:
        head = head.replace("0/2000100", "0/2000200")
    return (head + f'"Manifest-Checksum": "{checksum}"}}\n').encode()


def _tar(files: dict[str, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def test_the_manifest_checksum_is_checked():
    parsed = parse_backup_manifest(_manifest({"PG_VERSION": b"15\n"}), "b")
    assert parsed.wal_ranges == [(1, 0x2000028, 0x2000100)]
    with pytest.raises(IntegrityError, match="does not match its Manifest-Checksum"):
        parse_backup_manifest(_manifest({"PG_VERSION": b"15\n"}, tamper=True), "b")


def test_every_file_is_checked_and_every_difference_named():
    listed = {
        "PG_VERSION": b"15\n",
        "base/1/1": b"a" * 100,
        "global/x": b"y",
        "pg_tblspc/16384/PG_15/1/2": b"t",
    }
    state = VerifyState(parse_backup_manifest(_manifest(listed), "b"))
    state.check_archive(
        "base.tar",
        _tar(
            {
                "PG_VERSION": b"15\n",
                "base/1/1": b"b" * 100,
                "extra": b"?",
                "backup_label": b"",
                "postgresql.auto.conf": b"",
            }
        ),
    )
    state.check_archive("16384.tar", _tar({"PG_15/1/2": b"tt"}))
    assert state.finish() == [
        "base/1/1: checksum mismatch (SHA256)",
        "extra: in the backup but not in its manifest",
        "backup_label: in the backup but not in its manifest",
        "pg_tblspc/16384/PG_15/1/2: 2 bytes, the manifest says 1",
        "global/x: in the manifest but not in the backup",
    ]
    assert member_path("16384.tar", "./PG_15/1") == "pg_tblspc/16384/PG_15/1"


def test_extraction_refuses_members_outside_the_directory(tmp_path):
    with pytest.raises(RestoreError, match="points outside the data directory"):
        extract_archive("base.tar", _tar({"../evil": b"x"}), tmp_path)
    done = extract_archive("base.tar", _tar({"base/1/1": b"abc"}), tmp_path / "d")
    assert (tmp_path / "d" / "base/1/1").read_bytes() == b"abc" and done.files == 1
    assert oct((tmp_path / "d" / "base/1/1").stat().st_mode & 0o777) == "0o600"


def test_crc32c_checksums_are_checked_in_the_servers_spelling():
    """PostgreSQL 15 wrote "Checksum": "8a744722" (CRC32C) for a PG_VERSION of b"15\\n"."""
    body = json.dumps(
        {
            "PostgreSQL-Backup-Manifest-Version": 1,
            "Files": [
                {"Path": p, "Size": 3, "Checksum-Algorithm": "CRC32C", "Checksum": "8a744722"}
                for p in ("PG_VERSION", "other")
            ],
        }
    )
    head = body[:-1] + ",\n"
    data = head + f'"Manifest-Checksum": "{hashlib.sha256(head.encode()).hexdigest()}"}}\n'
    state = VerifyState(parse_backup_manifest(data.encode(), "b"))
    state.check_archive("base.tar", _tar({"PG_VERSION": b"15\n", "other": b"16\n"}))
    assert state.finish() == ["other: checksum mismatch (CRC32C)"]
