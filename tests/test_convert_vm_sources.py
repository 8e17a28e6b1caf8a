"""`vmshift convert vm --ova` and `--vsphere` end to end (issue 14).

- OVA: the reference guest's streamOptimized VMDK packaged as an OVA
  (tests/ovabuild.py: envelope, SHA256 manifest, ustar), converted with
  --output local. No boot: the VMX path's boot tests cover the guest changes.
- vSphere: the vCenter simulator's VM, its disk replaced by the reference
  guest's (uploaded to the datastore over /folder as ESXi keeps a disk:
  descriptor plus -flat extent), converted onto a test-bed host and booted;
  what the guest says of itself is read from its serial console.

Each conversion runs with its own $VMSHIFT_CACHE, so its work directory is
its own and "nothing left behind" can be asserted while other conversions run.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.inspect_images import sha256
from tests.migrate_support import remove_converted
from tests.ovabuild import build_ova, tamper_manifest
from tests.test_convert_vm import NET_MAP, PYTHON, _ok, defined_xml, vmshift_json
from vmshift.testbed import vcsim

SIM_MAC = "00:50:56:3f:00:01"  # the NIC vcsim.create_vm gives the simulator's VM


def work_left(cache: Path) -> list[Path]:
    return list((cache / "work").glob("vmshift-convert-*"))


def convert_with(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        return vmshift_json("convert", "vm", *args)


# --- OVA --------------------------------------------------------------------

@pytest.fixture(scope="module")
def ova_run(vmware_guest, tmp_path_factory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("ova")
    ova = build_ova(tmp, vmware_guest.vmdk_stream, name="refguest", mac=vmware_guest.mac,
                    stream_ready=True)
    before = sha256(ova)
    out, cache = tmp / "out", tmp / "cache"
    rc, doc, err = convert_with({"VMSHIFT_CACHE": str(cache)}, "--ova", str(ova),
                                "--output", "local", "--output-dir", str(out),
                                "--network-map", NET_MAP)
    return {"rc": rc, "doc": doc, "stderr": err, "out": out, "cache": cache,
            "before": before, "after": sha256(ova)}


def test_ova_converts_to_local_xml_and_verified_disk(ova_run: dict, vmware_guest) -> None:  # type: ignore[no-untyped-def]
    doc = _ok(ova_run)
    out = ova_run["out"]
    assert doc["source_kind"] == "ova"
    xml = etree.parse(str(out / "refguest.xml")).getroot()
    sources = xml.xpath("/domain/devices/disk/source/@file")
    assert sources == [str(out / "refguest-disk1.qcow2")]
    assert not xml.xpath("//slices")  # the converted disk, not a slice of the OVA
    assert xml.xpath("/domain/devices/interface/mac/@address") == [vmware_guest.mac.lower()]
    assert xml.xpath("/domain/devices/interface/source/@network") == ["vmshift-net"]
    [disk] = doc["disks"]
    assert disk["verified"] is True and disk["output"] == sources[0]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", sources[0]],
                                     capture_output=True, text=True, check=True).stdout)
    assert info["format"] == "qcow2" and info["virtual-size"] == disk["virtual_size"]


def test_ova_guest_changes_reported(ova_run: dict, vmware_guest) -> None:  # type: ignore[no-untyped-def]
    guest = _ok(ova_run)["guest"]
    areas = {(c["area"], c["path"]) for c in guest["changes"]}
    assert ("blockdev", "/etc/fstab") in areas
    assert ("network", "/etc/systemd/network/10-vmshift-ens192.link") in areas
    # An OVF records no PCI slot: the one configured name goes to the one NIC.
    assert guest["interface_pins"] == [{"name": "ens192", "mac": vmware_guest.mac.lower(),
                                        "matched_by": "only NIC"}]


def test_ova_one_launch_source_unchanged_nothing_left(ova_run: dict) -> None:
    doc = _ok(ova_run)
    assert doc["appliance_launches"] == 1
    assert [s["stage"] for s in doc["stages"]] == ["preflight", "extract", "overlay",
                                                   "inspect+convert", "copy", "define"]
    assert ova_run["before"] == ova_run["after"]
    assert work_left(ova_run["cache"]) == []  # the extracted member went with the work dir


def test_renamed_stream_vmdk_is_its_own_extent(tmp_path: Path) -> None:
    """An OVA member rarely keeps the name its embedded descriptor was written
    with; a monolithic sparse file is its own extent whatever that name says."""
    from vmshift.convert import vmdk
    from vmshift.inspect.probe import probe_image

    written = tmp_path / "written-as.vmdk"
    subprocess.run(["qemu-img", "convert", "-q", "-O", "vmdk", "-o",
                    "subformat=streamOptimized", str(_tiny_image(tmp_path)), str(written)],
                   check=True)
    renamed = written.rename(tmp_path / "member-disk1.vmdk")
    desc = vmdk.parse_descriptor(renamed)
    assert [e.path for e in desc.extents] == [renamed]
    assert vmdk.missing_extents(desc) == []
    assert probe_image(renamed).format == "vmdk"


# --- bad usage --------------------------------------------------------------

def _tiny_image(tmp: Path) -> Path:
    image = tmp / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "16M"], check=True)
    return image


@pytest.mark.parametrize("args, message", [
    (["--ova", "x.ova", "--vmx", "y.vmx"], "exactly one source"),
    (["--ova", "x.ova", "--vsphere", "--url", "https://vc", "--user", "u", "--vm", "v"],
     "exactly one source"),
    (["--ova", "missing.ova"], "missing.ova: no such file"),
    (["--vmx", "y.vmx", "--disk-dir", "d"], "--disk-dir: only valid with --vsphere"),
    (["--vsphere", "--url", "https://vc", "--user", "u"], "--vm: required with --vsphere"),
])
def test_bad_usage_is_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    argv = [*PYTHON, "convert", "vm", *args, "--output", "local", "--output-dir",
            str(tmp_path / "out")]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_tampered_ova_is_refused_before_anything(tmp_path: Path) -> None:
    ova = tamper_manifest(build_ova(tmp_path, _tiny_image(tmp_path), name="tiny"), tmp_path)
    cache, out = tmp_path / "cache", tmp_path / "out"
    rc, doc, err = convert_with({"VMSHIFT_CACHE": str(cache)}, "--ova", str(ova),
                                "--output", "local", "--output-dir", str(out))
    assert rc == 2 and doc["kind"] == "error"
    assert "digest does not match the manifest" in doc["error"]["message"]
    assert not out.exists() and not cache.exists()


# --- vSphere ----------------------------------------------------------------

def vsphere_args(vc: vcsim.VCenter, vm: str) -> list[str]:
    return ["--vsphere", "--url", vc.url, "--user", vc.user, "--ca-file", str(vc.ca_path),
            "--vm", vm]


def _set_memory(vc: vcsim.VCenter, name: str, mib: int) -> str:
    """Give the simulator's VM the reference guest's memory; returns its BIOS UUID."""
    from pyVim.connect import Disconnect
    from pyVim.task import WaitForTask
    from pyVmomi import vim

    si = vcsim.connect(vc)
    try:
        vm = vcsim.find_vm(si, name)
        WaitForTask(vm.ReconfigVM_Task(vim.vm.ConfigSpec(memoryMB=mib)))
        return str(vm.config.uuid)
    finally:
        Disconnect(si)


def test_powered_on_vm_is_refused_with_the_command_document(vcenter, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out, cache = tmp_path / "out", tmp_path / "cache"
    rc, doc, err = convert_with(
        {"VMSHIFT_VSPHERE_PASSWORD": vcenter.password, "VMSHIFT_CACHE": str(cache)},
        *vsphere_args(vcenter, "DC0_H0_VM0"), "--output", "local", "--output-dir", str(out))
    assert rc == 3 and doc["kind"] == "convert_vm" and doc["outcome"] == "blocked"
    assert doc["blockers"] == ["vsphere.vm_running"]
    assert "power it off" in err and "Traceback" not in err
    assert vcenter.password not in err + json.dumps(doc)
    assert not out.exists() and work_left(cache) == []


def test_disk_dir_keeps_the_download_when_the_conversion_fails(vcenter, vcenter_vm,  # type: ignore[no-untyped-def]
                                                              tmp_path) -> None:
    """An empty disk is a blocker (exit 3) found after the download: the run leaves
    nothing, but the --disk-dir copy stays for a rerun."""
    name = vcenter_vm(power_on=False)
    vcsim.attach_disk(vcenter, name, _tiny_image(tmp_path), name="tiny")
    disks, out, cache = tmp_path / "disks", tmp_path / "out", tmp_path / "cache"
    rc, doc, err = convert_with(
        {"VMSHIFT_VSPHERE_PASSWORD": vcenter.password, "VMSHIFT_CACHE": str(cache)},
        *vsphere_args(vcenter, name), "--disk-dir", str(disks), "--output", "local",
        "--output-dir", str(out))
    assert rc == 3 and doc["blockers"] == ["guest.unrecognised_disk"], err
    assert sorted(p.name for p in disks.glob("*.vmdk")) == ["tiny-flat.vmdk", "tiny.vmdk"]
    assert not list(out.glob("*")) and work_left(cache) == []


# The bed's start, the upload, the download and a TCG boot on a shared 2-core
# machine: more than the default 900 s can pass before the first test runs.
VSPHERE_TIMEOUT = 1800


@pytest.fixture(scope="module")
def vsphere_run(vcenter, vmware_guest, two_hosts, tmp_path_factory) -> Any:  # type: ignore[no-untyped-def]
    host = two_hosts.hosts[0]
    vm, name = f"vmshift-ref-{secrets.token_hex(3)}", "v2v-vsphere"
    cache = tmp_path_factory.mktemp("vsphere") / "cache"
    vcsim.create_vm(vcenter, vm)
    try:
        uuid = _set_memory(vcenter, vm, 1024)
        vcsim.attach_disk(vcenter, vm, vmware_guest.raw, name="refguest")
        extent = vcenter.datastores["LocalDS_0"] / vm / "refguest-flat.vmdk"
        before = sha256(extent)
        remove_converted(host, name)
        rc, doc, err = convert_with(
            {"VMSHIFT_VSPHERE_PASSWORD": vcenter.password, "VMSHIFT_CACHE": str(cache)},
            *vsphere_args(vcenter, vm), "--output", "libvirt", "--connect", host.uri,
            "--pool", host.private_pool, "--name", name, "--network-map", NET_MAP,
            "--verify-boot", "--boot-timeout", "600")
        yield {"rc": rc, "doc": doc, "stderr": err, "xml": defined_xml(host, name, rc),
               "uuid": uuid,
               "before": before, "after": sha256(extent), "cache": cache}
    finally:
        remove_converted(host, name)
        vcsim.delete_vm(vcenter, vm)


@pytest.mark.timeout(VSPHERE_TIMEOUT)
def test_vsphere_guest_boots_with_its_network(vsphere_run: dict, vmware_guest) -> None:  # type: ignore[no-untyped-def]
    doc = _ok(vsphere_run)
    boot = doc["boot"]
    assert boot["ok"], boot["problems"]
    assert boot["seconds_to_login"] is not None
    # The guest's ifupdown configuration names ens192; the simulator's VM has one
    # NIC with a MAC of its own and no PCI slot, so the lone name is pinned to it.
    assert doc["guest"]["interface_pins"] == [{"name": "ens192", "mac": SIM_MAC,
                                               "matched_by": "only NIC"}]
    ens192 = boot["interfaces"]["ens192"]
    assert ens192["mac"] == SIM_MAC and ens192["state"] == "UP"
    assert vmware_guest.ipv4 in ens192["addresses"]
    assert boot["failed_units"] == []
    assert boot["vmware_tools"] is False


@pytest.mark.timeout(VSPHERE_TIMEOUT)
def test_vsphere_identity_stages_and_source(vsphere_run: dict) -> None:
    doc = _ok(vsphere_run)
    assert doc["source_kind"] == "vsphere" and doc["source_disk_dir"] is None
    assert doc["appliance_launches"] == 1
    assert [s["stage"] for s in doc["stages"]] == ["preflight", "download", "overlay",
                                                   "inspect+convert", "copy", "define",
                                                   "boot"]
    xml = vsphere_run["xml"]
    assert f"<uuid>{vsphere_run['uuid']}</uuid>" in xml
    assert f"<mac address='{SIM_MAC}'/>" in xml and "vmshift-net" in xml
    assert vsphere_run["before"] == vsphere_run["after"]  # the datastore's extent
    assert work_left(vsphere_run["cache"]) == []  # the download went with the work dir
