"""docs/deploy.md, run as written with the image of this checkout: the build, a command in
the image, the daemon run by hand (health from outside, the HEALTHCHECK, a graceful stop),
and the image as a restore host listing a repository with the restore runbook's config."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

from tests.fixtures.s3server import free_port
from tests.image.podman import ENV, IMAGE, IMAGE_UID, build_image, podman
from tests.runbooks.backup_host import (
    PASSPHRASE,
    make_backup_host,
    repository_secrets,
    repository_section,
    write_secrets,
)
from tests.runbooks.conftest import SYSTEM_PATH
from tests.runbooks.markdown import ROOT, load_runbook
from tests.runbooks.runner import RunbookRun

pytestmark = pytest.mark.image
# Podman on a host without systemd says so for every container with a HEALTHCHECK.
PODMAN_WITHOUT_SYSTEMD = r'level=error msg=".*unable to get systemd connection'


@pytest.fixture
def shared_dir():
    """``shared_dir()``: a new directory the image's user can read, under /tmp; removed
    after the test."""
    made: list[Path] = []

    def make() -> Path:
        made.append(Path(tempfile.mkdtemp(prefix="drbackup-runbook-")))
        made[-1].chmod(0o755)
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def repository(tmp_path, s3_server, s3_bucket, pg_cluster_factory):
    """``s3://BUCKET/prod`` holding one dump of ``app``."""
    source = pg_cluster_factory()
    source.create_database("app")
    source.execute("CREATE TABLE orders (id int PRIMARY KEY)", dbname="app")
    targets = {"app": {"dsn": source.dsn("app"), "databases": ["app"]}}
    host = make_backup_host(tmp_path, s3_server, s3_bucket, postgres=targets)
    host.run("backup", "postgres", "app")
    return s3_bucket


@pytest.fixture
def podman_names():
    """A container and a volume name of this test's own, removed afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = (f"drbackup-runbook-{suffix}", f"drbackup-runbook-state-{suffix}")
    yield names
    podman("rm", "--force", names[0])
    podman("volume", "rm", "--force", names[1])


def test_the_deploy_page(repository, s3_server, podman_names, shared_dir, shell_factory):
    build_image()  # the base image exists: the page shows a build on such a machine
    host, restore_host = shared_dir(), shared_dir()
    image_user = (IMAGE_UID, IMAGE_UID)
    write_secrets(host / "secrets", {
        "s3-access-key-id": s3_server.access_key_id,
        "s3-secret-access-key": s3_server.secret_access_key,
        "drbackup-passphrase": PASSPHRASE,
    }, image_user)  # fmt: skip
    secrets = write_secrets(restore_host / "secrets", repository_secrets(s3_server), image_user)
    config = restore_host / "restore.yaml"  # the restore runbook's (docs/operations.md)
    config.write_text(yaml.safe_dump({"repository": repository_section(s3_server, repository, secrets)}))  # fmt: skip
    container, volume = podman_names
    port = str(free_port())
    values = {
        "IMAGE": IMAGE,
        "HOST_DIR": str(host),
        "CONTAINER": container,
        "VOLUME": volume,
        "PORT": port,
        "REPO_URL": f"s3://{repository}/prod",
        "S3_ENDPOINT": s3_server.endpoint_url,
        "SECRETS": str(secrets),
        "CONFIG": str(config),
    }
    shell = shell_factory(ROOT, path=SYSTEM_PATH, IMAGE=IMAGE, CONTAINERS_CONF=ENV["CONTAINERS_CONF"])  # fmt: skip
    run = RunbookRun(load_runbook("deploy", ["docs/deploy.md"]), values, shell, ignore=(PODMAN_WITHOUT_SYSTEMD,))  # fmt: skip
    run.run_through("podman stop -t 90")
    state = podman("inspect", "--format", "{{.State.ExitCode}} {{.State.Status}}", container)
    assert state.stdout.split() == ["0", "exited"]  # a graceful stop
    run.run_rest()
