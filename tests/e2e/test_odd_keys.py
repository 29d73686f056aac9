"""Odd bucket keys never fail a snapshot: they round-trip exactly, or are skipped by name.

``../x``, ``a/../../b``, ``./dot`` (a ``.`` or ``..`` segment) cannot be addressed by the
S3 client: they are recorded as skipped and named in a warning on stderr.  Everything else
(``a//b``, a key ending in ``/``, a 1024-byte key, unicode, ``?#&%``) is captured and
restored byte for byte.
"""

from __future__ import annotations

import pytest
import yaml

from tests.e2e.conftest import PASSPHRASE, write_secret

SKIPPED = ["../x", "./dot", "a/../../b", "a/./c"]
KEPT = [
    "a//b",
    "dir/",
    "k" * 1024,
    "ünï/cødé ✓",
    "sp ace?#&%+=",
    "plain.txt",
    "..dots../x.",
]


@pytest.fixture
def odd_bucket(tmp_path, monkeypatch, s3_server, s3_bucket, run_cli):
    s3 = s3_server.client()
    s3.create_bucket(Bucket="odd")
    for key in SKIPPED + KEPT:
        s3.put_object(Bucket="odd", Key=key, Body=key.encode(), Metadata={"k": "v"})
    key_id = str(write_secret(tmp_path / "id", s3_server.access_key_id))
    secret = str(write_secret(tmp_path / "secret", s3_server.secret_access_key))
    config = {
        "repository": {
            "url": f"s3://{s3_bucket}/repo",
            "s3": {
                "endpoint_url": s3_server.endpoint_url,
                "region": s3_server.region,
                "access_key_id_file": key_id,
                "secret_access_key_file": secret,
            },
        },
        "catalog": f"sqlite:///{tmp_path / 'catalog.db'}",
        "minio": {
            "files": {
                "endpoint": s3_server.endpoint_url,
                "access_key_file": key_id,
                "secret_key_file": secret,
                "buckets": ["odd"],
            }
        },
    }
    path = tmp_path / "drbackup.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRBACKUP_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("DRBACKUP_CONFIG", str(path))
    assert run_cli("init", "--scrypt-log-n", "10").code == 0
    return s3


WARNING = [
    "drbackup: warning: odd: 4 object(s) not in the snapshot: their keys have a '.' or '..' "
    "path segment, which the s3 client cannot address: '../x', './dot', 'a/../../b', 'a/./c'",
    "hint: rename them on the source to have them backed up",
]


def bucket_contents(s3, bucket: str) -> dict[str, bytes]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_odd_keys_are_captured_exactly_or_skipped_by_name(odd_bucket, run_cli):
    first = run_cli("snapshot", "minio", "files")
    assert first.code == 0, first.stderr
    assert first.error_lines[0].startswith("snapshot files: read ")  # progress, not a tty
    assert first.error_lines[1:] == WARNING
    assert f"complete: {len(KEPT)} objects " in first.stdout
    again = run_cli("snapshot", "minio", "files", "--json")  # incremental: the same verdict
    assert again.code == 0, again.stderr
    assert again.error_lines == WARNING
    skipped = again.json()["meta"]["buckets"]["odd"]["skipped"]
    assert skipped == {"count": 4, "keys": SKIPPED}

    restored = run_cli("restore", "minio", "files", "--into-bucket", "restored")
    assert restored.code == 0, restored.stderr
    assert bucket_contents(odd_bucket, "restored") == {k: k.encode() for k in KEPT}
    assert odd_bucket.head_object(Bucket="restored", Key="a//b")["Metadata"] == {"k": "v"}

    drill = run_cli("drill-bucket", "files")
    assert drill.code == 0, drill.stdout + drill.stderr
