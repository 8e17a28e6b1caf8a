"""Inspection of the test bed's reference guest (Debian 12 "exported from ESXi").

One appliance launch per variant: the base guest's VMDK through the Python API
(in-process, so the session's launch counter can be read), the no-virtio
variant's .vmx through `vmshift inspect --rules-only` as a real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.inspect_images import sha256
from vmshift.inspect.api import inspect_disks
from vmshift.inspect.probe import probe_image
from vmshift.inspect.result import Inspection
from vmshift.inspect.rules import Outcome, evaluate
from vmshift.inspect.session import ApplianceSession
from vmshift.inspect.sources import from_disks
from vmshift.model import VirtualMachine


@pytest.fixture(scope="module")
def base(vmware_guest) -> dict:  # type: ignore[no-untyped-def]
    disk = Path(vmware_guest.vmdk_sparse)
    before = sha256(disk)
    launches = ApplianceSession.total_launches
    result = inspect_disks([str(disk)])
    return {"guest": vmware_guest, "insp": result, "disk": disk, "before": before,
            "after": sha256(disk), "launches": ApplianceSession.total_launches - launches}


def only_guest(insp: Inspection):  # type: ignore[no-untyped-def]
    [g] = insp.guests
    return g


def test_debian_12_detected(base: dict) -> None:
    g = only_guest(base["insp"])
    assert (g.type, g.distro, g.major) == ("linux", "debian", 12)
    assert g.hostname == base["guest"].hostname and g.arch == "x86_64"
    assert (g.package_format, g.bootloader, g.firmware_needed) == ("deb", "grub2", "bios")


def test_open_vm_tools_flagged(base: dict) -> None:
    g = only_guest(base["insp"])
    assert g.vmware_tools is True
    assert [a.name for a in g.applications if a.vmware_tools] == ["open-vm-tools"]
    assert len(g.applications) > 50


def test_dev_sda1_in_fstab_needs_rewrite(base: dict) -> None:
    g = only_guest(base["insp"])
    root = next(e for e in g.fstab if e.mountpoint == "/")
    assert (root.device.spec, root.device.kind, root.device.needs_rewrite) == \
        ("/dev/sda1", "device_path", True)


def test_ens192_in_interfaces(base: dict) -> None:
    g = only_guest(base["insp"])
    ens = [n for n in g.network if n.interface == "ens192"]
    assert [(n.source, n.file, n.method) for n in ens] == \
        [("ifupdown", "/etc/network/interfaces", "static")]


def test_virtio_present_in_initramfs(base: dict) -> None:
    g = only_guest(base["insp"])
    [k] = [k for k in g.kernels if k.version == base["guest"].kernel]
    assert k.initramfs is not None and k.initramfs.compression[-1] == "zstd"
    assert k.initramfs.virtio == {"virtio_blk": True, "virtio_scsi": True, "virtio_net": True,
                                  "virtio_pci": True}
    findings = {f.rule_id: f for f in evaluate(from_disks([str(base["disk"])], [
        probe_image(base["disk"])]).vm, base["insp"])}
    assert findings["guest.virtio_missing_linux"].outcome == Outcome.PASSED


def test_one_launch_and_source_unchanged(base: dict) -> None:
    assert base["launches"] == 1  # the session wrapper's count
    assert base["insp"].appliance_launches == 1  # libguestfs' LAUNCH_DONE events
    assert base["before"] == base["after"]


def test_novirtio_from_vmx_rules_only(vmware_guest_novirtio) -> None:  # type: ignore[no-untyped-def]
    # The .vmx goes through the model hook (vmshift/inspect/sources.py): the VMX
    # reader's model and the inspection of its (streamOptimized) disk meet in the rules.
    vmx = Path(vmware_guest_novirtio.vmx_stream)
    exe = Path(sys.executable).parent / "vmshift"
    proc = subprocess.run([str(exe), "inspect", "--rules-only", str(vmx)], capture_output=True,
                          text=True, env=dict(os.environ), timeout=1200)
    out = proc.stdout
    fired_blockers = [ln for ln in out.splitlines() if ln.split()[:2] == ["FIRED", "blocker"]]
    # Exit 3 exactly when a blocker fired (the guest's free space decides), else 0.
    assert proc.returncode == (3 if fired_blockers else 0), proc.stderr[-2000:]
    assert "Disks:" not in out  # --rules-only: findings, no inspection tables
    fired = [ln.split() for ln in out.splitlines() if ln.strip().startswith("FIRED")]
    virtio = [f for f in fired if f[2] == "guest.virtio_missing_linux"]
    assert virtio and virtio[0][1] == "warning"
    assert f"/boot/initrd.img-{vmware_guest_novirtio.kernel}:" in " ".join(virtio[0])
    assert any(f[2] == "guest.fstab_device_names" for f in fired)
    # Model facts only a VMX has: evaluated (the disk alone would leave them n/a).
    assert any(f[2] == "vsphere.cbt_disabled" for f in fired)
    assert not any(ln.split()[0] == "ok" for ln in out.splitlines() if ln.strip())


def test_root_has_room_and_free_space_rule_passes(base: dict) -> None:
    """The root filesystem fills its 3 GiB partition, as an exported disk's would:
    most of it is free, and the free-space blocker must not fire."""
    insp = base["insp"]
    [root] = [f for f in insp.filesystems if f.mountpoint == "/"]
    assert root.size_bytes is not None and root.size_bytes > (2 << 30)
    assert root.free_bytes is not None and root.free_bytes > (1 << 30)
    [rule] = [f for f in evaluate(VirtualMachine(), insp) if f.rule_id == "guest.free_space"]
    assert rule.outcome == Outcome.PASSED
