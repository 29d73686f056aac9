"""``drbackup key``: key files and the repository's access slots (rotation)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from drbackup.cli.render import echo_json, echo_table
from drbackup.codec import keys
from drbackup.errors import UsageError


@click.group("key")
def key() -> None:
    """Key files and access slots (passphrase rotation)."""


@key.command("generate")
@click.argument("path", type=click.Path(dir_okay=False, writable=True))
@click.option(
    "--x25519", is_flag=True, help="Write an X25519 private key and print its public key."
)
def generate(path: str, x25519: bool) -> None:
    """Write a new random 32-byte key (base64) to PATH, readable only by you."""
    if os.path.exists(path):
        raise UsageError(f"{path} exists; refusing to overwrite a key")
    material, public = keys.generate_x25519() if x25519 else (os.urandom(32), None)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(keys.b64(material) + "\n")
    click.echo(f"wrote {path}")
    if public:
        click.echo(f"public key: {keys.b64(public)}")


@key.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the slots as a JSON list.")
@click.pass_obj
def list_slots(state, as_json: bool) -> None:
    """List the access slots that open the repository's master key.

    'current' marks the slot the configured passphrase or key file opens; slots made
    before drbackup recorded dates and labels show '-'.
    """
    repo = state.app.repository()
    current = repo.keyring.opened_slot
    if as_json:
        echo_json([_slot_json(s, current) for s in repo.header["encryption"]["access_slots"]])
        return
    rows = [_slot_row(s, current) for s in repo.header["encryption"]["access_slots"]]
    echo_table(["id", "kind", "kdf", "scrypt n", "created", "label", "current"], rows)


def _slot_row(slot: dict, current: str | None) -> list[str]:
    kdf = slot.get("kdf") if isinstance(slot.get("kdf"), dict) else {}
    created = str(slot.get("created_at") or "-")
    return [
        str(slot.get("id", "?")),
        str(slot.get("kind", "?")),
        str(kdf.get("name", "-")),
        str(kdf.get("n", "-")),
        created.replace("T", " ").replace("+00:00", "Z"),
        str(slot.get("label") or "-"),
        "yes" if current is not None and slot.get("id") == current else "-",
    ]


def _slot_json(slot: dict, current: str | None) -> dict:
    """One slot in ``key list --json`` (keys documented in docs/operations.md)."""
    kdf = slot.get("kdf") if isinstance(slot.get("kdf"), dict) else {}
    return {
        "id": slot.get("id"),
        "kind": slot.get("kind"),
        "kdf": kdf.get("name"),
        "scrypt_n": kdf.get("n"),
        "created_at": slot.get("created_at"),
        "label": slot.get("label"),
        "current": current is not None and slot.get("id") == current,
    }


@key.command("add")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--label",
    metavar="TEXT",
    help="Who or what holds the new secret (e.g. 'break-glass safe'); stored in clear.",
)
@click.pass_obj
def add(state, passphrase_file: str | None, key_file: str | None, label: str | None) -> None:
    """Add a passphrase or key file that opens the repository (needs the current key)."""
    if bool(passphrase_file) == bool(key_file):
        raise UsageError("give exactly one of --passphrase-file or --key-file")
    repo = state.app.repository()
    if passphrase_file:
        passphrase = Path(passphrase_file).read_text(encoding="utf-8").rstrip("\n")
        if not passphrase:
            raise UsageError(f"{passphrase_file} is empty")
        slot = repo.add_access_slot(passphrase=passphrase, label=label)
    else:
        slot = repo.add_access_slot(key_file=keys.read_key_file(key_file), label=label)
    click.echo(f"added access slot {slot['id']} ({slot['kind']})")


@key.command("remove")
@click.argument("slot_id")
@click.option(
    "--remove-current",
    is_flag=True,
    help="Remove it even if the configured passphrase or key file opens the repository "
    "with it (the config then needs another slot's secret).",
)
@click.pass_obj
def remove(state, slot_id: str, remove_current: bool) -> None:
    """Remove an access slot (the old passphrase stops working).

    Refuses the slot the configured passphrase or key file opens (see 'key list')
    unless --remove-current is given.
    """
    repo = state.app.repository()
    was_current = slot_id == repo.keyring.opened_slot
    repo.remove_access_slot(slot_id, remove_current=remove_current)
    click.echo(f"removed access slot {slot_id}")
    if was_current:
        click.echo(
            "drbackup: warning: the configured passphrase or key file opened the repository "
            "with that slot: set repository.encryption to another slot's secret",
            err=True,
        )


COMMANDS = [key]
