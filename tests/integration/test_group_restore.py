"""``restore group NAME --point-in-time T``: a database and its versioned bucket restored to
the same second; the rows and the objects they name agree, and a dangling reference made
on purpose at a chosen second is reported (exit 3), naming the bucket and the object.

Real PostgreSQL (the session cluster, dumps) and the moto S3 server on loopback as the
versioned source bucket; a local repository.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from drbackup.actions.backup_postgres import backup_target
from drbackup.actions.context import AppContext
from drbackup.actions.restore_group import restore_group
from drbackup.actions.snapshot_minio import snapshot_target
from drbackup.config import load_config
from drbackup.errors import UsageError
from tests.e2e.conftest import _run_in_process, make_repo_config, minio_target
from tests.integration.test_bucket_history import bucket_state, next_second

QUERY = "SELECT bucket, key FROM attachments"


@pytest.fixture
def setup(request, tmp_path, monkeypatch, pg_db, s3_server, s3_bucket):
    """Group ``shop``: target ``app`` (pg_db with ``attachments``) and ``files`` (photos)."""
    s3 = s3_server.client()
    s3.create_bucket(Bucket="photos")
    s3.put_bucket_versioning(Bucket="photos", VersioningConfiguration={"Status": "Enabled"})
    pg_db.execute("CREATE TABLE attachments (id serial PRIMARY KEY, bucket text, key text)")
    cfg = make_repo_config("local", request, tmp_path, monkeypatch, pg_db.dsn)
    cfg.data["minio"] = {"files": minio_target(s3_server, tmp_path, ["photos"])}
    cfg.data["groups"] = {"shop": {"postgres": "app", "minio": ["files"], "references": [QUERY]}}
    cfg.write()
    app = AppContext(load_config(str(cfg.path)))
    yield type("Setup", (), {"app": app, "db": pg_db, "s3": s3})
    for suffix in ("_at1", "_at2"):  # the databases the restores created
        pg_db.cluster.drop_database(pg_db.name + suffix)


def upload(setup, key: str) -> None:
    """What the application does: the object first, then the row naming it."""
    setup.s3.put_object(Bucket="photos", Key=key, Body=key.encode())
    setup.db.execute("INSERT INTO attachments (bucket, key) VALUES ('photos', %s)", (key,))


def whole_second(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(microsecond=0)


def test_a_group_comes_back_to_one_second_and_dangling_references_are_named(setup, capsys):
    app = setup.app
    next_second()
    upload(setup, "a.txt")
    upload(setup, "b.png")
    backup_target(app, "app")
    snapshot_target(app, "files")
    next_second()
    upload(setup, "c.pdf")
    agreed = whole_second(backup_target(app, "app").recovery_point)
    next_second()
    setup.s3.delete_object(Bucket="photos", Key="a.txt")  # its row stays: dangling from now
    dangling = whole_second(backup_target(app, "app").recovery_point)
    snapshot_target(app, "files")

    into = setup.db.cluster.dsn(setup.db.name + "_at1")
    result = restore_group(app, "shop", agreed, into=into, create=True, suffix="-at1")
    assert result.database["method"] == "dump"
    assert whole_second(result.database["reached"]) == agreed
    [bucket] = result.buckets
    assert (bucket["method"], bucket["into_bucket"]) == ("history", "photos-at1")
    assert bucket["reached"].startswith(agreed.strftime("%Y-%m-%dT%H:%M:%S"))
    assert sorted(bucket_state(setup.s3, "photos-at1")) == ["a.txt", "b.png", "c.pdf"]
    assert [(r.status, r.evidence["references"]) for r in result.references] == [("pass", 3)]

    into2 = setup.db.cluster.dsn(setup.db.name + "_at2")
    argv = ["restore", "group", "shop", "--point-in-time", dangling.isoformat()]
    cli = _run_in_process(capsys, (*argv, "--into", into2, "--create", "--bucket-suffix", "-at2"))
    assert cli.code == 3, cli.stderr
    assert f"database app: restored to {dangling.strftime('%Y-%m-%dT%H:%M:%S')}" in cli.stdout
    assert "bucket photos (files): restored to " in cli.stdout and "from its history" in cli.stdout
    assert "references: fail: 1 of 3 referenced objects missing" in cli.stdout
    assert "(photos: 1)" in cli.stdout and "a.txt" not in cli.stdout  # keys stay out of summaries
    assert sorted(bucket_state(setup.s3, "photos-at2")) == ["b.png", "c.pdf"]


def test_unknown_group_and_missing_destination_are_usage_errors(setup):
    with pytest.raises(UsageError, match="no group 'nope' in the config"):
        restore_group(setup.app, "nope", datetime.now().astimezone())
    with pytest.raises(UsageError, match="give --into DSN"):
        restore_group(setup.app, "shop", datetime.now().astimezone())


def test_point_in_time_recovery_and_buckets_meet_at_the_second(
    wal_home, archiving_cluster, s3_server, s3_bucket
):
    """The database by PITR (base backup + WAL), the bucket from its history: a row and its
    object written in the chosen second are both there; those written after are not."""
    import yaml

    from drbackup.actions.backup_physical import backup_physical
    from tests.fixtures.walarchive import _chown_tree, switch_wal, wait_archived

    cluster = archiving_cluster(wal_home)
    wal_home.set_dsn(cluster.dsn())
    s3 = s3_server.client()
    s3.create_bucket(Bucket="photos")
    s3.put_bucket_versioning(Bucket="photos", VersioningConfiguration={"Status": "Enabled"})
    doc = yaml.safe_load(wal_home.config_path.read_text())
    # under the home: archive_command loads this config as the server's user
    doc["minio"] = {"files": minio_target(s3_server, wal_home.root, ["photos"])}
    doc["groups"] = {"shop": {"postgres": "app", "minio": ["files"], "references": [QUERY]}}
    wal_home.config_path.write_text(yaml.safe_dump(doc))
    _chown_tree(wal_home.root)
    app = wal_home.app()
    cluster.execute("CREATE TABLE attachments (id serial PRIMARY KEY, bucket text, key text)")
    backup_physical(app, "app")

    def upload(key: str) -> None:
        s3.put_object(Bucket="photos", Key=key, Body=key.encode())
        cluster.execute(
            "INSERT INTO attachments (bucket, key) VALUES ('photos', %s)", params=(key,)
        )

    upload("kept.txt")
    at = next_second()
    upload("at-the-second.txt")
    next_second()
    upload("after.txt")
    wait_archived(cluster, switch_wal(cluster))
    snapshot_target(app, "files")

    result = restore_group(
        app, "shop", at, into_dir=str(wal_home.root / "restored"), suffix="-pitr", start=True
    )
    try:
        assert (result.database["method"], result.database["reached"]) == (
            "pitr",
            at.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        )
        assert sorted(bucket_state(s3, "photos-pitr")) == ["at-the-second.txt", "kept.txt"]
        with result.physical.server.connect() as conn:
            rows = sorted(r[0] for r in conn.execute("SELECT key FROM attachments"))
        assert rows == ["at-the-second.txt", "kept.txt"]
        assert [(r.status, r.evidence["references"]) for r in result.references] == [("pass", 2)]
    finally:
        result.physical.stop()
