"""``drbackup key``: key files and the repository's access slots (rotation)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from drbackup.cli.render import echo_table
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
@click.pass_obj
def list_slots(state) -> None:
    """List the access slots that open the repository's master key."""
    repo = state.app.repository()
    rows = [
        [s["id"], s["kind"], s["kdf"]["name"], str(s["kdf"].get("n", "-"))]
        for s in repo.header["encryption"]["access_slots"]
    ]
    echo_table(["id", "kind", "kdf", "scrypt n"], rows)


@key.command("add")
@click.option("--passphrase-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
def add(state, passphrase_file: str | None, key_file: str | None) -> None:
    """Add a passphrase or key file that opens the repository (needs the current key)."""
    if bool(passphrase_file) == bool(key_file):
        raise UsageError("give exactly one of --passphrase-file or --key-file")
    repo = state.app.repository()
    if passphrase_file:
        passphrase = Path(passphrase_file).read_text(encoding="utf-8").rstrip("\n")
        if not passphrase:
            raise UsageError(f"{passphrase_file} is empty")
        slot = repo.add_access_slot(passphrase=passphrase)
    else:
        slot = repo.add_access_slot(key_file=keys.read_key_file(key_file))
    click.echo(f"added access slot {slot['id']} ({slot['kind']})")


@key.command("remove")
@click.argument("slot_id")
@click.pass_obj
def remove(state, slot_id: str) -> None:
    """Remove an access slot (the old passphrase stops working)."""
    state.app.repository().remove_access_slot(slot_id)
    click.echo(f"removed access slot {slot_id}")


COMMANDS = [key]
