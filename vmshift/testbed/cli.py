"""CLI for `vmshift testbed` (not built yet)."""

import click

from vmshift.cliutil import json_option, not_built


@click.group(name="testbed")
@json_option
def testbed(json_mode: bool) -> None:
    """Start, stop and show local libvirt test hosts."""
    not_built("testbed", 3)
