"""What the runbooks find when they start: a repository on the S3 test server that a backup
host (this checkout's ``drbackup``, a config of its own) has written, and the secrets a
restore host gets from the vault, as files."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.runbooks.conftest import CHECKOUT_BIN

PASSPHRASE = "runbook passphrase: correct horse battery staple"


def write_secrets(directory: Path, secrets: dict[str, str], owner=None) -> Path:
    """One file per secret (mode 0600) in ``directory``; ``owner`` (uid, gid) for a reader
    that is not root (the server's user, the image's user)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, value in secrets.items():
        (directory / name).write_text(value + "\n")
        (directory / name).chmod(0o600)
        if owner is not None:
            os.chown(directory / name, *owner)
    return directory


def repository_secrets(s3_server) -> dict[str, str]:
    """The restore runbooks' secret files: ``ak``, ``sk``, ``drbackup-passphrase``."""
    return {
        "ak": s3_server.access_key_id,
        "sk": s3_server.secret_access_key,
        "drbackup-passphrase": PASSPHRASE,
    }


def repository_section(s3_server, bucket: str, secrets: Path) -> dict:
    """``repository:`` of ``s3://BUCKET/prod`` with the files of :func:`repository_secrets`."""
    s3 = {
        "endpoint_url": s3_server.endpoint_url,
        "region": s3_server.region,
        "access_key_id_file": str(secrets / "ak"),
        "secret_access_key_file": str(secrets / "sk"),
    }
    encryption = {"passphrase_file": str(secrets / "drbackup-passphrase")}
    return {"url": f"s3://{bucket}/prod", "s3": s3, "encryption": encryption}


@dataclass
class BackupHost:
    """A config naming the repository and ``targets``; :meth:`json` runs this checkout's
    ``drbackup -c CONFIG ARGS --json``."""

    config: Path

    def run(self, *args: str) -> subprocess.CompletedProcess:
        argv = [f"{CHECKOUT_BIN}/drbackup", "-c", str(self.config), *args]
        env = {**os.environ, "DRBACKUP_HOME": str(self.config.parent / "backup-host-home")}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, f"drbackup {' '.join(args)}: {proc.stderr}"
        return proc

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "--json").stdout)


def make_backup_host(tmp_path: Path, s3_server, bucket: str, **targets) -> BackupHost:
    """An initialised repository at ``s3://BUCKET/prod``; ``targets`` as ``postgres=...``,
    ``minio=...`` sections of the config."""
    secrets = write_secrets(tmp_path / "backup-host-secrets", repository_secrets(s3_server))
    config = tmp_path / "backup-host.yaml"
    doc = {"repository": repository_section(s3_server, bucket, secrets), **targets}
    config.write_text(yaml.safe_dump(doc))
    host = BackupHost(config)
    host.run("init", "--scrypt-log-n", "10")
    return host


def wait_until_after(moment: dt.datetime) -> None:
    """Poll the clock until it is past ``moment`` (backups land in distinct seconds)."""
    while dt.datetime.now(dt.UTC) <= moment:
        time.sleep(0.01)


def second_after(recovery_point: str) -> dt.datetime:
    """The whole second after a recovery point: a time whose state is still that backup's."""
    point = dt.datetime.fromisoformat(recovery_point).replace(microsecond=0)
    return point + dt.timedelta(seconds=1)
