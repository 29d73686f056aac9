"""docs/buckets.md's runbook, run as written: a bucket restored as it was at a time, with a
config of the repository, the key, and the server to restore into.

Bucket ``attachments`` on the S3 test server is snapshotted three times: two objects; three;
then after "the damage" (an object deleted, one overwritten, a new one uploaded).  The
runbook restores the state between the second and the third snapshot into a new bucket,
then into ``attachments`` itself with ``--force``.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest
import yaml

from tests.runbooks.conftest import CHECKOUT_BIN
from tests.runbooks.markdown import load_runbook
from tests.runbooks.runner import RunbookRun
from tests.runbooks.test_pg_restore import wait_until_after, write_secrets

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


def snapshot(config) -> dict:
    argv = [f"{CHECKOUT_BIN}/drbackup", "-c", str(config), "snapshot", "minio", "files", "--json"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def snapshots(tmp_path, s3_server, s3_bucket, monkeypatch):
    """Three snapshots of ``attachments``; the second one's id, the time whose state it
    holds, and that state."""
    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path / "backup-host"))
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    secrets = tmp_path / "backup-secrets"
    write_secrets(secrets, s3_server)
    config = tmp_path / "backup-host.yaml"
    config.write_text(yaml.safe_dump({
        "repository": {
            "url": f"s3://{s3_bucket}/prod",
            "s3": {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region,
                   "access_key_id_file": str(secrets / "ak"),
                   "secret_access_key_file": str(secrets / "sk")},
            "encryption": {"passphrase_file": str(secrets / "drbackup-passphrase")},
        },
        "minio": {"files": {"endpoint": s3_server.endpoint_url, "buckets": [BUCKET],
                            "access_key_file": str(secrets / "ak"),
                            "secret_key_file": str(secrets / "sk")}},
    }))  # fmt: skip
    init = [f"{CHECKOUT_BIN}/drbackup", "-c", str(config), "init", "--scrypt-log-n", "10"]
    assert subprocess.run(init, capture_output=True, timeout=60).returncode == 0
    put(client, "invoices/2026/11/0001.pdf", b"%PDF-1.4 one", **PDF)
    put(client, "avatars/alice.png", b"png" * 100, **PNG)
    snapshot(config)
    put(client, "avatars/bob.png", b"PNG" * 100, **PNG)
    chosen = snapshot(config)
    state = bucket_state(client, BUCKET)
    when = dt.datetime.fromisoformat(chosen["recovery_point"]).replace(microsecond=0)
    when += dt.timedelta(seconds=1)
    client.delete_object(Bucket=BUCKET, Key="invoices/2026/11/0001.pdf")  # the damage
    put(client, "avatars/alice.png", b"garbage", **PNG)
    put(client, "avatars/carol.png", b"new since", **PNG)
    wait_until_after(when + dt.timedelta(seconds=1))
    snapshot(config)
    return f"files/{chosen['backup_id']}", when, state


def test_the_bucket_runbook(snapshots, tmp_path, s3_server, s3_bucket, shell_factory):
    snapshot_id, when, state = snapshots
    secrets = tmp_path / "secrets"
    write_secrets(secrets, s3_server)
    for name, value in {"minio-ak": s3_server.access_key_id, "minio-sk": s3_server.secret_access_key}.items():  # fmt: skip
        (secrets / name).write_text(value + "\n")
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
