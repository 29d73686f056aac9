"""The least-privilege S3 policies of docs/deploy.md (files in deploy/s3-policies/) cover every
S3 call each command makes, and nothing more.

The test S3 server enforces no policy, so the calls are recorded instead: the repository and
the buckets being backed up sit behind two recording proxies (tests/fixtures/faultproxy.py),
each request is mapped to the IAM action it needs, and the actions of each role's commands
are compared with that role's policy.  A command that starts using an S3 call no policy
grants fails here; so does a policy granting what no command uses (least privilege).
"""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

from tests.e2e.conftest import PASSPHRASE, write_secret
from tests.fixtures.faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "deploy" / "s3-policies"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

# Granted although no request of the scenario shows them, and why.
NOT_SEEN_AS_REQUESTS = {
    "s3:AbortMultipartUpload": "a multipart upload that fails is aborted",
    "s3:PutObjectRetention": "PutObject with Object Lock headers (repository.object_lock)",
    "s3:PutObjectTagging": "PutObject with an x-amz-tagging header (restored object tags)",
}


def s3_action(method: str, target: str) -> str:
    """The IAM action an S3 request (path-style ``/bucket/key?query``) needs.

    Raises AssertionError for a request not mapped here: a new kind of call must be looked
    at (and documented) before it passes.
    """
    url = urlsplit(target)
    bucket, _, key = url.path.lstrip("/").partition("/")
    query = parse_qs(url.query, keep_blank_values=True)
    version = "Version" if "versionId" in query else ""
    table = _OBJECT if key else _BUCKET
    for (m, param), action in table.items():
        if m == method and param in query:
            return action.format(version=version)
        if m == method and param is None and not set(query) - _PLAIN_PARAMS:
            return action.format(version=version)
    raise AssertionError(f"unmapped s3 request: {method} {target} (bucket {bucket!r})")


# Query parameters that do not change which action a plain request needs.
_PLAIN_PARAMS = {
    *("versionId", "uploadId", "partNumber", "uploads", "x-id", "list-type", "prefix"),
    *("delimiter", "continuation-token", "max-keys", "start-after", "encoding-type"),
    *("fetch-owner", "marker"),
}
# (method, query parameter or None) -> action; the first match wins, so specific first.
_BUCKET = {
    ("HEAD", None): "s3:ListBucket",
    ("GET", "object-lock"): "s3:GetBucketObjectLockConfiguration",
    ("GET", "versioning"): "s3:GetBucketVersioning",
    ("GET", "versions"): "s3:ListBucketVersions",
    ("GET", "location"): "s3:GetBucketLocation",
    ("GET", "uploads"): "s3:ListBucketMultipartUploads",
    ("GET", None): "s3:ListBucket",
    ("PUT", "versioning"): "s3:PutBucketVersioning",
    ("PUT", None): "s3:CreateBucket",
    ("POST", "delete"): "s3:DeleteObject",
}
_OBJECT = {
    ("GET", "tagging"): "s3:GetObject{version}Tagging",
    ("GET", "retention"): "s3:GetObjectRetention",
    ("GET", "legal-hold"): "s3:GetObjectLegalHold",
    ("GET", None): "s3:GetObject{version}",
    ("HEAD", None): "s3:GetObject{version}",
    ("PUT", "tagging"): "s3:PutObjectTagging",
    ("PUT", "retention"): "s3:PutObjectRetention",
    ("PUT", None): "s3:PutObject",
    ("POST", None): "s3:PutObject",  # multipart: create (?uploads) and complete (?uploadId)
    ("DELETE", "uploadId"): "s3:AbortMultipartUpload",
    ("DELETE", None): "s3:DeleteObject{version}",
}


def load_policy(name: str, bucket: str, prefix: str = "") -> list[dict]:
    """The statements of ``deploy/s3-policies/<name>.json`` for ``bucket`` and ``prefix``."""
    text = (POLICIES / f"{name}.json").read_text()
    doc = json.loads(text.replace("BUCKET", bucket).replace("PREFIX", prefix))
    for statement in doc["Statement"]:
        assert statement["Effect"] == "Allow" and "Condition" not in statement
    return doc["Statement"]


def policy_actions(name: str) -> set[str]:
    return {a for st in load_policy(name, "b", "p") for a in st["Action"]}


Call = tuple[str, str]  # (IAM action, resource ARN)


def recorded(proxy: FaultProxy) -> set[Call]:
    """The (action, resource) of every request the proxy saw since the last call."""
    calls = set()
    for method, path, _ in list(proxy.log):
        bucket, _, key = urlsplit(path).path.lstrip("/").partition("/")
        resource = f"arn:aws:s3:::{bucket}" + (f"/{unquote(key)}" if key else "")
        calls.add((s3_action(method, path), resource))
    proxy.log.clear()
    return calls


def check_role(name: str, calls: set[Call], bucket: str, prefix: str = "") -> None:
    """Every call allowed by a statement of the policy; every granted action used."""
    statements = load_policy(name, bucket, prefix)
    denied = sorted(
        f"{action} on {resource}"
        for action, resource in calls
        if not any(
            action in st["Action"] and any(fnmatchcase(resource, r) for r in st["Resource"])
            for st in statements
        )
    )
    assert not denied, f"{name} lacks {denied}"
    unused = policy_actions(name) - {a for a, _ in calls} - NOT_SEEN_AS_REQUESTS.keys()
    assert not unused, f"{name} grants {sorted(unused)}, which no command used"


@pytest.fixture
def setting(s3_server, s3_bucket, pg_db, tmp_path, monkeypatch, run_cli):
    """Repository behind one recording proxy, the bucket source behind another."""
    client = s3_server.client()
    client.create_bucket(Bucket="media")  # versioned by the test after its first snapshot
    client.put_object(Bucket="media", Key="photos/a.jpg", Body=b"a" * 1000, Tagging="k=v")
    client.put_object(Bucket="media", Key="photos/b.jpg", Body=b"b" * 2000)
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 9)")
    with FaultProxy(s3_server.endpoint_url) as repo, FaultProxy(s3_server.endpoint_url) as source:
        id_file = write_secret(tmp_path / "id", s3_server.access_key_id)
        secret_file = write_secret(tmp_path / "secret", s3_server.secret_access_key)
        config = {
            "repository": {
                "url": f"s3://{s3_bucket}/repo",
                "s3": {
                    "endpoint_url": repo.url,
                    "region": s3_server.region,
                    "access_key_id_file": str(id_file),
                    "secret_access_key_file": str(secret_file),
                },
            },
            "catalog": f"sqlite:///{tmp_path / 'catalog.db'}",
            "postgres": {
                "app": {"dsn": pg_db.dsn, "databases": [pg_db.name], "retention": {"keep_last": 1}}
            },
            "minio": {
                "media": {
                    "endpoint": source.url,
                    "access_key_file": str(id_file),
                    "secret_key_file": str(secret_file),
                    "buckets": ["media"],
                    "retention": {"keep_last": 1},
                }
            },
        }
        path = tmp_path / "drbackup.yaml"
        path.write_text(yaml.safe_dump(config))
        monkeypatch.setenv("DRBACKUP_CONFIG", str(path))
        monkeypatch.setenv("DRBACKUP_PASSPHRASE", PASSPHRASE)
        monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path / "home"))
        yield repo, source


def ok(result) -> str:
    assert result.code == 0, result.stdout + result.stderr
    return result.stdout


def test_each_role_uses_exactly_what_its_policy_grants(
    setting, run_cli, pg_db, tmp_path, s3_bucket, s3_server
):
    repo, source = setting
    writer, reader, pruner = set(), set(), set()
    source_reader, restore_writer = set(), set()

    ok(run_cli("init", "--scrypt-log-n", "10"))
    writer |= recorded(repo)
    first = json.loads(ok(run_cli("backup", "postgres", "app", "--json")))
    second = json.loads(ok(run_cli("backup", "postgres", "app", "--json")))
    ok(run_cli("snapshot", "minio", "media"))  # unversioned: GetObject
    client = s3_server.client()  # versioned from now on: the history reads versions
    client.put_bucket_versioning(Bucket="media", VersioningConfiguration={"Status": "Enabled"})
    client.put_object(Bucket="media", Key="photos/a.jpg", Body=b"A" * 1000, Tagging="k=w")
    ok(run_cli("snapshot", "minio", "media"))
    ok(run_cli("drill", "run", "--target", "app"))
    ok(run_cli("verify", second["backup_id"]))
    run_cli("report")  # nagios exit codes: the calls matter here, not the status
    writer |= recorded(repo)
    source_reader |= recorded(source)

    ok(run_cli("list"))
    ok(run_cli("show", second["backup_id"]))
    ok(run_cli("verify", second["backup_id"]))
    ok(run_cli("export", second["backup_id"], "-o", tmp_path / "app.dump"))
    into = pg_db.cluster.dsn(f"{pg_db.name}_restored")
    ok(run_cli("restore", "postgres", "app", "--into", into, "--create"))
    pg_db.cluster.drop_database(f"{pg_db.name}_restored")
    ok(run_cli("restore", "minio", "media", "--into-bucket", "media-restored"))
    reader |= recorded(repo)
    restore_writer |= recorded(source)

    ok(run_cli("prune"))
    ok(run_cli("gc", "--grace", "1s"))
    pruner |= recorded(repo)
    assert not recorded(source)
    assert first["backup_id"] not in ok(run_cli("list"))  # prune did delete

    check_role("repository-writer", writer, s3_bucket, "repo")
    check_role("repository-reader", reader, s3_bucket, "repo")
    check_role("repository-pruner", pruner, s3_bucket, "repo")
    check_role("bucket-source-reader", source_reader, "media")
    check_role("bucket-restore-writer", restore_writer, "media-restored")


def test_a_command_making_an_undocumented_call_fails_the_check():
    reads = {("s3:ListBucket", "arn:aws:s3:::b"), ("s3:GetObject", "arn:aws:s3:::b/p/x")}
    check_role("repository-reader", reads, "b", "p")
    delete = ("s3:DeleteObject", "arn:aws:s3:::b/p/manifests/app/x")
    with pytest.raises(AssertionError, match=r"repository-reader lacks \['s3:DeleteObject on "):
        check_role("repository-reader", reads | {delete}, "b", "p")
    # the writer may release its own locks, never delete a backup
    writes = reads | {("s3:PutObject", "arn:aws:s3:::b/p/x")}
    writes |= {("s3:DeleteObject", "arn:aws:s3:::b/p/locks/snapshot-1")}
    check_role("repository-writer", writes, "b", "p")
    with pytest.raises(AssertionError, match="repository-writer lacks"):
        check_role("repository-writer", writes | {delete}, "b", "p")
    with pytest.raises(AssertionError, match="unmapped s3 request"):
        s3_action("PUT", "/bucket/key?acl")


def test_the_policies_in_the_docs_are_the_policy_files():
    text = DEPLOY_DOC.read_text()
    for path in sorted(POLICIES.glob("*.json")):
        match = re.search(rf"<!-- policy: {path.name} -->\n```json\n(.*?)```", text, re.DOTALL)
        assert match, f"docs/deploy.md does not show {path.name}"
        assert json.loads(match.group(1)) == json.loads(path.read_text()), path.name
