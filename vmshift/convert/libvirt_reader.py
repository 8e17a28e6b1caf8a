"""libvirt domain XML -> the neutral model, through the ``libvirt_xml`` mapper.

The reader for a VM that already runs on KVM (what ``migrate`` moves): it
says what libvirt's definition holds, in the model's terms, and nothing
about what to do with it. All XML access goes through the mapper's
declared properties; nothing here walks the document itself.
"""

from __future__ import annotations

from vmshift.convert import libvirt_xml as lx
from vmshift.model import (
    BusType,
    CdRom,
    ConnectionType,
    Controller,
    CpuTopology,
    Disk,
    DiskMode,
    DiskSharing,
    Firmware,
    FirmwareType,
    Floppy,
    Nic,
    PassthroughDevice,
    RdmMode,
    Tpm,
    VirtualMachine,
)

BUSES = {b.value for b in BusType}
CONNECTIONS = {"network": ConnectionType.NETWORK, "bridge": ConnectionType.BRIDGE,
               "direct": ConnectionType.DIRECT, "user": ConnectionType.USER}


def parse(xml: str | bytes | lx.Domain) -> lx.Domain:
    return xml if isinstance(xml, lx.Domain) else lx.Domain.from_xml(xml)


def read_domain(xml: str | bytes | lx.Domain, source_ref: str | None = None) -> VirtualMachine:
    dom = parse(xml)
    devices = storage_devices(dom)
    return VirtualMachine(
        name=dom.name, uuid=dom.uuid, source_kind="libvirt", source_ref=source_ref,
        firmware=firmware(dom), memory_mib=_mib(dom.memory_kib, dom.memory_unit),
        cpu=CpuTopology(dom.vcpus, dom.cpu_sockets, dom.cpu_cores, dom.cpu_threads),
        disks=[d for d in devices if isinstance(d, Disk)],
        cdroms=[d for d in devices if isinstance(d, CdRom)],
        floppies=[d for d in devices if isinstance(d, Floppy)],
        nics=[read_nic(i) for i in dom.interfaces],
        passthrough=passthrough(dom),
        leases=[f"{le.lockspace}/{le.key}" for le in dom.leases])


def _mib(value: int | None, unit: str | None) -> int | None:
    """<memory> is KiB unless its unit says otherwise."""
    if value is None:
        return None
    scale = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "m": 1 << 20, "mib": 1 << 20,
             "g": 1 << 30, "gib": 1 << 30}.get((unit or "KiB").lower(), 1024)
    return value * scale >> 20


def storage_devices(dom: lx.Domain) -> list[Disk | CdRom | Floppy]:
    """Every <disk> as a model Disk, CdRom or Floppy, in the definition's order."""
    return [read_disk(d) for d in dom.disks]


def read_disk(d: lx.Disk) -> Disk | CdRom | Floppy:
    source = d.source_file or d.source_dev or d.source_name
    kind = d.type or "file"  # libvirt's default
    if d.device == "cdrom":
        return CdRom(source=source, controller=_controller(d), unit=d.address_unit,
                      device_type=_drive_type(source, kind, "iso"), boot_order=d.boot_order,
                      target_dev=d.target_dev, source_type=kind, readonly=d.readonly)
    if d.device == "floppy":
        return Floppy(source=source, unit=d.address_unit,
                      device_type=_drive_type(source, kind, "image"), target_dev=d.target_dev,
                      source_type=kind, readonly=d.readonly)
    chain = d.backing_chain()
    return Disk(
        source=source, format=d.driver_type, controller=_controller(d), unit=d.address_unit,
        boot_order=d.boot_order,
        mode=DiskMode.NONPERSISTENT if d.transient else DiskMode.PERSISTENT,
        sharing=DiskSharing.MULTI_WRITER if d.shareable else DiskSharing.NONE,
        # device='lun' passes SCSI commands through, like VMware's physical RDM.
        rdm=RdmMode.PHYSICAL if d.device == "lun" else None, passthrough=kind == "block",
        snapshot_chain=[*reversed(chain), source] if chain and source else None,
        datastore=d.source_pool, volume=d.source_volume, label=d.target_dev,
        readonly=d.readonly, source_offset=d.slice_offset, source_size=d.slice_size,
        target_dev=d.target_dev, source_type=kind, cache=d.driver_cache)


def _controller(d: lx.Disk) -> Controller | None:
    bus = d.target_bus
    return Controller(BusType(bus), d.address_controller) if bus in BUSES else None


def _drive_type(source: str | None, kind: str, image: str) -> str:
    if source is None:
        return "empty"
    return "host-device" if kind == "block" else image


def read_nic(i: lx.Interface) -> Nic:
    # A running domain's XML may say type='bridge' for a NIC on a libvirt
    # network; the network is what it is attached to.
    conn = ConnectionType.NETWORK if i.source_network else CONNECTIONS.get(
        i.type or "", ConnectionType.CUSTOM)
    return Nic(mac=i.mac, model=i.model,
               network=i.source_network or i.source_bridge or i.source_dev,
               connection=conn, label=i.alias, boot_order=i.boot_order)


def passthrough(dom: lx.Domain) -> list[PassthroughDevice]:
    """SR-IOV NICs (type='hostdev'), then <hostdev> devices."""
    out = [PassthroughDevice("sriov", i.mac, f"SR-IOV interface {i.mac or ''}")
           for i in dom.interfaces if i.type == "hostdev"]
    out += [PassthroughDevice(h.type or "unknown", None, f"hostdev type={h.type} mode={h.mode}")
            for h in dom.hostdevs]
    return out


def nvram_path(dom: lx.Domain) -> str | None:
    """<nvram>PATH</nvram>, or <nvram type='file'><source file=PATH/> (libvirt
    8.5+); None for none or a non-file NVRAM."""
    if (dom.nvram_type or "file") != "file":
        return None
    return dom.nvram_source_file or (dom.nvram or "").strip() or None


def firmware(dom: lx.Domain) -> Firmware:
    nvram = nvram_path(dom)
    efi = dom.os_firmware == "efi" or dom.os_loader_type == "pflash" or nvram is not None
    tpms = [Tpm(t.backend_type, t.backend_version,
                t.source_path if t.source_type == "dir" else None) for t in dom.tpms]
    secure = any(f.name == "secure-boot" and f.enabled for f in dom.firmware_features)
    return Firmware(
        type=FirmwareType.EFI if efi else FirmwareType.BIOS,
        secure_boot=True if secure else (False if not efi else None),
        nvram_present=nvram is not None, nvram_path=nvram, tpm_present=bool(tpms), tpms=tpms)
