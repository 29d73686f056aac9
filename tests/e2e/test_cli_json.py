"""``--json`` on the commands scripts read (issue 20): ``init``, ``key list``,
``catalog rebuild`` and ``daemon --check`` print JSON with the keys their docs page lists.
(``drill verify-report --json`` is checked beside its signed drill in test_drill_cli.py.)
"""

from __future__ import annotations

import yaml

from tests.e2e.conftest import PASSPHRASE


def test_init_json_names_the_repository_and_its_encryption(tmp_path, monkeypatch, run_cli):
    root = tmp_path / "repo"
    config = {"repository": {"url": str(root)}, "catalog": f"sqlite:///{tmp_path / 'c.db'}"}
    path = tmp_path / "drbackup.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRBACKUP_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("DRBACKUP_CONFIG", str(path))

    result = run_cli("init", "--scrypt-log-n", "10", "--json")
    assert result.code == 0, result.stderr
    data = result.json()
    assert set(data) == {"repository_id", "url", "encryption"}
    assert data["repository_id"] and str(root) in data["url"]
    assert data["encryption"]["mode"] == "symmetric"
    assert data["encryption"]["public_key"] is None
    assert data["encryption"]["cipher"]
    assert (root / "drbackup.repo").exists()


def test_key_list_json_marks_the_current_slot(local_repo_config, run_cli):
    listed = run_cli("key", "list", "--json")
    assert listed.code == 0, listed.stderr
    (slot,) = listed.json()
    assert set(slot) == {"id", "kind", "kdf", "scrypt_n", "created_at", "label", "current"}
    assert (slot["kind"], slot["kdf"], slot["scrypt_n"]) == ("passphrase", "scrypt", 1024)
    assert (slot["label"], slot["current"]) == (None, True)
    assert slot["created_at"].startswith("20")


def test_catalog_rebuild_json_counts_what_it_found(local_repo_config, pg_db, run_cli, tmp_path):
    pg_db.execute("CREATE TABLE t (n integer); INSERT INTO t VALUES (1)")
    assert run_cli("backup", "postgres", "app").code == 0
    (tmp_path / "catalog.db").unlink()  # the catalog is lost: the repository is the truth

    rebuilt = run_cli("catalog", "rebuild", "--json")
    assert rebuilt.code == 0, rebuilt.stderr
    data = rebuilt.json()
    assert data == {
        "repository": data["repository"],
        "added": 1,
        "removed": 0,
        "updated": 0,
        "unchanged": 0,
        "unreadable": [],
    }
    assert str(local_repo_config.local_root) in data["repository"]
    again = run_cli("catalog", "rebuild", "--json").json()
    assert (again["added"], again["unchanged"]) == (0, 1)


def test_daemon_check_json_lists_the_jobs(local_repo_config, run_cli, tmp_path):
    schedules = tmp_path / "schedules"
    schedules.mkdir()
    jobs = {"jobs": {"nightly": {"kind": "backup", "cron": "0 2 * * *", "targets": ["app"]}}}
    (schedules / "jobs.yaml").write_text(yaml.safe_dump(jobs), encoding="utf-8")

    checked = run_cli("daemon", "--schedules", schedules, "--check", "--json")
    assert checked.code == 0, checked.stderr
    (job,) = checked.json()
    assert job == {
        "name": "nightly",
        "kind": "backup",
        "cron": "0 2 * * *",
        "timezone": "UTC",
        "targets": ["app"],
        "source": job["source"],
    }
    assert job["source"].endswith("jobs.yaml")

    alone = run_cli("daemon", "--schedules", schedules, "--json")
    assert (alone.code, alone.stdout) == (2, "")
    assert alone.error_lines == [
        "drbackup: error: --json goes with --check",
        "hint: drbackup daemon --check --json",
    ]
