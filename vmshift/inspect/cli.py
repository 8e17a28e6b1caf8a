"""CLI for `vmshift inspect` (not built yet)."""

import click

from vmshift.cliutil import json_option, not_built


@click.command(name="inspect")
@json_option
def inspect_cmd(json_mode: bool) -> None:
    """Look inside disk images and run the pre-flight rules."""
    not_built("inspect", 4)
