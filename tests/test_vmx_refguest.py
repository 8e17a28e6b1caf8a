"""The reference VMware-style guest (a real Debian 12 built like an ESXi export):
its VMX through vmx2xml, and the chooser fed by a real inspection of its disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from vmshift.convert import libvirt_xml as lx
from vmshift.convert.vmx import read_vmx
from vmshift.convert.writer import build_domain_xml, validate
from vmshift.inspect.api import inspect_disks

VMSHIFT = str(Path(sys.executable).parent / "vmshift")


def test_reference_vmx_to_xml(vmware_guest) -> None:  # type: ignore[no-untyped-def]
    result = subprocess.run([VMSHIFT, "vmx2xml", "--virt-type", "qemu", str(vmware_guest.vmx)],
                            capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    validate(result.stdout)
    dom = lx.Domain.from_xml(result.stdout)
    assert dom.name == vmware_guest.name and dom.uuid == vmware_guest.uuid
    assert dom.memory_kib == 1024 * 1024 and dom.vcpus == 2
    assert [i.mac for i in dom.interfaces] == [vmware_guest.mac]
    assert [d.source_file for d in dom.disks if d.device == "disk"] == [
        str(vmware_guest.vmdk_sparse)]
    assert [d.target_bus for d in dom.disks if d.device == "disk"] == ["virtio"]
    assert len(dom.serials) == 1 and dom.consoles[0].target_port == 0
    assert "serial0: VMware file backing" in result.stderr  # the change is said


def test_chooser_falls_back_when_inspection_finds_no_virtio(vmware_guest_novirtio) -> None:  # type: ignore[no-untyped-def]
    """A real inspection of a guest whose initramfs has VMware drivers only."""
    vm = read_vmx(vmware_guest_novirtio.vmx)
    inspection = inspect_disks([str(vmware_guest_novirtio.vmdk_sparse)], vm=vm)
    result = build_domain_xml(vm, virt_type="qemu", inspection=inspection)
    validate(result.xml)
    dom = lx.Domain.from_xml(result.xml)
    assert result.machine == "q35" and result.disk_bus == "sata"
    assert [d.target_bus for d in dom.disks if d.device == "disk"] == ["sata"]
    assert any("no kernel can boot from virtio" in n for n in result.notes)
    # Without the inspection the same VM gets virtio: the fallback is the inspection's doing.
    assert build_domain_xml(vm, virt_type="qemu").disk_bus == "virtio"
