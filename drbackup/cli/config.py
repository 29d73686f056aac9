"""``drbackup config check``."""

from __future__ import annotations

import click
import yaml

from drbackup.cli.render import echo_json


@click.group("config")
def config() -> None:
    """Inspect the configuration."""


@config.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
@click.pass_obj
def check(state, as_json: bool) -> None:
    """Validate the configuration and print it, with secrets redacted."""
    from drbackup.config import redacted_dict

    data = redacted_dict(state.app.config)
    if as_json:
        echo_json(data)
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
    click.echo("config ok", err=True)


COMMANDS = [config]
