"""``drbackup snapshot minio``, ``restore minio``, ``drill-bucket`` and ``gc`` as a user runs them.

The moto S3 server on loopback is the source (target ``files``, bucket ``photos``) and the
repository (``s3://<bucket>/repo``).  Exact output lines and exit codes are asserted: 0
success, 1 failed, 2 usage, 3 a drill check failed, 4 unreachable.
"""

from __future__ import annotations

import pytest
import yaml

from drbackup.actions.context import AppContext
from drbackup.config import load_config
from drbackup.repository.locks import RepositoryLock
from drbackup.repository.manifest import blob_key
from drbackup.sources.buckets.index import open_index
from tests.e2e.conftest import PASSPHRASE, write_secret
from tests.fixtures.s3server import free_port

NOT_EMPTY = [
    "drbackup: error: destination bucket restored is not empty (it holds 'docs/a.txt')",
    "hint: restore into an empty or new bucket, or add --force to overwrite objects with "
    "the same keys",
]


@pytest.fixture
def setup(tmp_path, monkeypatch, s3_server, s3_bucket, run_cli):
    """A config (repository and target ``files`` on moto), an initialised repository, and
    bucket ``photos`` with three objects."""
    s3 = s3_server.client()
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key="docs/a.txt", Body=b"alpha", ContentType="text/plain")
    s3.put_object(Bucket="photos", Key="docs/b.txt", Body=b"beta", Tagging="k=v")
    s3.put_object(Bucket="photos", Key="img/c.png", Body=b"\x89PNG" * 100, Metadata={"w": "1"})
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
                "buckets": ["photos"],
            }
        },
    }
    path = tmp_path / "drbackup.yaml"

    def write(data: dict) -> None:
        path.write_text(yaml.safe_dump(data), encoding="utf-8")

    write(config)
    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRBACKUP_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("DRBACKUP_CONFIG", str(path))
    assert run_cli("init", "--scrypt-log-n", "10").code == 0
    return {"s3": s3, "config": config, "write": write, "path": path, "bucket": s3_bucket}


def repository(setup):
    return AppContext(load_config(setup["path"])).repository()


def bucket_names(s3) -> set[str]:
    return {b["Name"] for b in s3.list_buckets()["Buckets"]}


def test_snapshot_then_restore_with_dry_run_and_refusal(setup, run_cli):
    s3 = setup["s3"]
    first = run_cli("snapshot", "minio", "files", "--json")
    assert first.code == 0, first.stderr
    record = first.json()
    assert (record["kind"], record["meta"]["objects"], record["meta"]["bytes"]) == (
        "bucket",
        3,
        409,
    )

    shown = run_cli("show", record["backup_id"])
    assert shown.code == 0, shown.stderr
    meta = {
        line.split(":", 1)[0]: line.split(":", 1)[1].strip() for line in shown.stdout.splitlines()
    }
    assert meta["previous_snapshot"] == "-"  # not Python's None
    assert "{" not in shown.stdout and "None" not in shown.stdout
    (line,) = [line for line in run_cli("list").stdout.splitlines() if record["backup_id"] in line]
    assert " 409 B " in line  # the bucket's content, not the size of the snapshot's index

    second = run_cli("snapshot", "minio", "--all")
    assert second.code == 0, second.stderr
    assert second.stdout.startswith("snapshot files/")
    assert (
        "complete: 3 objects (409 B) in 1 bucket(s); 3 unchanged, 0 read, 0 new blobs (0 B stored)"
        in second.stdout
    )

    dry = run_cli("restore", "minio", "files", "--into-bucket", "restored", "--dry-run")
    assert dry.code == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("using latest backup ")
    assert lines[1:4] == [
        "would write docs/a.txt (5 B, text/plain)",
        "would write docs/b.txt (4 B, binary/octet-stream)",
        "would write img/c.png (400 B, binary/octet-stream)",
    ]
    assert lines[4].startswith("dry run: 3 objects (409 B) would be written into restored at ")
    assert lines[4].endswith("; nothing was written")
    assert "restored" not in bucket_names(s3)

    done = run_cli("restore", "minio", "files", "--into-bucket", "restored")
    assert done.code == 0, done.stderr
    assert done.stdout.splitlines()[1].startswith(
        "restored 3 objects (409 B) of bucket photos into restored (created) at "
    )
    assert s3.get_object(Bucket="restored", Key="img/c.png")["Metadata"] == {"w": "1"}
    assert s3.get_object_tagging(Bucket="restored", Key="docs/b.txt")["TagSet"] == [
        {"Key": "k", "Value": "v"}
    ]

    refused = run_cli("restore", "minio", "files", "--into-bucket", "restored")
    assert (refused.code, refused.stdout, refused.error_lines) == (1, "", NOT_EMPTY)
    forced = run_cli("restore", "minio", "files", "--into-bucket", "restored", "--force", "--json")
    assert forced.code == 0 and forced.json()["objects"] == 3

    listed = run_cli("list", "--json").json()
    assert [b["kind"] for b in listed] == ["bucket", "bucket"]


def test_bucket_drill_passes_then_fails_on_a_corrupted_blob(setup, run_cli):
    assert run_cli("snapshot", "minio", "files").code == 0
    ok = run_cli("drill-bucket", "files")
    assert ok.code == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[0].endswith(": pass")
    assert (
        "  ok    restore   photos: 3 objects restored, sha256 verified while uploading" in ok.stdout
    )

    repo = repository(setup)
    manifest = repo.load_manifest(repo.list_refs("files")[-1])
    with open_index(repo.open_item, manifest, "photos") as entries:
        blob = {e.key: e.blob for e in entries}["docs/b.txt"]
    s3, key = setup["s3"], f"repo/{blob_key(blob)}"
    data = bytearray(s3.get_object(Bucket=setup["bucket"], Key=key)["Body"].read())
    data[-5] ^= 0xFF
    s3.put_object(Bucket=setup["bucket"], Key=key, Body=bytes(data))

    failed = run_cli("drill-bucket", "files")
    assert failed.code == 3
    lines = failed.stdout.splitlines()
    at = lines.index("  FAIL  restore   photos: 1 of 3 objects failed to restore")
    assert lines[at + 1].startswith(" " * 17 + "object docs/b.txt: ")  # the operator sees it
    assert failed.error_lines == [
        "drbackup: error: bucket drill of files failed: 5 check(s) failed "
        "(bytes, checksums, objects, restore, rto)"
    ]
    assert not [b for b in bucket_names(s3) if b.startswith("drbackup-drill-")]


def test_gc_dry_run_and_refusal_while_a_snapshot_runs(setup, run_cli):
    assert run_cli("snapshot", "minio", "files").code == 0
    dry = run_cli("gc", "--dry-run", "--json")
    assert dry.code == 0, dry.stderr
    record = dry.json()
    assert (record["blobs"], record["referenced"], record["unreferenced"]) == (3, 3, [])

    repo = repository(setup)
    with RepositoryLock(repo, "snapshot", "20261123T000000Z-abcdef").acquire("gc"):
        refused = run_cli("gc", "--grace", "1h")
    assert refused.code == 1
    assert refused.error_lines[0].startswith(
        "drbackup: error: refusing to delete blobs: a snapshot is running "
        "(snapshot 20261123T000000Z-abcdef (live, refreshed "
    )
    assert refused.error_lines[1] == (
        "hint: run gc when no snapshot is running (gc --dry-run only reports); "
        "a lock not refreshed for 15 minutes is a dead process's and ignored"
    )
    done = run_cli("gc", "--grace", "1h")
    assert done.code == 0, done.stderr
    assert done.stdout.startswith("3 blobs (")


def test_errors_name_the_cause(setup, run_cli):
    unknown = run_cli("snapshot", "minio", "nope")
    assert (unknown.code, unknown.error_lines) == (
        2,
        ["drbackup: error: unknown target 'nope'", "hint: known targets: files"],
    )

    config = setup["config"]
    endpoint = config["minio"]["files"]["endpoint"]
    config["minio"]["files"]["buckets"] = ["missing"]
    setup["write"](config)
    missing = run_cli("snapshot", "minio", "files")
    assert (missing.code, missing.error_lines) == (
        1,
        [
            f"drbackup: error: bucket missing does not exist on {endpoint}",
            "hint: check minio.files.buckets",
        ],
    )

    closed = f"http://127.0.0.1:{free_port()}"
    config["minio"]["files"]["endpoint"] = closed
    setup["write"](config)
    down = run_cli("snapshot", "minio", "files")
    assert (down.code, down.error_lines) == (
        4,
        [
            f"drbackup: error: cannot access missing: {closed} unreachable (NewConnectionError)",
            "hint: check minio.files.endpoint and that the server is running",
        ],
    )
