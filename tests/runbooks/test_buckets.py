"""docs/buckets.md's runbook, run as written: a bucket restored as it was at a time, with a
config of the repository, the key, and the server to restore into.

Bucket ``attachments`` on the S3 test server is snapshotted three times: two objects; three;
then after "the damage" (an object deleted, one overwritten, a new one uploaded).  The
runbook restores the state between the second and the third snapshot into a new bucket,
then into ``attachments`` itself with ``--force``.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.runbooks.backup_host import (
    make_backup_host,
    repository_secrets,
    second_after,
    wait_until_after,
    write_secrets,
)
from tests.runbooks.markdown import load_runbook
from tests.runbooks.runner import RunbookRun

BUCKET = "attachments"
PDF = {"ContentType": "application/pdf", "Metadata": {"owner": "alice"}, "Tagging": "class=confidential"}  # fmt: skip
PNG = {"ContentType": "image/png"}


def put(client, key: str, body: bytes, **options) -> None:
    client.put_object(Bucket=BUCKET, Key=key, Body=body, **options)


def bucket_state(client, bucket: str) -> dict[str, tuple]:
    """Every object of ``bucket``: content, type, user metadata, tags."""
    state = {}
    for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
        got = client.get_object(Bucket=bucket, Key=item["Key"])
        tags = client.get_object_tagging(Bucket=bucket, Key=item["Key"])["TagSet"]
        state[item["Key"]] = (got["Body"].read(), got["ContentType"], got["Metadata"], tags)
    return state


@pytest.fixture
def snapshots(tmp_path, s3_server, s3_bucket):
    """Three snapshots of ``attachments``; the second one's id, the time whose state it
    holds, and that state."""
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    keys = write_secrets(tmp_path / "minio-keys", repository_secrets(s3_server))
    source = {"endpoint": s3_server.endpoint_url, "buckets": [BUCKET],
              "access_key_file": str(keys / "ak"), "secret_key_file": str(keys / "sk")}  # fmt: skip
    host = make_backup_host(tmp_path, s3_server, s3_bucket, minio={"files": source})
    put(client, "invoices/2026/11/0001.pdf", b"%PDF-1.4 one", **PDF)
    put(client, "avatars/alice.png", b"png" * 100, **PNG)
    host.run("snapshot", "minio", "files")
    put(client, "avatars/bob.png", b"PNG" * 100, **PNG)
    chosen = host.json("snapshot", "minio", "files")
    state = bucket_state(client, BUCKET)
    when = second_after(chosen["recovery_point"])
    client.delete_object(Bucket=BUCKET, Key="invoices/2026/11/0001.pdf")  # the damage
    put(client, "avatars/alice.png", b"garbage", **PNG)
    put(client, "avatars/carol.png", b"new since", **PNG)
    wait_until_after(when + dt.timedelta(seconds=1))
    host.run("snapshot", "minio", "files")
    return f"files/{chosen['backup_id']}", when, state


def test_the_bucket_runbook(snapshots, tmp_path, s3_server, s3_bucket, shell_factory):
    snapshot_id, when, state = snapshots
    secrets = write_secrets(tmp_path / "secrets", {
        **repository_secrets(s3_server),
        "minio-ak": s3_server.access_key_id, "minio-sk": s3_server.secret_access_key,
    })  # fmt: skip
    values = {
        "CONFIG": str(tmp_path / "restore.yaml"),
        "REPO_URL": f"s3://{s3_bucket}/prod",
        "S3_ENDPOINT": s3_server.endpoint_url,
        "SECRETS": str(secrets),
        "SNAPSHOT": snapshot_id,
        "WHEN": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    run = RunbookRun(load_runbook("buckets", ["docs/buckets.md"]), values, shell_factory(tmp_path))
    client = s3_server.client()
    run.run_through("--dry-run")
    assert "attachments-restored" not in {b["Name"] for b in client.list_buckets()["Buckets"]}
    run.run_rest()

    assert bucket_state(client, "attachments-restored") == state
    restored_in_place = bucket_state(client, BUCKET)
    assert restored_in_place.pop("avatars/carol.png")[0] == b"new since"  # left alone
    assert restored_in_place == state
