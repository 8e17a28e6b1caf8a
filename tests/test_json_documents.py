"""--json: every command prints exactly one JSON document on stdout, carrying
schema_version and a snake_case kind, whether it succeeds, fails or is blocked.

The list of commands comes from walking the whole click tree (lazy commands
included), so a new --json command without a failure case here fails the test.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import click
import pytest

from tests.cli_support import UNREACHABLE, Result, libvirt_test_host, vmshift
from vmshift.cli import cli

CORPUS_VMX = Path("/work/shared/corpus/vmx/annotation.vmx")
PASSWORD = {"VMSHIFT_VSPHERE_PASSWORD": "not-used"}


def json_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()):
    ctx = click.Context(group, info_name=prefix[-1] if prefix else "vmshift")
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        if "--json" in {o for p in cmd.params for o in getattr(p, "opts", [])}:
            yield " ".join((*prefix, name))
        if isinstance(cmd, click.Group):
            yield from json_commands(cmd, (*prefix, name))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    tmp = tmp_path_factory.mktemp("json")
    disk = tmp / "small.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "8M"], check=True)
    return {"tmp": str(tmp), "host": libvirt_test_host(tmp), "disk": str(disk)}


# One failure per --json command: (arguments, exit code). "{tmp}" and "{host}"
# (a libvirt test-driver URI with domain vm1) are filled in from the fixture.
FAILURES: dict[str, tuple[list[str], int]] = {
    "convert disk": (["{tmp}/missing.vmdk", "{tmp}/out.qcow2"], 2),
    "convert vm": (["--output", "local", "--vmx", "{tmp}/missing.vmx", "--output-dir",
                    "{tmp}/vm"], 2),
    "doctor": (["--connect", UNREACHABLE, "--skip-guestfs"], 1),
    "evacuate": (["--source", UNREACHABLE, "--targets", UNREACHABLE], 1),
    "inspect": (["{tmp}/missing.qcow2"], 2),
    "maintenance clear": ([UNREACHABLE], 1),
    "maintenance list": (["--no-such-option"], 2),
    "migrate check": (["vm1", "--source", "{host}", "--dest", "{host}",
                       "--skip-check", "no.such-check"], 2),
    "migrate live": (["vm1", "--source", "{host}", "--dest", UNREACHABLE], 1),
    "migrate offline": (["vm1", "--source", UNREACHABLE, "--dest", "{host}"], 1),
    "migrate storage": (["vm1", "--source", "{host}", "--disk", "vdz", "--dest-pool", "b",
                         "--dry-run"], 2),
    "migrate suspended": (["vm1", "--source", "{host}", "--dest", "{host}",
                           "--bandwidth", "fast"], 2),
    "ova xml": (["{tmp}/missing.ova"], 2),
    "p2v": ([], 1),
    "plan import-rvtools": (["{tmp}/missing.xlsx", "--target", "qemu:///system", "--pool", "p",
                             "--output", "{tmp}/plan.csv"], 2),
    "plan report": (["{tmp}/missing.csv"], 2),
    "plan run": (["{tmp}/missing.csv"], 2),
    "plan show": (["{tmp}/missing.csv", "--offline"], 2),
    "plan status": (["{tmp}/missing.csv"], 2),
    "plan template": (["--no-such-option"], 2),
    "plan validate": (["{tmp}/missing.csv"], 2),
    "testbed down": (["--name", "Not A Name"], 2),
    "testbed guest build": (["--variant", "nope"], 2),
    "testbed guest prune": (["--no-such-option"], 2),
    "testbed status": (["--name", "../etc"], 2),
    "testbed up": (["--hosts", "99", "--dry-run"], 2),
    "vmx2xml": (["{tmp}/missing.vmx"], 2),
    "vsphere download": (["--vm", "x", "--disk-dir", "{tmp}/dl", "--url", "https://127.0.0.1:1",
                          "--user", "u", "--insecure"], 1),
    "vsphere list": (["--url", "ftp://example.test", "--user", "u"], 2),
    "vsphere show": (["--vm", "x", "--url", "https://127.0.0.1:1", "--user", "u",
                      "--insecure"], 1),
    "vsphere xml": (["--vm", "x", "--url", "https://u:secret@example.test", "--user", "u"], 2),
}


def fill(args: list[str], work: dict[str, str]) -> list[str]:
    return [a.format(**work) for a in args]


def test_every_json_command_has_a_failure_case() -> None:
    assert sorted(json_commands()) == sorted(FAILURES)


@pytest.mark.parametrize("command", sorted(FAILURES))
def test_failure_prints_one_document(command: str, work: dict[str, str]) -> None:
    args, code = FAILURES[command]
    res = vmshift(*command.split(), *fill(args, work), "--json", env=PASSWORD)
    assert res.rc == code, res.err
    doc = res.doc()
    lines = res.error_lines()
    assert len(lines) == 1 and lines[0].startswith("vmshift: error: "), res.err
    if command == "doctor":  # its own report, saying which check failed
        assert doc["kind"] == "doctor" and doc["outcome"] == "failed"
        assert doc["checks"]["libvirt"]["status"] == "failed"
    else:
        assert doc["kind"] == "error" and doc["error"]["exit_code"] == code
        assert doc["error"]["message"] == lines[0].removeprefix("vmshift: error: ")


def check(res: Result, code: int, kind: str, outcome: str | None = None) -> dict:
    assert res.rc == code, res.err
    doc = res.doc()
    assert doc["kind"] == kind
    if outcome is not None:
        assert doc["outcome"] == outcome
    return doc


def test_successes_print_one_document(work: dict[str, str], tmp_path: Path) -> None:
    check(vmshift("vmx2xml", "--json", str(CORPUS_VMX)), 0, "domain_xml")
    doc = check(vmshift("convert", "disk", "--json", work["disk"], str(tmp_path / "o.qcow2")),
                0, "convert_disk")
    assert doc["disks"][0]["verified"] is True and (tmp_path / "o.qcow2").is_file()
    check(vmshift("inspect", "--list-rules", "--json"), 0, "rules")
    testbed = {"VMSHIFT_TESTBED_RUN": str(tmp_path / "run")}
    check(vmshift("testbed", "up", "--dry-run", "--json", "--name", "nobed", env=testbed),
          0, "testbed_plan")
    check(vmshift("testbed", "down", "--dry-run", "--json", "--name", "nobed", env=testbed),
          0, "testbed_plan")
    doc = check(vmshift("testbed", "status", "--json", "--name", "nobed", env=testbed),
                0, "testbed_status", "ok")
    assert doc["up"] is False
    check(vmshift("testbed", "guest", "prune", "--dry-run", "--json"), 0, "testbed_guest_prune")
    check(vmshift("testbed", "guest", "build", "--dry-run", "--json"), 0, "testbed_guest_plan")


def test_migrate_success_and_blocked_documents(work: dict[str, str]) -> None:
    host = work["host"]
    # vm1 needs 64 MiB; the test driver's host has less free: resources.memory blocks.
    blocked = check(vmshift("migrate", "check", "vm1", "--source", host, "--dest",
                            "test:///default", "--json"), 3, "migrate_check", "blocked")
    assert "resources.memory" in {f["id"] for f in blocked["findings"]
                                  if f["severity"] == "blocker"}
    both = ("--migrate-uri", "tcp://192.0.2.1", "--copy-storage", "all")
    ok = check(vmshift("migrate", "check", "vm1", "--source", host, "--dest", "test:///default",
                       "--skip-check", "resources.memory", *both, "--json"),
               0, "migrate_check", "ok")
    assert not [f for f in ok["findings"] if f["severity"] == "blocker"]
    for mode in ("live", "suspended"):
        doc = check(vmshift("migrate", mode, "vm1", "--source", host, "--dest",
                            "test:///default", "--dry-run", "--json"), 3, "migrate", "blocked")
        assert any(f["severity"] == "blocker" for f in doc["findings"])
        doc = check(vmshift("migrate", mode, "vm1", "--source", host, "--dest",
                            "test:///default", "--skip-check", "resources.memory", *both,
                            "--dry-run", "--json"), 0, "migrate", "ok")
        assert doc["notes"][0] == "dry run: nothing changed"
    # An offline move of a running domain is blocked (domain.state).
    doc = check(vmshift("migrate", "offline", "vm1", "--source", host, "--dest",
                        "test:///default", "--dest-pool", "b", "--dry-run", "--json"),
                3, "migrate", "blocked")
    assert "domain.state" in {f["id"] for f in doc["findings"]}
    doc = check(vmshift("migrate", "storage", "vm1", "--source", host, "--disk", "vda",
                        "--dest-pool", "b", "--dry-run", "--json"), 0, "migrate", "ok")
    assert doc["notes"][1:] == ["blockcopy+pivot vda -> pool b"]


def test_inspect_blocked_and_ok_documents(tmp_path: Path) -> None:
    vmx = tmp_path / "pt.vmx"
    base = ('config.version = "8"\nvirtualHW.version = "14"\ndisplayName = "pt"\n'
            'guestOS = "debian11-64"\nmemSize = "512"\nnumvcpus = "1"\n')
    vmx.write_text(base)
    doc = check(vmshift("inspect", "--rules-only", "--json", str(vmx)), 0, "findings", "ok")
    assert doc["blockers"] == []
    vmx.write_text(base + 'pciPassthru0.present = "TRUE"\npciPassthru0.id = "00000:003:00.0"\n')
    for rules_only, kind in ((True, "findings"), (False, "inspection")):
        res = vmshift("inspect", *(["--rules-only"] if rules_only else []), "--json", str(vmx))
        doc = check(res, 3, kind, "blocked")
        assert doc["blockers"] == ["vsphere.passthrough_device"]
        assert {f["rule_id"]: f["outcome"] for f in doc["findings"]}[
            "vsphere.passthrough_device"] == "fired"
        assert res.error_lines() == ["vmshift: error: 1 blocker(s): vsphere.passthrough_device"]


def test_doctor_fails_only_for_what_the_work_needs(tmp_path: Path) -> None:
    ok = check(vmshift("doctor", "--connect", "test:///default", "--skip-guestfs", "--json"),
               0, "doctor", "ok")
    kvm = ok["checks"]["kvm"]
    # KVM missing while TCG works is a warning (exit 0); on a KVM host it is ok.
    assert kvm["status"] == ("ok" if kvm["ok"] else "warning")
    assert kvm["ok"] or kvm["facts"]["tcg"]["usable"] is True
    assert ok["checks"]["libvirt"]["status"] == "ok"
    # An appliance that cannot launch (its hypervisor binary exits at once) is a failure.
    res = vmshift("doctor", "--connect", "test:///default", "--json",
                  env={"LIBGUESTFS_HV": "/bin/false"})
    doc = check(res, 1, "doctor", "failed")
    assert doc["checks"]["libguestfs"]["status"] == "failed"
    assert res.error_lines() == [
        "vmshift: error: doctor: libguestfs: appliance failed to launch: "
        "/bin/false exited with error status 1."]


def test_partly_up_testbed_status_prints_one_document(tmp_path: Path) -> None:
    """The record an interrupted `testbed up` leaves: one host written down,
    its daemons never started (no bed is brought up here)."""
    run = tmp_path / "run"
    (run / "partial").mkdir(parents=True)
    (run / "partial" / "state.json").write_text(json.dumps({
        "name": "partial", "complete": False, "subnet": "10.241.99.0/24",
        "shared_path": str(tmp_path / "shared"), "storage_kind": "directory",
        "hosts": [{"name": "hosta", "address": "10.241.99.2", "netns": "vmshift-partial-a",
                   "dir": str(tmp_path / "hosta")}]}))
    res = vmshift("testbed", "status", "--name", "partial", "--json",
                  env={"VMSHIFT_TESTBED_RUN": str(run)})
    doc = check(res, 1, "testbed_status", "failed")
    assert doc["up"] is False and doc["hosts"][0]["libvirtd_running"] is False
    assert res.error_lines() == ["vmshift: error: bed partial is only partly up; run "
                                 "`vmshift testbed down --name partial` then `up` again"]
