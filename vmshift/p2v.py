"""CLI for `vmshift p2v` (not built yet)."""

import click

from vmshift.cliutil import json_option, not_built


@click.command(name="p2v")
@json_option
def p2v(json_mode: bool) -> None:
    """Convert a physical machine's disks through the same pipeline."""
    not_built("p2v", 9)
