"""CLI for `vmshift migrate` and `vmshift evacuate`."""

import click

from vmshift.cliutil import json_option, not_built


@click.group()
def migrate() -> None:
    """Live, suspended, offline and storage migrations between libvirt hosts."""


@migrate.command("check")
@json_option
def migrate_check(json_mode: bool) -> None:
    """Pre-flight checks for a migration."""
    not_built("migrate check", 7)


@click.command()
@json_option
def evacuate(json_mode: bool) -> None:
    """Move every VM off a host before maintenance."""
    not_built("evacuate", 10)
