"""CLI for `vmshift plan` (not built yet)."""

import click

from vmshift.cliutil import json_option, not_built


@click.group(name="plan")
@json_option
def plan(json_mode: bool) -> None:
    """Validate, dry-run, run and resume CSV migration waves."""
    not_built("plan", 8)
