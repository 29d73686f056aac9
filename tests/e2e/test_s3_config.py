"""S3 repositories as deployments meet them: a missing bucket is a configuration error
(exit 2, not 4: retrying cannot help), ``init`` with ``object_lock`` on a bucket without
Object Lock says so with the fix, and with no keys configured boto3's default credential
chain is used (here web identity, as IRSA provides it, against the test server's STS)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import PASSPHRASE, write_secret


def write_config(tmp_path: Path, s3_server, bucket: str, *, keys=True, **repository) -> Path:
    s3 = {"endpoint_url": s3_server.endpoint_url, "region": s3_server.region}
    if keys:
        s3["access_key_id_file"] = str(write_secret(tmp_path / "id", s3_server.access_key_id))
        s3["secret_access_key_file"] = str(
            write_secret(tmp_path / "secret", s3_server.secret_access_key)
        )
    data = {
        "repository": {"url": f"s3://{bucket}/repo", "s3": s3, **repository},
        "catalog": f"sqlite:///{tmp_path / 'catalog.db'}",
    }
    path = tmp_path / "drbackup.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRBACKUP_PASSPHRASE", PASSPHRASE)


def test_a_missing_bucket_is_a_configuration_error(env, s3_server, tmp_path, run_cli):
    config = write_config(tmp_path, s3_server, "no-such-bucket")
    for args in (("init", "--scrypt-log-n", "10"), ("list",), ("drill", "history")):
        result = run_cli("-c", config, *args)
        assert result.code == 2, (args, result.stderr)
        assert result.error_lines[-2:] == [
            "drbackup: error: cannot access s3://no-such-bucket/repo: bucket does not exist",
            "hint: create the bucket, or fix the bucket name in the repository url",
        ]


def test_init_with_object_lock_on_a_bucket_without_it_says_how_to_fix_it(
    env, s3_server, s3_bucket, tmp_path, run_cli
):
    lock = {"object_lock": {"mode": "GOVERNANCE", "days": 1}}
    config = write_config(tmp_path, s3_server, s3_bucket, **lock)
    result = run_cli("-c", config, "init", "--scrypt-log-n", "10")
    assert result.code == 2
    assert result.error_lines == [
        f"drbackup: error: bucket {s3_bucket} does not have object lock enabled "
        "(repository.object_lock needs it)",
        "hint: enable it (AWS, versioned bucket: aws s3api put-object-lock-configuration "
        f"--bucket {s3_bucket} --object-lock-configuration ObjectLockEnabled=Enabled; MinIO: "
        "only at creation, mc mb --with-lock), or remove repository.object_lock",
    ]
    assert list(s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents", [])) == []

    s3_server.client().create_bucket(Bucket="locked", ObjectLockEnabledForBucket=True)
    locked = write_config(tmp_path, s3_server, "locked", **lock)
    result = run_cli("-c", locked, "init", "--scrypt-log-n", "10")
    assert result.code == 0, result.stderr
    head = s3_server.client().head_object(Bucket="locked", Key="repo/drbackup.repo")
    assert head["ObjectLockMode"] == "GOVERNANCE"


def test_with_no_keys_configured_the_default_credential_chain_is_used(
    env, s3_server, s3_bucket, tmp_path, run_cli, monkeypatch
):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    config = write_config(tmp_path, s3_server, s3_bucket, keys=False)
    nothing = run_cli("-c", config, "init", "--scrypt-log-n", "10")
    assert nothing.code == 4
    assert nothing.error_lines[0] == (
        f"drbackup: error: cannot access s3://{s3_bucket}/repo: no usable s3 credentials"
    )

    # IRSA / EKS pod identity: a projected token file and a role; STS trades them for keys.
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/drbackup")
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "drbackup-test")
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", s3_server.endpoint_url)
    init = run_cli("-c", config, "init", "--scrypt-log-n", "10")
    assert init.code == 0, init.stderr
    listed = run_cli("-c", config, "list", "--json")
    assert (listed.code, listed.json()) == (0, [])
