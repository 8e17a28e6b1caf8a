"""`vmshift evacuate` and `vmshift maintenance` without a bed: the migration
address default, the priority map, and bad input refused on one line
before any host is contacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_support import UNREACHABLE, vmshift
from vmshift.convert.maps import parse_priority_map
from vmshift.errors import BadInput
from vmshift.migrate.facts import migration_address


@pytest.mark.parametrize(("uri", "template", "expected"), [
    ("qemu+tcp://10.0.0.7/system", None, "tcp://10.0.0.7"),
    ("qemu+tls://10.0.0.7:16514/system", None, "tcp://10.0.0.7"),
    ("qemu+tcp://[fd00::7]/system", None, "tcp://[fd00::7]"),
    ("qemu+ssh://kvm7.example/system", None, None),  # a name: libvirt's default stands
    ("qemu:///system", None, None),
    ("qemu+ssh://kvm7.example/system", "tcp://{host}:49152", "tcp://kvm7.example:49152"),
    ("qemu+tcp://[fd00::7]/system", "tcp://{host}", "tcp://[fd00::7]"),
])
def test_migration_address(uri: str, template: str | None, expected: str | None) -> None:
    assert migration_address(uri, template) == expected


@pytest.mark.parametrize(("uri", "template", "message"), [
    ("qemu:///system", "tcp://{host}", "--migrate-uri-template: qemu:///system names no host"),
    ("qemu+tcp://h/system", "tcp://{hostname}", "--migrate-uri-template: 'tcp://{hostname}': "
                                                "only {host} may be substituted"),
])
def test_migration_address_template_errors(uri: str, template: str, message: str) -> None:
    with pytest.raises(BadInput, match=message.replace("{", r"\{").replace("}", r"\}")
                       .replace("+", r"\+")):
        migration_address(uri, template)


def test_priority_map_file_and_inline(tmp_path: Path) -> None:
    f = tmp_path / "prio"
    f.write_text("# most important first\nweb1 = 10\ndb1=20\n")
    assert parse_priority_map(str(f)) == {"web1": 10, "db1": 20}
    assert parse_priority_map("a=1,b=-3") == {"a": 1, "b": -3}
    f.write_text("web1=10\ndb1=high\n")
    with pytest.raises(BadInput, match=rf"^{f}:2: 'high': a priority is an integer$"):
        parse_priority_map(str(f))


@pytest.mark.parametrize(("args", "message"), [
    (["--targets", ","], "--targets: no URI given"),
    (["--targets", UNREACHABLE, "--max-parallel", "0"], "evacuate: Invalid value for "
     "'--max-parallel': 0 is not in the range x>=1."),
    (["--targets", UNREACHABLE, "--reserve", "lots"], None),
    (["--targets", UNREACHABLE, "--skip-check", "no.such-check"], None),
    (["--targets", UNREACHABLE, "--priority-file", "a=first"],
     "--priority-file: entry 1: 'first': a priority is an integer"),
    (["--targets", UNREACHABLE, "--order", "random"], None),
])
def test_bad_input_is_one_line_exit_2_before_any_host_is_contacted(
        args: list[str], message: str | None) -> None:
    res = vmshift("evacuate", "--source", UNREACHABLE, *args)
    assert res.rc == 2, res.err
    lines = res.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vmshift: error: "), res.err
    assert "cannot connect" not in res.err  # refused before connecting
    if message is not None:
        assert lines[0] == f"vmshift: error: {message}"


def test_unreachable_source_is_exit_1_naming_it() -> None:
    res = vmshift("evacuate", "--source", UNREACHABLE, "--targets", UNREACHABLE)
    assert res.rc == 1
    assert res.err.startswith(f"vmshift: error: cannot connect to the source {UNREACHABLE}")


def test_maintenance_list_and_clear_without_a_host(tmp_path: Path) -> None:
    env = {"VMSHIFT_STATE_DIR": str(tmp_path)}
    res = vmshift("maintenance", "list", "--json", env=env)
    assert res.rc == 0 and res.doc()["hosts"] == []
    assert vmshift("maintenance", "list", env=env).out == "no host in maintenance\n"
    res = vmshift("maintenance", "clear", UNREACHABLE, env=env)
    assert res.rc == 1 and "cannot connect" in res.err
    (tmp_path / "maintenance.json").write_text("{not json")
    res = vmshift("maintenance", "list", env=env)
    assert res.rc == 1 and str(tmp_path / "maintenance.json") in res.err
