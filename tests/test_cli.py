"""The CLI surface: --version, --help listing every command, --help everywhere."""

import subprocess
from pathlib import Path

import click
import pytest

from vmshift import __version__
from vmshift.cli import cli

ROOT = Path(__file__).resolve().parent.parent
VMSHIFT = str(ROOT / ".venv" / "bin" / "vmshift")
COMMANDS = ["doctor", "testbed", "inspect", "convert", "vmx2xml", "vsphere", "migrate",
            "evacuate", "maintenance", "plan", "p2v"]


def run(*args):
    return subprocess.run([VMSHIFT, *args], capture_output=True, text=True, timeout=60)


def test_version():
    res = run("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"vmshift, version {__version__}"


def test_help_lists_every_command():
    res = run("--help")
    assert res.returncode == 0
    listed = {line.split()[0] for line in res.stdout.split("Commands:")[1].splitlines()
              if line.strip()}
    assert set(COMMANDS) <= listed
    assert "-v, --verbose" in res.stdout


def _subcommands(group):
    """(name, command) pairs, loading lazily registered commands too."""
    ctx = click.Context(group)
    return [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]


def _all_command_paths(group=cli, prefix=()):
    for name, cmd in _subcommands(group):
        yield (*prefix, name)
        if isinstance(cmd, click.Group):
            yield from _all_command_paths(cmd, (*prefix, name))


@pytest.mark.parametrize("path", sorted(_all_command_paths()), ids=" ".join)
def test_help_works_everywhere(path):
    res = run(*path, "--help")
    assert res.returncode == 0, res.stderr
    assert "Usage: vmshift " + " ".join(path) in res.stdout


def _leaf_commands(group=cli, prefix=()):
    for name, cmd in _subcommands(group):
        if isinstance(cmd, click.Group):
            yield from _leaf_commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


@pytest.mark.parametrize("path,cmd", sorted(_leaf_commands(), key=lambda p: p[0]),
                         ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
def test_every_command_takes_json(path, cmd):
    assert "--json" in {opt for p in cmd.params for opt in getattr(p, "opts", [])}, path
