"""Confinement of every disk path a definition names (vmshift.confine), through the
real commands: a hostile VMX, qcow2 or OVF is refused with exit 2 and one line
naming the file (and the line and key), and nothing is written or launched."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.ovabuild import envelope
from vmshift.cli import main
from vmshift.cliutil import JSON_MODE
from vmshift.inspect.session import ApplianceSession

VMSHIFT = str(Path(sys.executable).parent / "vmshift")
HEAD = 'displayName = "hostile"\nmemSize = "512"\nscsi0.present = "TRUE"\n'
DISK_LINE = 5  # line of scsi0:0.fileName in vmx_text()


def vmx_text(*names: str) -> str:
    lines = [HEAD]
    for unit, name in enumerate(names):
        lines.append(f'scsi0:{unit}.present = "TRUE"\nscsi0:{unit}.fileName = "{name}"\n')
    return "".join(lines)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """vmshift.cli.main in this process (the appliance counter stays visible)."""
    JSON_MODE["on"] = False
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out, err)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def refused(result: subprocess.CompletedProcess[str], *names: str) -> str:
    """Exit 2, nothing on stdout, exactly one stderr line naming each of ``names``."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vmshift: error: ") and "Traceback" not in result.stderr
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


# --- hostile VMX disks -----------------------------------------------------------------

def _symlink_out(vm: Path) -> str:
    (vm.parent / "outside.vmdk").write_bytes(b"not yours")
    (vm / "link.vmdk").symlink_to(vm.parent / "outside.vmdk")
    return "link.vmdk"


def _block_node(vm: Path) -> str:
    # A block device node inside the VMX's own directory: still a device.
    os.mknod(vm / "disk.vmdk", stat.S_IFBLK | 0o600, os.makedev(7, 200))
    return "disk.vmdk"


def _climbing(vm: Path) -> str:
    (vm.parent / "x.vmdk").write_bytes(b"beside, not inside")
    return "../x.vmdk"


# name -> (build the VMX's directory and return the fileName, what the line must say)
VMX_CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "dev-sda": (lambda vm: "/dev/sda", "/dev/sda"),
    "dev-null": (lambda vm: "/dev/null", "/dev/null is a character device; pass "
                                         "--allow-device /dev/null"),
    "etc-shadow": (lambda vm: "/etc/shadow", "/etc/shadow is outside"),
    "dotdot": (_climbing, "climbs out"),
    "datastore-dotdot": (lambda vm: "[ds/../..] x.vmdk", "datastore name 'ds/../..'"),
    "datastore-is-dotdot": (lambda vm: "[..] x.vmdk", "datastore name '..'"),
    "vmfs-dotdot": (lambda vm: "/vmfs/volumes/../etc/shadow", "datastore name '..'"),
    "symlink-out": (_symlink_out, "through a symlink"),
    "block-node": (_block_node, "is a block device"),
}


def hostile_vmx(tmp_path: Path, case: str) -> tuple[Path, str]:
    vm = tmp_path / "vm"
    vm.mkdir()
    build, must_say = VMX_CASES[case]
    vmx = vm / "guest.vmx"
    vmx.write_text(vmx_text(build(vm)))
    return vmx, must_say


@pytest.mark.parametrize("command", [["vmx2xml", "--virt-type", "qemu"], ["inspect"]])
@pytest.mark.parametrize("case", list(VMX_CASES))
def test_hostile_vmx_disk_is_refused(case: str, command: list[str], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    vmx, must_say = hostile_vmx(tmp_path, case)
    before, launches = tree(tmp_path), ApplianceSession.total_launches
    result = run(capsys, *command, str(vmx))
    refused(result, f"{vmx}:{DISK_LINE}: scsi0:0.fileName: ", must_say)
    assert tree(tmp_path) == before
    assert ApplianceSession.total_launches == launches


def test_real_process_one_line(tmp_path: Path) -> None:
    vmx, _ = hostile_vmx(tmp_path, "etc-shadow")
    proc = subprocess.run([VMSHIFT, "vmx2xml", str(vmx)], capture_output=True, text=True,
                          timeout=60, check=False)
    refused(proc, f"{vmx}:{DISK_LINE}: scsi0:0.fileName: /etc/shadow is outside")


# --- --allow-device ----------------------------------------------------------------------

def test_allow_device_lets_exactly_that_device_through(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    vmx = tmp_path / "p2v.vmx"
    vmx.write_text(vmx_text("/dev/null"))
    result = run(capsys, "vmx2xml", "--virt-type", "qemu", "--allow-device", "/dev/null",
                 str(vmx))
    assert result.returncode == 0, result.stderr
    assert '<source file="/dev/null"/>' in result.stdout
    # The same permission does not cover another device in the same VMX.
    vmx.write_text(vmx_text("/dev/null", "/dev/zero"))
    for command in (["vmx2xml", "--virt-type", "qemu"], ["inspect"]):
        result = run(capsys, *command, "--allow-device", "/dev/null", str(vmx))
        refused(result, f"{vmx}:{DISK_LINE + 2}: scsi0:1.fileName: /dev/zero is a character "
                        "device; pass --allow-device /dev/zero")


def test_allow_device_on_convert_disk(loop_device: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out" / "lun.qcow2"
    out.parent.mkdir()
    refused(run(capsys, "convert", "disk", loop_device, str(out)),
            f"{loop_device} is a block device; pass --allow-device {loop_device}")
    refused(run(capsys, "convert", "disk", "--allow-device", "/dev/null", loop_device,
                str(out)), f"--allow-device {loop_device}")
    assert not out.exists() and list(out.parent.iterdir()) == []
    result = run(capsys, "convert", "disk", "--allow-device", loop_device, loop_device,
                 str(out))
    assert result.returncode == 0, result.stderr
    compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", loop_device,
                              str(out)], capture_output=True, text=True, check=False)
    assert compare.returncode == 0, compare.stdout + compare.stderr


# --- storage-map targets -------------------------------------------------------------------

def test_mapped_datastore_is_confined_to_its_target(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    (store / "vm").mkdir(parents=True)
    (store / "vm" / "disk.vmdk").write_bytes(b"")
    vmx = tmp_path / "guest.vmx"
    vmx.write_text(vmx_text("[ds1] vm/disk.vmdk"))
    result = run(capsys, "vmx2xml", "--virt-type", "qemu", "--storage-map", f"ds1={store}",
                 str(vmx))
    assert result.returncode == 0, result.stderr
    assert f'<source file="{store}/vm/disk.vmdk"/>' in result.stdout
    (store / "vm" / "disk.vmdk").unlink()
    (store / "vm" / "disk.vmdk").symlink_to("/etc/shadow")
    refused(run(capsys, "vmx2xml", "--storage-map", f"ds1={store}", str(vmx)),
            f"{vmx}:{DISK_LINE}: scsi0:0.fileName: ", "through a symlink")


# --- qcow2 backing files ---------------------------------------------------------------------

def qcow2_with_backing(tmp_path: Path, backing: str) -> Path:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    (tmp_path / "x").write_bytes(b"\0" * 65536)
    top = images / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", backing,
                    "-u", str(top), "1M"], check=True)
    return top


BACKINGS = {"/etc/shadow": "/etc/shadow is outside", "../x": "'../x' climbs out",
            "/dev/null": "/dev/null is a character device"}


@pytest.mark.parametrize("backing", list(BACKINGS))
def test_qcow2_backing_file_is_confined(backing: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    top = qcow2_with_backing(tmp_path, backing)
    out = tmp_path / "out.qcow2"
    before, launches = tree(tmp_path), ApplianceSession.total_launches
    refused(run(capsys, "convert", "disk", str(top), str(out)),
            f"{top}: backing file: ", BACKINGS[backing])
    refused(run(capsys, "inspect", str(top)), f"{top}: backing file: ", BACKINGS[backing])
    # The same image named by a VMX beside it.
    vmx = top.parent / "guest.vmx"
    vmx.write_text(vmx_text("top.qcow2"))
    refused(run(capsys, "inspect", str(vmx)), f"{top}: backing file: ", BACKINGS[backing])
    vmx.unlink()
    assert tree(tmp_path) == before
    assert ApplianceSession.total_launches == launches


def test_backing_file_beside_the_image_is_fine(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    images = tmp_path / "images"
    images.mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(images / "base.raw"), "1M"],
                   check=True)
    top = qcow2_with_backing(tmp_path, str(images / "base.raw"))  # absolute, but inside
    result = run(capsys, "convert", "disk", "--no-verify", str(top), str(tmp_path / "o.qcow2"))
    assert result.returncode == 0, result.stderr


# --- OVF hrefs ---------------------------------------------------------------------------------

def ovf_bytes(href: str) -> bytes:
    return envelope("vm", href, 1 << 20, 1 << 20, memory_mib=512, vcpus=1,
                    mac="00:50:56:00:00:01", network="VM Network")


def href_line(data: bytes) -> int:
    return next(n for n, line in enumerate(data.decode().splitlines(), 1) if "href" in line)


@pytest.mark.parametrize("href", ["../x.vmdk", "sub/../../x.vmdk", "/etc/shadow",
                                  "http://example.invalid/x.vmdk"])
def test_ovf_href_outside_the_package_is_refused(href: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (tmp_path / "x.vmdk").write_bytes(b"outside")
    data = ovf_bytes(href)
    ovf = pkg / "vm.ovf"
    ovf.write_bytes(data)
    before = tree(tmp_path)
    refused(run(capsys, "ova", "xml", str(ovf)), f"{ovf}:{href_line(data)}: ovf:href: ", href)
    # The same envelope inside an OVA (a tar): the package is the base.
    ova = tmp_path / "vm.ova"
    with tarfile.open(ova, "w") as tar:
        tar.add(ovf, arcname="vm.ovf")
    before = tree(tmp_path)
    refused(run(capsys, "ova", "xml", str(ova)), f"{ova}:{href_line(data)}: ovf:href: ", href)
    assert tree(tmp_path) == before


def test_ovf_href_symlink_out_is_refused(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "disk.vmdk").symlink_to("/etc/shadow")
    data = ovf_bytes("disk.vmdk")
    ovf = pkg / "vm.ovf"
    ovf.write_bytes(data)
    refused(run(capsys, "ova", "xml", str(ovf)), f"{ovf}:{href_line(data)}: ovf:href: ",
            "through a symlink")


# --- an unrecognisable disk is a blocker -------------------------------------------------------

def test_blank_disk_is_a_blocker(tmp_path: Path) -> None:
    blank = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(blank), "16M"], check=True)
    proc = subprocess.run([VMSHIFT, "inspect", "--json", str(blank)], capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 3, proc.stderr
    doc = json.loads(proc.stdout)
    fired = {f["rule_id"]: f for f in doc["findings"] if f["outcome"] == "fired"}
    finding = fired["guest.unrecognised_disk"]
    assert finding["category"] == "blocker"
    assert finding["details"] == [f"{blank}: no partition table, no filesystem, no boot sector"]


# --- vSphere disk paths after the storage map ----------------------------------------------------

def test_vsphere_disks_after_the_storage_map(tmp_path: Path) -> None:
    from vmshift.confine import Policy
    from vmshift.convert.maps import parse_storage_map
    from vmshift.convert.vsphere.datastore import confine_disks
    from vmshift.errors import BadInput
    from vmshift.model import Disk, VirtualMachine

    store = tmp_path / "store"
    (store / "vm").mkdir(parents=True)
    (store / "vm" / "ok.vmdk").write_bytes(b"")
    (store / "vm" / "out.vmdk").symlink_to("/etc/shadow")
    policy = Policy.of(storage_map=parse_storage_map(f"ds1={store}"))

    def vm(source: str) -> VirtualMachine:
        return VirtualMachine(name="web", source_ref="vc#/dc/vm/web",
                              disks=[Disk(source=source, label="Hard disk 1")])

    confine_disks(vm("[ds1] vm/ok.vmdk"), policy, must_exist=True)
    confine_disks(vm("[other] vm/x.vmdk"), policy, must_exist=False)  # unmapped: a note
    for source, why in [("[ds1] vm/out.vmdk", "through a symlink"),
                        ("[other] vm/x.vmdk", "ESXi datastore"),
                        ("[..] x.vmdk", "datastore name '..'"),
                        ("[ds1] ../../etc/shadow", "climbs out of its datastore")]:
        with pytest.raises(BadInput) as info:
            confine_disks(vm(source), policy, must_exist=True)
        assert info.value.message.startswith("vc#/dc/vm/web: Hard disk 1: ")
        assert why in info.value.message
