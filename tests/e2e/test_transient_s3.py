"""Transient S3 errors tell the truth: unreachable (exit 4), never damage (exit 3).

A fault proxy (tests/fixtures/faultproxy.py) sits between drbackup and the S3 server, for the
repository and for the source bucket alike.  5xx and SlowDown answers that outlast the
retries, timeouts and connections cut mid-body are "unreachable": ``verify`` and ``restore
minio`` stop with exit 4 and the catalog marks nothing damaged.  The bucket source retries
5xx and SlowDown as the repository side does.
"""

from __future__ import annotations

import pytest
import yaml

from drbackup.actions.context import AppContext
from drbackup.config import load_config
from drbackup.repository.manifest import blob_key
from drbackup.sources.buckets.index import open_index
from tests.e2e.conftest import PASSPHRASE, write_secret

REPO_HINT = (
    "hint: the s3 server is overloaded or failing: try again later "
    "(repository.s3.max_attempts sets how often each request is tried)"
)
SOURCE_HINT = (
    "hint: the server is overloaded or failing: try again later "
    "(minio.files.max_attempts sets how often each request is tried)"
)
INJECTED = "injected by the fault proxy"


@pytest.fixture
def proxied(tmp_path, monkeypatch, s3_server, s3_bucket, fault_proxy, run_cli):
    """Repository ``s3://<bucket>/repo`` and target ``files`` (bucket ``photos``), both
    reached through ``fault_proxy``; two attempts per request and short timeouts."""
    s3 = s3_server.client()
    s3.create_bucket(Bucket="photos")
    s3.put_object(Bucket="photos", Key="docs/a.txt", Body=b"alpha", ContentType="text/plain")
    s3.put_object(Bucket="photos", Key="docs/b.txt", Body=b"beta")
    key_id = str(write_secret(tmp_path / "id", s3_server.access_key_id))
    secret = str(write_secret(tmp_path / "secret", s3_server.secret_access_key))
    timeouts = {"connect_timeout": "2s", "read_timeout": "2s", "max_attempts": 2}
    config = {
        "repository": {
            "url": f"s3://{s3_bucket}/repo",
            "s3": {
                "endpoint_url": fault_proxy.url,
                "region": s3_server.region,
                "access_key_id_file": key_id,
                "secret_access_key_file": secret,
                **timeouts,
            },
        },
        "catalog": f"sqlite:///{tmp_path / 'catalog.db'}",
        "minio": {
            "files": {
                "endpoint": fault_proxy.url,
                "access_key_file": key_id,
                "secret_key_file": secret,
                "buckets": ["photos"],
                **timeouts,
            }
        },
    }
    path = tmp_path / "drbackup.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRBACKUP_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("DRBACKUP_CONFIG", str(path))
    assert run_cli("init", "--scrypt-log-n", "10").code == 0

    def write(**minio_options) -> None:
        config["minio"]["files"].update(minio_options)
        path.write_text(yaml.safe_dump(config), encoding="utf-8")

    return {"s3": s3, "bucket": s3_bucket, "path": path, "write": write}


def snapshot(run_cli) -> str:
    done = run_cli("snapshot", "minio", "files", "--json")
    assert done.code == 0, done.stderr
    return done.json()["backup_id"]


def app_of(proxied) -> AppContext:
    return AppContext(load_config(proxied["path"]))


def first_blob(proxied, backup_id: str) -> str:
    """The blob key of ``docs/a.txt``: the first object a verify or restore reads."""
    repo = app_of(proxied).repository()
    manifest = repo.load_manifest(repo.resolve(backup_id))
    with open_index(repo.open_item, manifest, "photos") as entries:
        return blob_key({e.key: e.blob for e in entries}["docs/a.txt"])


def drbackup_lines(result) -> list[str]:
    """stderr from drbackup's error line on (the proxy's threads may log a cut connection)."""
    lines = result.error_lines
    starts = [i for i, line in enumerate(lines) if line.startswith("drbackup: ")]
    return lines[starts[0] :] if starts else lines


def catalog_row(proxied, backup_id: str):
    (row,) = [b for b in app_of(proxied).catalog.list_backups() if b.backup_id == backup_id]
    return row


@pytest.mark.parametrize(
    ("fault", "options", "reason"),
    [
        (
            "status",
            {"status": 503, "code": "SlowDown"},
            f"s3 server kept failing (SlowDown: {INJECTED}; 2 attempts)",
        ),
        (
            "status",
            {"status": 500, "code": "InternalError"},
            f"s3 server kept failing (InternalError: {INJECTED}; 2 attempts)",
        ),
        ("reset_body", {}, "s3 endpoint {endpoint} unreachable ("),
        ("stall", {"seconds": 3}, "s3 endpoint {endpoint} unreachable (read timed out)"),
    ],
)
def test_verify_through_transient_faults_is_unreachable_and_marks_nothing(
    proxied, fault_proxy, run_cli, fault, options, reason
):
    backup_id = snapshot(run_cli)
    blob = first_blob(proxied, backup_id)
    fault_proxy.add(fault, method="GET", path=f"/repo/{blob}$", **options)

    verified = run_cli("verify", backup_id)
    assert verified.code == 4, verified.stderr
    assert verified.stdout == ""
    first = f"drbackup: error: cannot read {blob}: " + reason.format(endpoint=fault_proxy.url)
    assert drbackup_lines(verified)[0].startswith(first), verified.stderr
    if fault == "status":
        assert drbackup_lines(verified) == [first, REPO_HINT]
    row = catalog_row(proxied, backup_id)
    assert (row.status, row.last_verified_at) == ("ok", None)  # not marked damaged

    fault_proxy.clear()
    again = run_cli("verify", backup_id)
    assert again.code == 0, again.stderr
    assert catalog_row(proxied, backup_id).last_verified_at is not None


def test_verify_of_a_database_backup_through_5xx_is_unreachable(
    s3_repo_config, fault_proxy, run_cli, pg_db
):
    pg_db.execute("CREATE TABLE t AS SELECT g AS n FROM generate_series(1, 1000) AS g")
    done = run_cli("backup", "postgres", "app", "--json")
    assert done.code == 0, done.stderr
    backup_id = done.json()["backup_id"]
    s3 = s3_repo_config.data["repository"]["s3"]
    s3.update(endpoint_url=fault_proxy.url, max_attempts=2)
    s3_repo_config.write()
    fault_proxy.add(
        "status",
        method="GET",
        path=f"/repo/data/app/{backup_id}/",
        status=500,
        code="InternalError",
    )

    verified = run_cli("verify", backup_id)
    assert verified.code == 4, verified.stderr
    assert verified.error_lines[0].startswith(f"drbackup: error: cannot read data/app/{backup_id}/")
    assert verified.error_lines[0].endswith(
        f": s3 server kept failing (InternalError: {INJECTED}; 2 attempts)"
    )
    assert verified.error_lines[1:] == [REPO_HINT]
    catalog = AppContext(load_config(s3_repo_config.path)).catalog
    (row,) = catalog.list_backups()
    assert (row.status, row.last_verified_at) == ("ok", None)


def test_restore_minio_through_repository_5xx_is_unreachable(proxied, fault_proxy, run_cli):
    backup_id = snapshot(run_cli)
    blob = first_blob(proxied, backup_id)
    fault_proxy.add("status", method="GET", path=f"/repo/{blob}$", status=503, code="SlowDown")

    restored = run_cli("restore", "minio", "files", "--into-bucket", "restored")
    assert restored.code == 4, restored.stderr
    assert restored.error_lines == [
        f"drbackup: error: cannot read {blob}: s3 server kept failing (SlowDown: {INJECTED}; 2 attempts)",
        REPO_HINT,
    ]


def test_restore_minio_through_destination_5xx_is_unreachable(proxied, fault_proxy, run_cli):
    snapshot(run_cli)
    fault_proxy.add(
        "status", method="PUT", path="^/restored/docs/a.txt", status=503, code="SlowDown"
    )

    restored = run_cli("restore", "minio", "files", "--into-bucket", "restored")
    assert restored.code == 4, restored.stderr
    assert restored.error_lines == [
        f"drbackup: error: cannot write restored/docs/a.txt: {fault_proxy.url} kept failing "
        f"(SlowDown: {INJECTED})",
        SOURCE_HINT,
    ]
    assert len(fault_proxy.requests("PUT", "^/restored/docs/a.txt")) == 2  # retried once


def test_the_bucket_source_retries_5xx_and_slowdown_with_backoff(proxied, fault_proxy, run_cli):
    proxied["write"](max_attempts=3)
    listing = fault_proxy.add(
        "status", method="GET", path=r"^/photos\?", times=2, status=503, code="SlowDown"
    )
    read = fault_proxy.add(
        "status",
        method="GET",
        path="^/photos/docs/a.txt",
        times=2,
        status=500,
        code="InternalError",
    )

    done = run_cli("snapshot", "minio", "files", "--json")
    assert done.code == 0, done.stderr
    assert (listing.hits, read.hits) == (2, 2)
    assert done.json()["meta"]["objects"] == 2


def test_the_bucket_source_still_failing_after_its_retries_is_unreachable(
    proxied, fault_proxy, run_cli
):
    fault_proxy.add("status", method="GET", path="^/photos/docs/b.txt", status=503, code="SlowDown")

    failed = run_cli("snapshot", "minio", "files")
    assert failed.code == 4, failed.stderr
    assert failed.error_lines == [
        f"drbackup: error: cannot read photos/docs/b.txt: {fault_proxy.url} kept failing "
        f"(SlowDown: {INJECTED})",
        SOURCE_HINT,
    ]
    assert len(fault_proxy.requests("GET", "^/photos/docs/b.txt")) == 2
    assert run_cli("list", "--json").json() == []  # nothing that looks valid


def test_report_through_5xx_is_unknown_not_an_unreadable_manifest(proxied, fault_proxy, run_cli):
    snapshot(run_cli)
    fault_proxy.add(
        "status", method="GET", path="^/[^/]+/repo/manifests/", status=503, code="SlowDown"
    )

    result = run_cli("report")
    assert result.code == 3, result.stdout
    assert "unreadable manifest" not in result.stdout
    last = result.stdout.splitlines()[-1]
    assert last.startswith("UNKNOWN   (all): repository unreachable: cannot read manifests/files/")
    assert last.endswith(f": s3 server kept failing (SlowDown: {INJECTED}; 2 attempts)")


def test_with_30_percent_5xx_everything_succeeds_or_is_unreachable(proxied, fault_proxy, run_cli):
    """Snapshot, verify and restore under a steady 30% of 503 SlowDown on both sides: each
    either succeeds (the retries absorb it) or exits 4 leaving nothing that looks valid."""
    proxied["write"](max_attempts=4)
    fault_proxy.fail_rate(0.3)
    snap = run_cli("snapshot", "minio", "files", "--json")
    assert snap.code in (0, 4), snap.stderr
    fault_proxy.clear()
    listed = run_cli("list", "--json").json()
    if snap.code == 4:
        assert listed == []
        snap = run_cli("snapshot", "minio", "files", "--json")
        assert snap.code == 0, snap.stderr
    backup_id = snap.json()["backup_id"]

    fault_proxy.fail_rate(0.3)
    verified = run_cli("verify", backup_id)
    restored = run_cli("restore", "minio", "files", "--into-bucket", "restored")
    fault_proxy.clear()
    assert verified.code in (0, 4), verified.stderr
    assert restored.code in (0, 4), restored.stderr
    assert catalog_row(proxied, backup_id).status == "ok"  # never marked damaged
    assert run_cli("verify", backup_id).code == 0
    forced = run_cli("restore", "minio", "files", "--into-bucket", "restored", "--force")
    assert forced.code == 0, forced.stderr
    assert proxied["s3"].get_object(Bucket="restored", Key="docs/a.txt")["Body"].read() == b"alpha"
