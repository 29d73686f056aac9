"""``drbackup key``: slots with their creation date, label and the current one; ``key remove``
refuses the slot the configuration opens the repository with; scrypt parameters are bounded.
"""

from __future__ import annotations

import json
import time

import pytest
import yaml

from tests.e2e.conftest import PASSPHRASE

NEW_PASSPHRASE = "a second passphrase for the on-call team"


@pytest.fixture
def repo(tmp_path, monkeypatch, run_cli):
    """A local repository (no targets), its passphrase in DRBACKUP_PASSPHRASE."""
    root = tmp_path / "repo"
    config = {"repository": {"url": str(root)}, "catalog": f"sqlite:///{tmp_path / 'c.db'}"}
    path = tmp_path / "drbackup.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DRBACKUP_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("DRBACKUP_CONFIG", str(path))
    assert run_cli("init", "--scrypt-log-n", "10").code == 0
    return root


def slot_table(run_cli) -> list[list[str]]:
    listed = run_cli("key", "list")
    assert listed.code == 0, listed.stderr
    header, *rows = [line.split("  ") for line in listed.stdout.splitlines()]
    clean = [[cell.strip() for cell in row if cell.strip()] for row in [header, *rows]]
    assert clean[0] == ["ID", "KIND", "KDF", "SCRYPT N", "CREATED", "LABEL", "CURRENT"]
    return clean[1:]


def edit_header(root, change) -> None:
    path = root / "drbackup.repo"
    header = json.loads(path.read_text())
    change(header["encryption"]["access_slots"])
    path.write_text(json.dumps(header))


def test_key_list_marks_the_current_slot_and_remove_refuses_it(
    repo, run_cli, tmp_path, monkeypatch
):
    ((first, kind, kdf, n, created, label, current),) = slot_table(run_cli)
    assert (kind, kdf, n, label, current) == ("passphrase", "scrypt", "1024", "-", "yes")
    assert created.endswith("Z") and created[:2] == "20"

    secret = tmp_path / "new-passphrase"
    secret.write_text(NEW_PASSPHRASE + "\n")
    added = run_cli("key", "add", "--passphrase-file", secret, "--label", "on-call team")
    assert added.code == 0, added.stderr
    second = added.stdout.split()[3]
    assert added.stdout == f"added access slot {second} (passphrase)\n"
    rows = slot_table(run_cli)
    assert [(r[0], r[5], r[6]) for r in rows] == [
        (first, "-", "yes"),
        (second, "on-call team", "-"),
    ]

    refused = run_cli("key", "remove", first)
    assert (refused.code, refused.stdout) == (2, "")
    assert refused.error_lines == [
        f"drbackup: error: refusing to remove access slot {first}: the configured passphrase "
        "or key file opens the repository with it",
        "hint: switch the config to another slot's secret first (drbackup key add, then update "
        "repository.encryption), or add --remove-current",
    ]
    assert len(slot_table(run_cli)) == 2

    monkeypatch.setenv("DRBACKUP_PASSPHRASE", NEW_PASSPHRASE)
    assert [r[6] for r in slot_table(run_cli)] == ["-", "yes"]
    removed = run_cli("key", "remove", first)
    assert (removed.code, removed.stdout) == (0, f"removed access slot {first}\n")
    assert [r[0] for r in slot_table(run_cli)] == [second]


def test_remove_current_needs_the_option_and_says_what_it_did(repo, run_cli, tmp_path):
    secret = tmp_path / "new-passphrase"
    secret.write_text(NEW_PASSPHRASE + "\n")
    assert run_cli("key", "add", "--passphrase-file", secret).code == 0
    (first, _), (second, _) = [(r[0], r[6]) for r in slot_table(run_cli)]
    forced = run_cli("key", "remove", first, "--remove-current")
    assert (forced.code, forced.stdout) == (0, f"removed access slot {first}\n")
    assert forced.error_lines == [
        "drbackup: warning: the configured passphrase or key file opened the repository with "
        "that slot: set repository.encryption to another slot's secret"
    ]
    assert run_cli("key", "list").code == 1  # the configured passphrase opens nothing now


def test_slots_from_before_dates_and_labels_show_a_dash(repo, run_cli):
    edit_header(repo, lambda slots: slots[0].pop("created_at"))
    ((_, _, _, _, created, label, current),) = slot_table(run_cli)
    assert (created, label, current) == ("-", "-", "yes")


def test_a_label_is_one_short_printable_line(repo, run_cli, tmp_path):
    secret = tmp_path / "new-passphrase"
    secret.write_text(NEW_PASSPHRASE + "\n")
    bad = run_cli("key", "add", "--passphrase-file", secret, "--label", "x" * 65)
    assert bad.code == 2
    assert bad.error_lines[0] == (
        "drbackup: error: an access slot label must be one printable line of at most 64 characters"
    )


def test_a_planted_costly_slot_is_skipped_or_refused_never_derived(repo, run_cli):
    planted_n = 1 << 21  # ~2 GiB and ~30 s if it were derived

    def plant(slots):
        planted = {**slots[0], "id": "planted0", "kdf": {**slots[0]["kdf"], "n": planted_n}}
        slots.insert(0, planted)

    edit_header(repo, plant)
    started = time.monotonic()
    listed = run_cli("list")
    assert listed.code == 0, listed.stderr
    assert time.monotonic() - started < 10

    edit_header(repo, lambda slots: slots.pop(1))  # only the planted slot is left
    refused = run_cli("list")
    assert refused.code == 2
    assert refused.error_lines == [
        "drbackup: error: refusing passphrase access slot planted0 of the repository header: its "
        "scrypt n=2097152, r=8, p=1 (2048 MiB) is above the limit of n*r*p 8388608 and "
        "1024 MiB, and no other slot opens",
        "hint: drbackup never makes such a slot (init allows --scrypt-log-n up to 20): restore "
        "drbackup.repo from a copy, or open with another passphrase or key file and remove the "
        "slot with 'drbackup key remove'",
    ]


def test_init_refuses_scrypt_costs_above_the_bound(run_cli, tmp_path, monkeypatch):
    path = tmp_path / "drbackup.yaml"
    path.write_text(yaml.safe_dump({"repository": {"url": str(tmp_path / "r")}}))
    monkeypatch.setenv("DRBACKUP_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("DRBACKUP_HOME", str(tmp_path / "home"))
    refused = run_cli("-c", path, "init", "--scrypt-log-n", "21")
    assert refused.code == 2
    assert "21 is not in the range 10<=x<=20" in refused.stderr
    assert not (tmp_path / "r").exists()
