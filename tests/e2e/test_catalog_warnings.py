"""A catalog that cannot be written is a warning on stderr, never a failed backup."""

from __future__ import annotations

from drbackup.catalog import Catalog


def test_a_backup_with_a_broken_catalog_succeeds_and_says_so(local_repo_config, run_cli):
    good_catalog = local_repo_config.data["catalog"]
    blocker = local_repo_config.tmp_path / "blocker"
    blocker.write_text("a file where the catalog's directory should be\n")
    local_repo_config.data["catalog"] = f"sqlite:///{blocker / 'catalog.db'}"
    local_repo_config.write()

    result = run_cli("backup", "postgres", "app")
    assert result.code == 0, result.stderr
    assert result.stdout.startswith("backup app/") and " complete: 1 database(s)" in result.stdout
    assert result.error_lines[0].startswith("backup app: dumped ")  # progress, not a tty
    assert result.error_lines[1:] == [
        "drbackup: warning: catalog not updated: cannot create the catalog directory "
        f"{blocker}: not a directory"
    ]

    # The backup is in the repository (the truth); a rebuilt catalog knows it.
    listed = run_cli("list", "--json")
    assert listed.code == 0 and [b["target"] for b in listed.json()] == ["app"]
    local_repo_config.data["catalog"] = good_catalog
    local_repo_config.write()
    assert run_cli("catalog", "rebuild").code == 0
    with Catalog.open(good_catalog) as catalog:
        assert [b.backup_id for b in catalog.list_backups("app")] == [listed.json()[0]["backup_id"]]
        assert catalog.runs(kind="backup") == []  # the run itself could not be recorded
