"""The ``vmshift`` command line: a click group whose commands live beside
the code they drive (``vmshift/<area>/cli.py``)."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from vmshift import SCHEMA_VERSION, __version__
from vmshift.cliutil import JSON_MODE
from vmshift.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_REFUSED, VmshiftError
from vmshift.output import emit_json, to_jsonable

VERBOSE = {"on": False}


# Each area owns its commands; a command's module is imported only when that
# command runs (or when --help lists them all), so `vmshift convert disk` does
# not pay for importing pyvmomi, guestfs and the migration engine.
LAZY_COMMANDS = {
    "doctor": "vmshift.doctor:doctor",
    "testbed": "vmshift.testbed.cli:testbed",
    "inspect": "vmshift.inspect.cli:inspect_cmd",
    "convert": "vmshift.convert.disk_cli:convert",
    "vmx2xml": "vmshift.convert.cli:vmx2xml",
    "vsphere": "vmshift.convert.vsphere.cli:vsphere",
    "ova": "vmshift.convert.cli:ova",
    "migrate": "vmshift.migrate.cli:migrate",
    "evacuate": "vmshift.migrate.evacuate.cli:evacuate",
    "maintenance": "vmshift.migrate.evacuate.cli:maintenance_cmd",
    "plan": "vmshift.plan.cli:plan",
    "p2v": "vmshift.p2v:p2v",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in LAZY_COMMANDS and name not in self.commands:
            module, attr = LAZY_COMMANDS[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vmshift")
@click.option("-v", "--verbose", is_flag=True, help="Log what is being done, to stderr.")
def cli(verbose: bool) -> None:
    """Move virtual machines onto KVM and between KVM hosts.

    Exit codes: 0 ok, 1 operation failed, 2 bad input or usage,
    3 refused by blocker findings.
    """
    VERBOSE["on"] = verbose
    # logging costs 9 ms to import; only the migration monitor logs (its module
    # is imported before this callback runs), so the disk commands skip it.
    if verbose or "logging" in sys.modules:
        import logging

        logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                            format="vmshift: %(name)s: %(message)s", stream=sys.stderr)


# The "outcome" of a command's own document when it ends in an error (exit 1 or 3).
OUTCOMES = {EXIT_FAILED: "failed", EXIT_BAD_INPUT: "bad_input", EXIT_REFUSED: "blocked"}


def _report_error(message: str, code: int, detail: object = None,
                  document: tuple[str, dict[str, object]] | None = None,
                  lines: list[str] | None = None) -> None:
    """One line on stderr (one per problem when the error lists several); with --json
    also the one document on stdout: the command's own (blocked inspection, failed
    doctor check, plan problems...) when it gave one, else an error."""
    for line in lines or [message]:
        click.echo(f"vmshift: error: {line}", err=True)
    if not JSON_MODE["on"]:
        return
    if document is not None:
        kind, payload = document
        emit_json(kind, {**payload, "outcome": payload.get("outcome", OUTCOMES[code])})
    else:
        emit_json("error", {"error": {"message": message, "exit_code": code,
                                      "detail": to_jsonable(detail)}})


def _usage_message(exc: click.ClickException) -> str:
    """click's message, prefixed with the command it is about, on one line."""
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path.removeprefix("vmshift").strip() if ctx else ""
    message = " ".join(exc.format_message().split())
    return f"{where}: {message}" if where else message


def main(argv: list[str] | None = None) -> int:
    """Entry point: map every failure to the exit-code convention."""
    args = sys.argv[1:] if argv is None else argv
    JSON_MODE["on"] = False  # per invocation: main() may run several times in one process
    try:
        code = cli.main(args=args, prog_name="vmshift", standalone_mode=False)
        # With standalone_mode=False click returns ctx.exit(N)'s N instead of raising.
        if isinstance(code, int) and code:
            return code
    except VmshiftError as exc:
        _report_error(exc.message, exc.exit_code, exc.detail, exc.document, exc.lines)
        return exc.exit_code
    except click.exceptions.Abort:
        _report_error("interrupted", EXIT_FAILED)
        return EXIT_FAILED
    except click.ClickException as exc:
        # A usage error can come before --json's callback ran (an unknown option).
        JSON_MODE["on"] = JSON_MODE["on"] or "--json" in args
        code = EXIT_BAD_INPUT if isinstance(exc, click.UsageError) else exc.exit_code
        _report_error(_usage_message(exc), code)
        return code
    except KeyboardInterrupt:
        _report_error("interrupted", EXIT_FAILED)
        return EXIT_FAILED
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # a bug: one line, the traceback only with -v
        if VERBOSE["on"]:
            traceback.print_exc()
        _report_error(f"internal error: {type(exc).__name__}: {exc}", EXIT_FAILED)
        return EXIT_FAILED
    return 0


def run() -> None:
    """The `vmshift` program: main(), then out without the interpreter's teardown.

    Freeing every imported module takes ~35 ms at exit (measured), 4% of a
    small disk's conversion. By the time main() returns, the commands have
    closed what they opened (files, appliances, connections, temporary
    directories) and their helper threads are daemons; what remains is to
    flush the streams."""
    code = main()
    if "logging" in sys.modules:
        sys.modules["logging"].shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


__all__ = ["cli", "main", "run", "SCHEMA_VERSION"]
