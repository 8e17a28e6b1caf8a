"""The XML mapping (libvirt_xml) and the device choices (chooser).

Every domain the chooser writes here is checked with virt-xml-validate.
"""

from __future__ import annotations

import pytest
from lxml import etree

from tests.conftest import CORPUS
from vmshift.convert import libvirt_xml as lx
from vmshift.convert.maps import NetworkMap, StorageMap
from vmshift.convert.writer import build_domain_xml, validate
from vmshift.errors import BadInput
from vmshift.inspect.result import Guest, Initramfs, Inspection, Kernel, WindowsInfo
from vmshift.inspect.result import WindowsService as Service
from vmshift.model import (
    Controller,
    CpuTopology,
    Disk,
    DiskSharing,
    Firmware,
    FirmwareType,
    GuestHints,
    Nic,
    VirtualMachine,
)


def make_vm(guest_id: str = "debian12-64", disks: int = 1, **kw: object) -> VirtualMachine:
    vm = VirtualMachine(
        name="vm1", uuid="564d1a2b-3c4d-5e6f-7081-92a3b4c5d6e7", source_kind="test",
        memory_mib=2048, cpu=CpuTopology(vcpus=4, sockets=2, cores_per_socket=2),
        firmware=Firmware(type=FirmwareType.BIOS, secure_boot=False),
        guest=GuestHints(vmware_guest_id=guest_id,
                         family="windows" if guest_id.startswith("win") else "linux"),
        disks=[Disk(source=f"/images/d{i}.vmdk", format="vmdk") for i in range(disks)],
        cdroms=[], floppies=[], serials=[], parallels=[],
        nics=[Nic(mac="00:50:56:01:02:03", network="VM Network", label="ethernet0")])
    for key, value in kw.items():
        setattr(vm, key, value)
    return vm


def domain(vm: VirtualMachine, **kw: object) -> lx.Domain:
    result = build_domain_xml(vm, virt_type=str(kw.pop("virt_type", "qemu")), **kw)  # type: ignore[arg-type]
    validate(result.xml)
    return lx.Domain.from_xml(result.xml)


def linux_inspection(blk: bool, scsi: bool) -> Inspection:
    virtio = {"virtio_blk": blk, "virtio_scsi": scsi, "virtio_pci": True, "virtio_net": False}
    kernel = Kernel(version="6.1.0", vmlinuz="/boot/vmlinuz", modules_dir="/lib/modules/6.1.0",
                    initramfs=Initramfs(path="/boot/initrd.img", compression=["zstd"],
                                        virtio=virtio))
    return Inspection(disks=[], filesystems=[], encrypted=[],
                      guests=[Guest(root="/dev/sda1", type="linux", kernels=[kernel])])


def windows_inspection(drivers: bool) -> Inspection:
    services = {name: Service(name=name, present=drivers) for name in ("viostor", "netkvm")}
    info = WindowsInfo(system_root="C:\\Windows", system_root_path="/Windows",
                       product_name="Windows Server 2019", version="10.0", build="17763",
                       edition=None, installation_type="Server",
                       current_control_set="ControlSet001", services=services)
    return Inspection(disks=[], filesystems=[], encrypted=[],
                      guests=[Guest(root="/dev/sda2", type="windows", windows=info)])


# --- the mapper ------------------------------------------------------------------


def test_mapper_round_trips_libvirt_xml_unchanged() -> None:
    """Undeclared elements survive: the element tree is the storage."""
    source = (CORPUS / "vmx-libvirt-xml" / "serial-network-server.xml").read_bytes()
    dom = lx.Domain.from_xml(source)
    assert dom.name == "test" and dom.memory_kib == 32768 and dom.vcpus == 1
    assert [s.source_service for s in dom.serials] == ["42001"]
    canon = etree.tostring(etree.fromstring(source), method="c14n")
    assert etree.tostring(etree.fromstring(dom.to_xml().encode()), method="c14n") == canon


def test_mapper_set_and_remove() -> None:
    disk = lx.Disk(device="disk", source_file="/a.qcow2", target_dev="vda")
    disk.readonly = True
    assert b"<readonly/>" in etree.tostring(disk.node)
    disk.source_file = None
    disk.readonly = False
    assert disk.source_file is None and disk.node.find("source") is not None
    assert disk.node.find("readonly") is None
    video = lx.Video(model="vga", primary=True)
    assert video.node.find("model").get("primary") == "yes" and video.primary is True


# --- the chooser -----------------------------------------------------------------


def test_linux_defaults() -> None:
    dom = domain(make_vm())
    assert dom.type == "qemu" and dom.os_machine == "q35" and dom.cpu_mode == "host-model"
    assert (dom.cpu_sockets, dom.cpu_cores, dom.cpu_threads) == (2, 2, 1)
    assert dom.uuid == "564d1a2b-3c4d-5e6f-7081-92a3b4c5d6e7"
    assert [(d.target_bus, d.driver_type) for d in dom.disks] == [("virtio", "vmdk")]
    assert [(i.model, i.mac, i.source_network) for i in dom.interfaces] == [
        ("virtio", "00:50:56:01:02:03", "default")]
    assert [c.target_name for c in dom.channels] == ["org.qemu.guest_agent.0"]
    assert dom.rngs and dom.consoles and dom.clock_offset == "utc"
    assert dom.os_firmware is None


def test_kvm_type() -> None:
    assert domain(make_vm(), virt_type="kvm").type == "kvm"


def test_efi_secure_boot() -> None:
    vm = make_vm(firmware=Firmware(type=FirmwareType.EFI, secure_boot=True))
    dom = domain(vm)
    assert dom.os_firmware == "efi" and dom.smm is True
    assert {(f.name, f.enabled) for f in dom.firmware_features} == {
        ("secure-boot", True), ("enrolled-keys", True)}
    plain = domain(make_vm(firmware=Firmware(type=FirmwareType.EFI, secure_boot=False)))
    assert {(f.name, f.enabled) for f in plain.firmware_features} == {
        ("secure-boot", False), ("enrolled-keys", False)}
    assert plain.smm is None


def test_windows_uninspected_is_safe_and_enlightened() -> None:
    tcg = domain(make_vm("windows2019srv-64"))
    assert tcg.clock_offset == "localtime" and tcg.hyperv_mode is None  # QEMU refuses hv-* on TCG
    dom = domain(make_vm("windows2019srv-64"), virt_type="kvm")
    assert dom.clock_offset == "localtime" and dom.hyperv_mode == "custom"
    assert dom.node.find("features/hyperv/relaxed").get("state") == "on"
    assert {t.name for t in dom.timers} >= {"hypervclock", "rtc"}
    assert [d.target_bus for d in dom.disks] == ["sata"]
    assert [i.model for i in dom.interfaces] == ["e1000e"]


def test_windows_with_virtio_drivers() -> None:
    dom = domain(make_vm("windows2019srv-64"), inspection=windows_inspection(True))
    assert [d.target_bus for d in dom.disks] == ["virtio"]
    assert [i.model for i in dom.interfaces] == ["virtio"]
    dom = domain(make_vm("windows2019srv-64"), inspection=windows_inspection(False))
    assert [d.target_bus for d in dom.disks] == ["sata"]


def test_linux_without_virtio_falls_back() -> None:
    dom = domain(make_vm(), inspection=linux_inspection(blk=False, scsi=False))
    assert [d.target_bus for d in dom.disks] == ["sata"]
    dom = domain(make_vm(), inspection=linux_inspection(blk=False, scsi=True))
    assert [d.target_bus for d in dom.disks] == ["scsi"]
    assert [c.model for c in dom.controllers] == ["virtio-scsi"]


def test_old_guest_gets_pc_and_ide() -> None:
    dom = domain(make_vm("winXPPro"))
    assert dom.os_machine == "pc" and [d.target_bus for d in dom.disks] == ["ide"]
    assert [i.model for i in dom.interfaces] == ["e1000"]


def test_many_or_shared_disks_use_virtio_scsi() -> None:
    dom = domain(make_vm(disks=12))
    assert {d.target_bus for d in dom.disks} == {"scsi"}
    assert [d.address_unit for d in dom.disks] == list(range(12))
    shared = make_vm(disks=2)
    shared.disks[1].sharing = DiskSharing.MULTI_WRITER  # type: ignore[index]
    dom = domain(shared)
    assert {d.target_bus for d in dom.disks} == {"scsi"} and dom.disks[1].shareable


def test_network_and_storage_maps() -> None:
    vm = make_vm()
    vm.disks = [Disk(source="[LocalDS_0] vm1/vm1.vmdk", format="vmdk",
                     controller=Controller(bus="scsi"))]  # type: ignore[arg-type]
    netmap = NetworkMap.from_dict({"VM Network": ("br0", "bridge")})
    smap = StorageMap(datastores={"LocalDS_0": ("pool", "images")})
    dom = domain(vm, network_map=netmap, storage_map=smap)
    assert [(i.type, i.source_bridge) for i in dom.interfaces] == [("bridge", "br0")]
    assert [(d.type, d.source_pool, d.source_volume) for d in dom.disks] == [
        ("volume", "images", "vm1.vmdk")]


def test_unmapped_datastore_ref_becomes_absolute_with_note() -> None:
    vm = make_vm()
    vm.disks = [Disk(source="[ds9] vm/x.vmdk", format="vmdk", label="Hard disk 1")]
    result = build_domain_xml(vm, virt_type="qemu")
    validate(result.xml)
    assert "/vmfs/volumes/ds9/vm/x.vmdk" in result.xml
    assert any("Hard disk 1" in n and "storage-map" in n for n in result.notes)


def test_essentials_missing_is_bad_input() -> None:
    with pytest.raises(BadInput, match="memory"):
        build_domain_xml(make_vm(memory_mib=None), virt_type="qemu")
    with pytest.raises(BadInput, match="vCPU"):
        build_domain_xml(make_vm(cpu=CpuTopology()), virt_type="qemu")
