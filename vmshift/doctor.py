"""`vmshift doctor` (being written)."""

import click

from vmshift.cliutil import json_option, not_built


@click.command()
@json_option
def doctor(json_mode: bool) -> None:
    """Check what this host can do: KVM, libguestfs, libvirt, userfaultfd, versions."""
    not_built("doctor", 2)
