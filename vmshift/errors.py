"""The exit-code convention, as exception classes.

Every command raises one of these; ``vmshift.cli.main`` turns it into a
one-line message on stderr and the matching exit code, never a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3


class VmshiftError(Exception):
    """Base class: an operation failed (exit 1)."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, detail: object | None = None,
                 document: tuple[str, dict[str, object]] | None = None,
                 lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        # Extra structured data for --json output (e.g. findings).
        self.detail = detail
        # (kind, payload): the command's own result document, which --json then
        # prints instead of an error document (a refused inspection, a doctor
        # report with a failed check). Its "outcome" says how it ended.
        self.document = document
        # Several problems reported at once (a plan's every mistake): stderr gets
        # one "vmshift: error: LINE" per entry instead of MESSAGE, which then only
        # summarises them (in the --json document).
        self.lines = lines


class OperationFailed(VmshiftError):
    """Unreachable host, no space, migration aborted... (exit 1)."""

    exit_code = EXIT_FAILED


class NotBuilt(OperationFailed):
    """A command whose capability does not exist yet (exit 1, never fake success)."""


class BadInput(VmshiftError):
    """Malformed file, bad argument, bad plan (exit 2).

    The message must name the file, line or field at fault.
    """

    exit_code = EXIT_BAD_INPUT


class Refused(VmshiftError):
    """Refused because of blocker findings (exit 3)."""

    exit_code = EXIT_REFUSED


def bad_input(path: object, what: str, line: int | None = None) -> BadInput:
    """Build a BadInput whose message names the file (and line) at fault."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return BadInput(f"{where}: {what}")
