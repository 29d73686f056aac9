"""``open_storage``: repository urls to backends (no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drbackup.errors import ConfigError
from drbackup.storage import open_storage
from drbackup.storage.local import LocalStorage
from drbackup.storage.s3 import S3Storage


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("file:///srv/backups", "/srv/backups"),
        ("file://localhost/srv/backups", "/srv/backups"),
        ("file:///srv/with%20space", "/srv/with space"),
        ("/srv/backups", "/srv/backups"),
        ("/srv/backups/", "/srv/backups"),
    ],
)
def test_local_urls(url, root):
    storage = open_storage(url)
    assert isinstance(storage, LocalStorage)
    assert storage.root == Path(root)


def test_relative_path_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = open_storage("backups")
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "backups"


def test_home_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert open_storage("~/repo").root == tmp_path / "repo"


@pytest.mark.parametrize(
    ("url", "bucket", "prefix", "normalized"),
    [
        ("s3://bucket", "bucket", "", "s3://bucket"),
        ("s3://bucket/", "bucket", "", "s3://bucket"),
        ("s3://bucket/repo", "bucket", "repo", "s3://bucket/repo"),
        ("s3://bucket/a/b/", "bucket", "a/b", "s3://bucket/a/b"),
        ("S3://bucket//a/b", "bucket", "a/b", "s3://bucket/a/b"),
    ],
)
def test_s3_urls(url, bucket, prefix, normalized):
    storage = open_storage(url)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.url) == (bucket, prefix, normalized)
    assert storage.capabilities.object_lock is False


def test_s3_options_reach_the_client():
    storage = open_storage(
        "s3://bucket/repo",
        {
            "endpoint_url": "http://127.0.0.1:9000",
            "region": "eu-west-1",
            "access_key_id": "AKID",
            "secret_access_key": "secret",
            "session_token": None,
            "path_style": True,
            "verify_tls": False,
            "part_size": 16 << 20,
            "max_concurrency": 2,
            "object_lock": ["COMPLIANCE", 30],
        },
    )
    client = storage._client
    assert client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert client.meta.region_name == "eu-west-1"
    assert client.meta.config.s3 == {"addressing_style": "path"}
    assert client.meta.config.retries == {"total_max_attempts": 5, "mode": "standard"}
    assert storage._transfer_config.multipart_chunksize == 16 << 20
    assert storage._transfer_config.max_in_memory_upload_chunks == 2
    assert storage.capabilities.object_lock is True


def test_virtual_host_addressing_when_not_path_style():
    storage = open_storage("s3://bucket", {"path_style": False})
    assert storage._client.meta.config.s3 == {"addressing_style": "auto"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "empty repository url"),
        ("gs://bucket/repo", "unsupported repository url: gs://bucket/repo"),
        ("sftp://host/path", "unsupported repository url: sftp://host/path"),
        ("s3:bucket", "s3 url has no bucket: s3:bucket"),
        ("s3:///repo", "s3 url has no bucket: s3:///repo"),
        ("file://host/srv", "invalid file url: file://host/srv"),
        ("s3://bucket/a/../b", "invalid s3 prefix: 'a/../b'"),
    ],
)
def test_bad_urls_are_config_errors(url, message):
    with pytest.raises(ConfigError) as info:
        open_storage(url)
    assert str(info.value) == message
    assert info.value.hint


def test_unknown_scheme_hint_lists_accepted_forms():
    with pytest.raises(ConfigError) as info:
        open_storage("ftp://x/y")
    assert info.value.hint == "use file:///path, a plain path, or s3://bucket/prefix"


def test_unknown_s3_option_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown s3 option: bogus, endpoint"):
        open_storage("s3://bucket", {"endpoint": "x", "bogus": 1})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"part_size": 1 << 20}, "s3 part_size 1048576 is below the s3 minimum of 5242880"),
        ({"max_concurrency": 0}, "s3 max_concurrency and max_attempts must be at least 1"),
        ({"object_lock": ("FOREVER", 1)}, "invalid s3 object lock: 'FOREVER' for 1 days"),
        ({"object_lock": ("GOVERNANCE", 0)}, "invalid s3 object lock: 'GOVERNANCE' for 0 days"),
    ],
)
def test_bad_s3_options_are_config_errors(options, message):
    with pytest.raises(ConfigError) as info:
        open_storage("s3://bucket", options)
    assert str(info.value) == message
