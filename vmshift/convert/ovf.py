"""The OVF input: an OVF envelope (XML, parsed with lxml) -> ``VirtualMachine``.

Elements are matched by local name, so OVF 1.x and 2.x envelopes (and
VMware's extensions) read the same. The hardware is a list of CIM items
identified by ``rasd:ResourceType``; disks point to the DiskSection, which
points to a file in References. Where the file lives (an OVA tar or a
directory) is the package reader's business (``vmshift.convert.ova``): this
module returns the file ids and lets it place them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from vmshift.confine import Where, relative
from vmshift.convert import guestos
from vmshift.errors import bad_input
from vmshift.model import (
    BusType,
    CdRom,
    ConnectionType,
    Controller,
    CpuTopology,
    Disk,
    Firmware,
    FirmwareType,
    GuestHints,
    Nic,
    VirtualMachine,
)

MAX_ENVELOPE_BYTES = 16 * 1024 * 1024
# CIM ResourceType values (DSP1041).
CPU, MEMORY, IDE, SCSI, NIC, CD, DVD, DISK, SATA = (
    "3", "4", "5", "6", "10", "15", "16", "17", "20")
CONTROLLERS = {IDE: BusType.IDE, SCSI: BusType.SCSI, SATA: BusType.SATA}
# "byte * 2^20" style units -> bytes multiplier.
_UNIT_WORDS = {"byte": 1, "kilobyte": 1024, "megabyte": 1024**2, "gigabyte": 1024**3}


@dataclass
class Envelope:
    vm: VirtualMachine
    files: dict[str, str] = field(default_factory=dict)  # file id -> href
    file_lines: dict[str, int] = field(default_factory=dict)  # file id -> line of its href
    disk_files: dict[str, str] = field(default_factory=dict)  # Disk.label -> file id


def _local(element: etree._Element) -> str:
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _children(parent: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in parent if _local(c) == name]


def _descendants(parent: etree._Element, name: str) -> list[etree._Element]:
    return [e for e in parent.iter() if _local(e) == name]


def _attr(element: etree._Element, name: str) -> str | None:
    for key, value in element.attrib.items():
        if etree.QName(key).localname == name:
            return value
    return None


def _text(item: etree._Element, name: str) -> str | None:
    found = _children(item, name)
    return found[0].text.strip() if found and found[0].text else None


def parse_envelope(path: Path, data: bytes) -> Envelope:
    """Parse OVF XML (no entities, no network: an OVF is untrusted input)."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise bad_input(path, "OVF envelope larger than 16 MiB: not an OVF")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False,
                             load_dtd=False)
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise bad_input(path, f"not valid XML: {exc.msg}", exc.lineno) from None
    if _local(root) != "Envelope":
        raise bad_input(path, f"not an OVF envelope (root element {_local(root)!r})",
                        root.sourceline)
    systems = _descendants(root, "VirtualSystem")
    if len(systems) != 1:
        raise bad_input(path, f"{len(systems)} VirtualSystem elements: vmshift converts one "
                              "VM per package (a VirtualSystemCollection is not supported)")
    envelope = Envelope(vm=VirtualMachine(source_kind="ovf", source_ref=str(path)))
    for ref in _descendants(root, "File"):
        file_id, href = _attr(ref, "id"), _attr(ref, "href")
        if not file_id or not href:
            raise bad_input(path, "References/File without ovf:id or ovf:href", ref.sourceline)
        for packed in ("compression", "chunkSize"):
            if _attr(ref, packed):
                raise bad_input(path, f"file {href!r} is stored with ovf:{packed}: such "
                                      "disks cannot be read in place (unpack the package)",
                                ref.sourceline)
        # Every file the package names stays inside it: refused here, with its line.
        relative(path.parent if path.suffix.lower() == ".ovf" else path, href,
                 Where(path, ref.sourceline, "ovf:href"), what="file")
        envelope.files[file_id] = href
        envelope.file_lines[file_id] = ref.sourceline
    disks = _disk_section(path, root)
    _system(path, systems[0], envelope, disks)
    return envelope


def _disk_section(path: Path, root: etree._Element) -> dict[str, tuple[str | None, int | None]]:
    """diskId -> (fileRef, capacity in bytes)."""
    disks = {}
    for section in _descendants(root, "DiskSection"):
        for disk in _children(section, "Disk"):
            disk_id = _attr(disk, "diskId")
            if not disk_id:
                raise bad_input(path, "DiskSection/Disk without ovf:diskId", disk.sourceline)
            capacity = _bytes(path, _attr(disk, "capacity"),
                              _attr(disk, "capacityAllocationUnits") or "byte", disk)
            disks[disk_id] = (_attr(disk, "fileRef"), capacity)
    return disks


def _bytes(path: Path, value: str | None, units: str, element: etree._Element) -> int | None:
    """'byte * 2^30' and friends (DSP0004 programmatic units)."""
    if value is None:
        return None
    try:
        number = int(value)
        multiplier = 1
        for part in units.replace(" ", "").lower().split("*"):
            if "^" in part:
                base, exponent = part.split("^")
                multiplier *= int(base) ** int(exponent)
            elif part in _UNIT_WORDS:
                multiplier *= _UNIT_WORDS[part]
            elif part:
                raise ValueError(part)
    except ValueError:
        raise bad_input(path, f"size {value!r} in units {units!r}: not understood",
                        element.sourceline) from None
    if number < 0:
        raise bad_input(path, f"negative size {value!r}", element.sourceline)
    return number * multiplier


def _system(path: Path, system: etree._Element, env: Envelope,
            disks: dict[str, tuple[str | None, int | None]]) -> None:
    vm = env.vm
    vm.name = _text(system, "Name") or _attr(system, "id") or path.stem
    os_section = _children(system, "OperatingSystemSection")
    guest_id = _attr(os_section[0], "osType") if os_section else None
    vm.guest = GuestHints(vmware_guest_id=guest_id, family=guestos.family(guest_id),
                          arch=guestos.arch(guest_id),
                          name=_text(os_section[0], "Description") if os_section else None)
    annotation = _children(system, "AnnotationSection")
    vm.annotation = _text(annotation[0], "Annotation") if annotation else None
    hardware = _descendants(system, "VirtualHardwareSection")
    if not hardware:
        raise bad_input(path, "VirtualSystem has no VirtualHardwareSection", system.sourceline)
    _hardware(path, hardware[0], env, disks)


def _hardware(path: Path, section: etree._Element, env: Envelope,
              disks: dict[str, tuple[str | None, int | None]]) -> None:
    vm = env.vm
    vm.disks, vm.cdroms, vm.floppies, vm.nics = [], [], [], []
    vm.serials, vm.parallels = [], []
    controllers: dict[str, Controller] = {}
    items = [i for i in section if _local(i) in ("Item", "StorageItem", "EthernetPortItem")]
    config = {(_attr(c, "key") or ""): (_attr(c, "value") or "")
              for c in _children(section, "Config")}
    for item in items:
        kind = _text(item, "ResourceType")
        if kind in CONTROLLERS:
            index = len([c for c in controllers.values() if c.bus == CONTROLLERS[kind]])
            controllers[_text(item, "InstanceID") or ""] = Controller(
                bus=CONTROLLERS[kind], index=index,
                model=(_text(item, "ResourceSubType") or "").lower() or None)
    for item in items:
        kind = _text(item, "ResourceType")
        if kind == CPU:
            vm.cpu = _cpu(path, item)
        elif kind == MEMORY:
            units = _text(item, "AllocationUnits") or "byte * 2^20"
            size = _bytes(path, _text(item, "VirtualQuantity"), units, item)
            vm.memory_mib = size // (1024 * 1024) if size else None
        elif kind == DISK:
            _disk(path, item, env, disks, controllers)
        elif kind in (CD, DVD):
            vm.cdroms.append(CdRom(controller=controllers.get(_text(item, "Parent") or ""),
                                   device_type="empty"))
        elif kind == NIC:
            vm.nics.append(_nic(path, item))
    _firmware(vm, config)
    if not vm.memory_mib or not vm.cpu.vcpus:
        raise bad_input(path, "VirtualHardwareSection lacks the memory or CPU item")


def _cpu(path: Path, item: etree._Element) -> CpuTopology:
    text = _text(item, "VirtualQuantity") or ""
    if not text.isdigit() or not 1 <= int(text) <= 768:
        raise bad_input(path, f"CPU VirtualQuantity {text!r}: not a vCPU count", item.sourceline)
    vcpus = int(text)
    cores_el = _children(item, "CoresPerSocket")
    cores = int(cores_el[0].text) if cores_el and (cores_el[0].text or "").isdigit() else 1
    if cores < 1 or vcpus % cores:
        raise bad_input(path, f"CoresPerSocket {cores} does not divide {vcpus} vCPUs",
                        item.sourceline)
    return CpuTopology(vcpus=vcpus, sockets=vcpus // cores, cores_per_socket=cores,
                       threads_per_core=1)


def _disk(path: Path, item: etree._Element, env: Envelope,
          disks: dict[str, tuple[str | None, int | None]],
          controllers: dict[str, Controller]) -> None:
    resource = _text(item, "HostResource") or ""
    disk_id = resource.rsplit("/", 1)[-1]
    if disk_id not in disks:
        raise bad_input(path, f"disk item names {resource!r}, which DiskSection lacks",
                        item.sourceline)
    file_ref, capacity = disks[disk_id]
    label = _text(item, "ElementName") or disk_id
    address = _text(item, "AddressOnParent")
    disk = Disk(source=None, format="vmdk", capacity_bytes=capacity, label=label,
                controller=controllers.get(_text(item, "Parent") or ""),
                unit=int(address) if address and address.isdigit() else None)
    env.vm.disks = [*(env.vm.disks or []), disk]
    if file_ref:
        if file_ref not in env.files:
            raise bad_input(path, f"disk {disk_id!r} names file {file_ref!r}, which "
                                  "References lacks", item.sourceline)
        env.disk_files[label] = file_ref
    else:
        env.vm.notes.append(f"{label}: an empty disk in the OVF (no file); left out")
        env.vm.disks.remove(disk)


def _nic(path: Path, item: etree._Element) -> Nic:
    mac = (_text(item, "Address") or "").lower() or None
    if mac and len(mac.split(":")) != 6:
        raise bad_input(path, f"NIC Address {mac!r}: not a MAC", item.sourceline)
    return Nic(mac=mac, model=(_text(item, "ResourceSubType") or "").lower() or None,
               network=_text(item, "Connection"), connection=ConnectionType.NETWORK,
               mac_type="static" if mac else None, label=_text(item, "ElementName"))


def _firmware(vm: VirtualMachine, config: dict[str, str]) -> None:
    efi = config.get("firmware", "bios").lower() == "efi"
    vm.firmware = Firmware(
        type=FirmwareType.EFI if efi else FirmwareType.BIOS,
        secure_boot=config.get("uefi.secureBoot.enabled", "false").lower() == "true",
    )
