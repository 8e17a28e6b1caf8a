"""The exit-code convention: 0 ok, 1 failed, 2 bad input, 3 refused; one line, no traceback."""

import json
import subprocess
import sys

import click
import pytest

from vmshift import cli as cli_mod
from vmshift.cliutil import JSON_MODE, json_option
from vmshift.errors import BadInput, OperationFailed, Refused, bad_input

VMSHIFT = [sys.executable, "-m", "vmshift"]


@pytest.fixture
def probe_command():
    """A throwaway command that raises what the test asks for."""
    raised = {}

    @click.command("raise-for-test")
    @click.argument("kind")
    @json_option
    def raise_for_test(kind, json_mode):
        raised["kind"] = kind
        exc = {"bad": bad_input("plan.csv", "column 'vm' is empty", line=7),
               "failed": OperationFailed("cannot connect to qemu+tcp://10.0.0.9/system"),
               "refused": Refused("2 blocker findings", detail=[{"id": "cbt.off"}],
                                  document=("probe_result", {"findings": [{"id": "cbt.off"}]})),
               "bug": ZeroDivisionError("division by zero"),
               "interrupt": KeyboardInterrupt()}.get(kind)
        if exc:
            raise exc
        click.echo("fine")

    cli_mod.cli.add_command(raise_for_test)
    yield raised
    cli_mod.cli.commands.pop("raise-for-test")


@pytest.mark.parametrize("kind,code,text", [
    ("ok", 0, None),
    ("failed", 1, "cannot connect to qemu+tcp://10.0.0.9/system"),
    ("bad", 2, "plan.csv:7: column 'vm' is empty"),
    ("refused", 3, "2 blocker findings"),
    ("bug", 1, "internal error: ZeroDivisionError: division by zero"),
    ("interrupt", 1, "interrupted"),
])
def test_each_outcome_maps_to_its_exit_code(probe_command, capsys, kind, code, text):
    assert cli_mod.main(["raise-for-test", kind]) == code
    err = capsys.readouterr().err
    if text is None:
        assert err == ""
    else:
        # Exactly one line, no traceback (click ends a terminal's "^C" line first).
        assert err.lstrip("\n") == f"vmshift: error: {text}\n"


def test_json_mode_reports_the_error_as_a_document(probe_command, capsys):
    assert cli_mod.main(["raise-for-test", "failed", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and doc["kind"] == "error"
    assert doc["error"] == {"message": "cannot connect to qemu+tcp://10.0.0.9/system",
                            "exit_code": 1, "detail": None}
    JSON_MODE["on"] = False


def test_json_mode_refusal_prints_the_commands_own_document(probe_command, capsys):
    assert cli_mod.main(["raise-for-test", "refused", "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)  # exactly one document
    assert doc == {"schema_version": 1, "kind": "probe_result",
                   "findings": [{"id": "cbt.off"}], "outcome": "blocked"}
    JSON_MODE["on"] = False


def test_errors_carry_their_codes():
    assert (OperationFailed("x").exit_code, BadInput("x").exit_code,
            Refused("x").exit_code) == (1, 2, 3)


def run(*args):
    return subprocess.run([*VMSHIFT, *args], capture_output=True, text=True, timeout=120)


def test_usage_errors_exit_2_naming_the_option():
    res = run("doctor", "--no-such-flag")
    assert res.returncode == 2
    assert "--no-such-flag" in res.stderr and "Traceback" not in res.stderr


def test_unknown_command_exits_2():
    res = run("frobnicate")
    assert res.returncode == 2 and "frobnicate" in res.stderr


def test_a_command_not_built_yet_says_so_and_exits_1():
    res = run("p2v")
    assert res.returncode == 1
    assert res.stderr.strip() == "vmshift: error: `vmshift p2v` is not built yet " \
        "(tracked in issue 9)"
    assert res.stdout == ""
