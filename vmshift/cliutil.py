"""Options and helpers shared by every vmshift command."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import click

from vmshift.errors import NotBuilt

# Set by --json's callback so that main() can report an error as a JSON
# document too, even when the command never got to run.
JSON_MODE = {"on": False}


def _remember_json(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        JSON_MODE["on"] = True
    return value


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """--json: one final JSON document on stdout; progress as JSON lines on stderr."""
    return click.option(
        "--json", "json_mode", is_flag=True, callback=_remember_json, expose_value=True,
        is_eager=True,
        help="Print one JSON document (with schema_version) on stdout; progress "
             "goes to stderr as JSON lines.",
    )(f)


def dry_run_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--dry-run", is_flag=True,
                        help="Check and print the plan; change nothing.")(f)


def virt_type_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--virt-type", type=click.Choice(["auto", "kvm", "qemu"]), default="auto",
        show_default=True,
        help="Domain type to write: kvm, qemu (TCG), or auto (what `vmshift doctor` detects).",
    )(f)


def not_built(command: str, issue: int) -> NoReturn:
    """A command whose capability does not exist yet says so and exits 1."""
    raise NotBuilt(f"`vmshift {command}` is not built yet (tracked in issue {issue})")
