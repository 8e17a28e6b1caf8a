"""Options and helpers shared by every vmshift command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from vmshift import units
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


class UnitValue(click.ParamType):
    """A value with units, parsed by one of vmshift.units' parsers (exit 2 naming the
    option when it does not parse)."""

    def __init__(self, name: str, parse: Callable[[str], int]) -> None:
        self.name, self._parse = name, parse

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return self._parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


# --bandwidth: 100M, 1G, 512K per second (a bare number is MiB/s) -> bytes/s.
BANDWIDTH = UnitValue("bandwidth", units.parse_bandwidth)
# A size such as 64k, 2M or 1.5G (powers of 1024; a bare number is bytes) -> bytes.
SIZE = UnitValue("size", units.parse_size)


def bandwidth_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--bandwidth RATE, the same flag and syntax wherever a transfer can be capped."""
    return click.option("--bandwidth", type=BANDWIDTH, default=None, metavar="RATE",
                        help=f"Cap {what} at RATE per second: 100M, 1G, 512K "
                             "(powers of 1024); a bare number is MiB/s.")


def on_interrupt_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--on-interrupt finish|abort: what Ctrl-C (or SIGTERM) does to WHAT is running;
    nothing new starts either way."""
    return click.option("--on-interrupt", type=click.Choice(["finish", "abort"]),
                        default="finish", show_default=True,
                        help=f"Ctrl-C starts no more; running {what} finish (a second "
                             "Ctrl-C aborts them), or are aborted (never after a post-copy "
                             "switch).")


def virtio_win_option(f: Callable[..., Any]) -> Callable[..., Any]:
    # --driver-source is its older name (inspect), kept so scripts go on working.
    return click.option("--virtio-win", "--driver-source", "virtio_win", metavar="PATH",
                        envvar="VIRTIO_WIN", type=click.Path(exists=True, path_type=Path),
                        help="A virtio-win ISO or directory to install Windows drivers from "
                             "(default: $VIRTIO_WIN).")(f)


def allow_emulated_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--allow-emulated", is_flag=True,
                        help="A Windows guest with no virtio drivers (none installed, none "
                             "in --virtio-win) gets SATA disks and e1000e NICs instead of "
                             "being refused.")(f)


def not_built(command: str, issue: int) -> NoReturn:
    """A command whose capability does not exist yet says so and exits 1."""
    raise NotBuilt(f"`vmshift {command}` is not built yet (tracked in issue {issue})")


def not_built_command(name: str, issue: int, summary: str, *,
                      full_name: str | None = None) -> click.Command:
    """A placeholder for a command not built yet: --help describes it; any other use,
    whatever its arguments, says so in one line and exits 1 (never a usage error).
    FULL_NAME is what the message calls it (``plan run`` for a subcommand)."""

    @click.command(name=name, help=f"{summary.rstrip('.')} (not built yet).",
                   context_settings={"ignore_unknown_options": True,
                                     "allow_extra_args": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="...")
    @json_option
    def command(args: tuple[str, ...], json_mode: bool) -> None:
        not_built(full_name or name, issue)

    return command
