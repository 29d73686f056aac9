"""``drbackup init``."""

from __future__ import annotations

import click

from drbackup.actions.repository import init_repository
from drbackup.cli.render import echo_json
from drbackup.codec.keys import MAX_SCRYPT_LOG_N


@click.command("init")
@click.option(
    "--public-key-mode",
    is_flag=True,
    help="Writers hold only a public key and cannot read; reading needs the passphrase/key.",
)
@click.option(
    "--scrypt-log-n",
    type=click.IntRange(10, MAX_SCRYPT_LOG_N),
    default=16,
    show_default=True,
    help="scrypt cost for the passphrase (memory = 128 * 8 * 2^N bytes).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print {repository_id, url, encryption} as JSON."
)
@click.pass_obj
def init(state, public_key_mode: bool, scrypt_log_n: int, as_json: bool) -> None:
    """Create a new, empty repository at repository.url."""
    repo = init_repository(
        state.app,
        public_key_mode=public_key_mode,
        scrypt_params={"n": 1 << scrypt_log_n, "r": 8, "p": 1},
    )
    enc = repo.header["encryption"]
    if as_json:
        echo_json(init_json(repo.id, repo.url, enc))
        return
    click.echo(f"created repository {repo.id} at {repo.url}")
    click.echo(f"encryption: {enc['mode']}, {enc['cipher']}")
    if enc["public_key"]:
        click.echo(f"public key: {enc['public_key']}")
        click.echo("writers need only: repository.encryption.public_key set to the key above")
    click.echo("keep the passphrase or key file safe: without it the backups cannot be read")


def init_json(repository_id: str, url: str, enc: dict) -> dict:
    """``init --json``: the keys docs/operations.md documents."""
    return {
        "repository_id": repository_id,
        "url": url,
        "encryption": {
            "mode": enc["mode"],
            "cipher": enc["cipher"],
            "public_key": enc["public_key"] or None,
        },
    }


COMMANDS = [init]
