"""`vmshift inspect --vsphere` against the real vCenter simulator (verified TLS).

Every call runs `python -m vmshift inspect` as a subprocess: exit codes,
stdout and stderr are what a user sees, and a password leak would show there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from vmshift.testbed import vcsim

FS_UUID = "4c0ffee0-1234-4abc-8def-0123456789ab"
FS_LABEL = "vmshiftvs"


def inspect(vc, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "VMSHIFT_VSPHERE_PASSWORD": password or vc.password}
    result = subprocess.run(
        [sys.executable, "-m", "vmshift", "inspect", "--vsphere", "--url", vc.url,
         "--user", vc.user, "--ca-file", str(vc.ca_path), *args],
        env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    for secret in {vc.password, password} - {None}:
        assert secret not in result.stdout and secret not in result.stderr
    return result


def outcomes(doc: dict) -> dict[str, str]:
    return {f["rule_id"]: f["outcome"] for f in doc["findings"]}


def check_exit(result: subprocess.CompletedProcess, doc: dict) -> None:
    assert result.returncode == (3 if doc["blockers"] else 0), result.stderr


def test_model_only_rules_fire_and_guest_rules_are_not_evaluable(vcenter):
    result = inspect(vcenter, "--vm", "DC0_C0_RP0_VM0", "--rules-only", "--json")
    doc = json.loads(result.stdout)
    got = outcomes(doc)
    assert got["vsphere.snapshots_present"] == "fired"
    assert got["vsphere.affinity"] == "fired"
    assert got["vsphere.cbt_disabled"] == "not_evaluable"  # the sim leaves it unset here
    assert got["guest.free_space"] == "not_evaluable"
    assert got["guest.virtio_missing_linux"] == "not_evaluable"
    check_exit(result, doc)
    assert "disks not downloaded" in result.stderr

    # CBT on + PCI passthrough: CBT passes, passthrough is a blocker -> exit 3.
    result = inspect(vcenter, "--vm", "DC0_C0_RP0_VM1", "--rules-only", "--json")
    doc = json.loads(result.stdout)
    got = outcomes(doc)
    assert got["vsphere.cbt_disabled"] == "passed"
    assert got["vsphere.passthrough_device"] == "fired"
    assert "vsphere.passthrough_device" in doc["blockers"]
    assert result.returncode == 3


def _set_cbt(vc, name: str, enabled: bool) -> None:
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    si = vcsim.connect(vc)
    try:
        vm = vcsim.find_vm(si, name)
        WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(changeTrackingEnabled=enabled)))
    finally:
        from pyVim.connect import Disconnect

        Disconnect(si)


def test_cbt_off_fires_the_cbt_rule(vcenter, vcenter_vm):
    name = vcenter_vm(power_on=False)
    _set_cbt(vcenter, name, False)
    result = inspect(vcenter, "--vm", name, "--rules-only", "--json")
    doc = json.loads(result.stdout)
    got = outcomes(doc)
    assert got["vsphere.cbt_disabled"] == "fired"
    assert got["vsphere.snapshots_present"] == "passed"
    assert got["guest.no_os"] == "not_evaluable"
    check_exit(result, doc)


def _tiny_ext4(tmp: Path) -> Path:
    tree = tmp / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hello").write_text("from vsphere\n")
    raw = tmp / "fs.raw"
    with raw.open("wb") as f:
        f.truncate(16 * 2**20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", FS_LABEL, "-U", FS_UUID, "-d", str(tree),
                    str(raw)], check=True, capture_output=True)
    qcow2 = tmp / "fs.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(qcow2)],
                   check=True, capture_output=True)
    return qcow2


def test_download_dir_downloads_and_inspects_the_disk(vcenter, vcenter_vm, tmp_path):
    name = vcenter_vm(power_on=False)
    vcsim.attach_disk(vcenter, name, _tiny_ext4(tmp_path), name="tiny")
    dest = tmp_path / "dl"
    result = inspect(vcenter, "--vm", name, "--disk-dir", str(dest), "--json")
    doc = json.loads(result.stdout)
    assert (dest / "tiny.vmdk").is_file() and (dest / "tiny-flat.vmdk").is_file()
    assert "vm" in doc, (result.returncode, result.stderr)  # the reason when inspection failed
    assert doc["vm"]["source_kind"] == "vsphere"
    assert [d["source"] for d in doc["inspection"]["disks"]] == [str(dest / "tiny.vmdk")]
    fs = [f for f in doc["inspection"]["filesystems"] if f["uuid"] == FS_UUID]
    assert fs and fs[0]["type"] == "ext4" and fs[0]["label"] == FS_LABEL
    assert doc["inspection"]["appliance_launches"] == 1
    # The disk was inspected: the guest rules are decided, not not_evaluable.
    assert outcomes(doc)["guest.no_os"] == "fired"
    check_exit(result, doc)


def test_powered_on_vm_with_download_dir_is_refused(vcenter, vcenter_vm, tmp_path):
    name = vcenter_vm(power_on=True)
    dest = tmp_path / "dl"
    result = inspect(vcenter, "--vm", name, "--disk-dir", str(dest))
    assert result.returncode == 3
    assert "powered off" in result.stderr and "vsphere download" in result.stderr
    assert "Traceback" not in result.stderr
    assert not any(dest.glob("*.vmdk"))
    result = inspect(vcenter, "--vm", name, "--disk-dir", str(dest), "--json")
    doc = json.loads(result.stdout)  # exactly one document: this command's own, blocked
    assert result.returncode == 3 and doc["kind"] == "inspection"
    assert doc["outcome"] == "blocked" and doc["blockers"] == ["vsphere.vm_running"]
    assert doc["findings"][0]["category"] == "blocker" and not any(dest.glob("*.vmdk"))


def test_wrong_password_is_exit_1_and_never_echoed(vcenter):
    wrong = "Wr0ng-" + vcenter.password[::-1]
    result = inspect(vcenter, "--vm", "DC0_H0_VM1", "--json", password=wrong)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "incorrect user name or password" in lines[0]
    error = json.loads(result.stdout)["error"]  # --json: the error is the one document
    assert error["exit_code"] == 1 and "incorrect user name or password" in error["message"]


def test_vsphere_and_images_together_or_neither_is_a_usage_error(vcenter, tmp_path):
    image = tmp_path / "x.raw"
    image.write_bytes(b"\0" * 4096)
    result = inspect(vcenter, "--vm", "DC0_H0_VM1", str(image))
    assert result.returncode == 2 and "--vsphere" in result.stderr
    bare = subprocess.run([sys.executable, "-m", "vmshift", "inspect"],
                          capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "IMAGE" in bare.stderr
    stray = subprocess.run([sys.executable, "-m", "vmshift", "inspect", "--vm", "x", str(image)],
                           capture_output=True, text=True, timeout=60)
    assert stray.returncode == 2 and "only valid with --vsphere" in stray.stderr
