"""vSphere virtual devices -> the neutral model's disks, NICs, ports...

Device kinds are told apart by their vSphere class (``_wsdlName``), the same
name in every API version, so a subclass relation in pyVmomi (VirtualVmxnet3
is a VirtualVmxnet) never turns one model into another.
"""

from __future__ import annotations

from typing import Any

from vmshift.model import (
    BusType,
    CdRom,
    CharDevice,
    ConnectionType,
    Controller,
    Disk,
    DiskMode,
    DiskSharing,
    Floppy,
    Nic,
    PassthroughDevice,
    RdmMode,
    UsbController,
    Video,
)

CONTROLLERS: dict[str, tuple[BusType, str | None]] = {
    "ParaVirtualSCSIController": (BusType.SCSI, "pvscsi"),
    "VirtualLsiLogicController": (BusType.SCSI, "lsilogic"),
    "VirtualLsiLogicSASController": (BusType.SCSI, "lsisas1068"),
    "VirtualBusLogicController": (BusType.SCSI, "buslogic"),
    "VirtualAHCIController": (BusType.SATA, "ahci"),
    "VirtualIDEController": (BusType.IDE, None),
    "VirtualNVMEController": (BusType.NVME, None),
}

NIC_MODELS = {
    "VirtualVmxnet3": "vmxnet3",
    "VirtualVmxnet3Vrdma": "vmxnet3-vrdma",
    "VirtualVmxnet2": "vmxnet2",
    "VirtualVmxnet": "vmxnet",
    "VirtualE1000": "e1000",
    "VirtualE1000e": "e1000e",
    "VirtualPCNet32": "vlance",
    "VirtualSriovEthernetCard": "sriov",
}

DISK_MODES = {
    "persistent": DiskMode.PERSISTENT,
    "independent_persistent": DiskMode.INDEPENDENT_PERSISTENT,
    "independent_nonpersistent": DiskMode.INDEPENDENT_NONPERSISTENT,
    "nonpersistent": DiskMode.NONPERSISTENT,
    "undoable": DiskMode.UNDOABLE,
    "append": DiskMode.UNDOABLE,  # an old redo-log mode; like undoable, not a plain disk
}

DISK_BACKINGS = {
    "VirtualDiskFlatVer2BackingInfo": "flat",
    "VirtualDiskFlatVer1BackingInfo": "flat",
    "VirtualDiskSparseVer2BackingInfo": "sparse",
    "VirtualDiskSparseVer1BackingInfo": "sparse",
    "VirtualDiskSeSparseBackingInfo": "seSparse",
    "VirtualDiskRawDiskMappingVer1BackingInfo": "rdm",
    "VirtualDiskRawDiskVer2BackingInfo": "rawdisk",
    "VirtualDiskPartitionedRawDiskVer2BackingInfo": "rawdisk",
    "VirtualDiskLocalPMemBackingInfo": "pmem",
}

MAC_TYPES = {"generated": "generated", "manual": "static", "assigned": "vpx"}

USB_MODELS = {"VirtualUSBController": "ehci", "VirtualUSBXHCIController": "xhci"}


def kind(obj: Any) -> str:
    return getattr(obj, "_wsdlName", type(obj).__name__)


def label(device: Any) -> str | None:
    info = getattr(device, "deviceInfo", None)
    return info.label if info is not None else None


def controllers(devices: list[Any]) -> dict[int, Controller]:
    found = {}
    for dev in devices:
        if kind(dev) in CONTROLLERS:
            bus, model = CONTROLLERS[kind(dev)]
            found[dev.key] = Controller(bus=bus, index=dev.busNumber, model=model)
    return found


def boot_orders(boot_options: Any) -> dict[int | str, int]:
    """Device key (or 'cdrom'/'floppy' for keyless entries) -> 1-based boot order."""
    orders: dict[int | str, int] = {}
    for position, entry in enumerate(getattr(boot_options, "bootOrder", None) or [], 1):
        key = getattr(entry, "deviceKey", None)
        slot: int | str = key if key is not None else kind(entry)
        orders.setdefault(slot, position)
    return orders


def disk_chain(backing: Any) -> list[str]:
    """The disk's files, parent first and the active one last."""
    chain = []
    while backing is not None:
        name = getattr(backing, "fileName", None)
        if name:
            chain.append(name)
        backing = getattr(backing, "parent", None)
    return list(reversed(chain))


def datastore_of(path: str | None) -> str | None:
    if path and path.startswith("[") and "]" in path:
        return path[1:path.index("]")]
    return None


def to_disk(dev: Any, ctrls: dict[int, Controller], boot: dict[int | str, int],
            ctk: dict[str, bool], vm_cbt: bool | None) -> Disk:
    backing = dev.backing
    bkind = DISK_BACKINGS.get(kind(backing), kind(backing))
    source = getattr(backing, "fileName", None) or None
    rdm = None
    if bkind == "rdm":
        rdm = RdmMode.PHYSICAL if backing.compatibilityMode == "physicalMode" else RdmMode.VIRTUAL
    sharing = getattr(backing, "sharing", None)
    ctrl = ctrls.get(dev.controllerKey)
    capacity = getattr(dev, "capacityInBytes", None) or (dev.capacityInKB or 0) * 1024 or None
    return Disk(
        source=source, format="vmdk", controller=ctrl, unit=dev.unitNumber,
        capacity_bytes=capacity, boot_order=boot.get(dev.key),
        mode=DISK_MODES.get(getattr(backing, "diskMode", None) or ""),
        sharing=(DiskSharing.MULTI_WRITER if sharing == "sharingMultiWriter"
                 else DiskSharing.NONE if sharing == "sharingNone" else None),
        rdm=rdm, passthrough=bkind in ("rdm", "rawdisk"),
        snapshot_chain=disk_chain(backing) or None,
        cbt_enabled=_disk_cbt(dev, ctrl, ctk, vm_cbt),
        datastore=datastore_of(source), label=label(dev), readonly=False, backing=bkind)


def _disk_cbt(dev: Any, ctrl: Controller | None, ctk: dict[str, bool],
              vm_cbt: bool | None) -> bool | None:
    """Per-disk CBT lives in extraConfig as e.g. scsi0:1.ctkEnabled."""
    if vm_cbt is False:
        return False
    if ctrl is not None and ctrl.index is not None and dev.unitNumber is not None:
        flag = ctk.get(f"{ctrl.bus.value}{ctrl.index}:{dev.unitNumber}")
        if flag is not None:
            return flag and bool(vm_cbt)
    if getattr(dev.backing, "changeId", None):
        return True  # a change id exists only while CBT tracks this disk
    return None


def to_cdrom(dev: Any, ctrls: dict[int, Controller], boot: dict[int | str, int]) -> CdRom:
    bkind = kind(dev.backing) if dev.backing is not None else None
    source, dtype = None, "empty"
    if bkind == "VirtualCdromIsoBackingInfo":
        source = dev.backing.fileName or None
        dtype = "iso" if source else "empty"
    elif bkind in ("VirtualCdromAtapiBackingInfo", "VirtualCdromRemoteAtapiBackingInfo"):
        dtype = "passthrough"
    elif bkind in ("VirtualCdromRemotePassthroughBackingInfo",
                   "VirtualCdromPassthroughBackingInfo"):
        dtype = "host-device"
    return CdRom(source=source, controller=ctrls.get(dev.controllerKey), unit=dev.unitNumber,
                 device_type=dtype, boot_order=boot.get(dev.key, boot.get("CdromDevice")))


def to_floppy(dev: Any) -> Floppy:
    bkind = kind(dev.backing) if dev.backing is not None else None
    if bkind == "VirtualFloppyImageBackingInfo":
        return Floppy(source=dev.backing.fileName or None, unit=dev.unitNumber,
                      device_type="image" if dev.backing.fileName else "empty")
    if bkind in ("VirtualFloppyDeviceBackingInfo", "VirtualFloppyRemoteDeviceBackingInfo"):
        return Floppy(unit=dev.unitNumber, device_type="host-device")
    return Floppy(unit=dev.unitNumber, device_type="empty")


def to_nic(dev: Any, portgroups: dict[str, str], boot: dict[int | str, int]) -> Nic:
    backing = dev.backing
    bkind = kind(backing) if backing is not None else None
    nic = Nic(mac=dev.macAddress, model=NIC_MODELS.get(kind(dev), kind(dev)),
              mac_type=MAC_TYPES.get(dev.addressType or ""), label=label(dev),
              boot_order=boot.get(dev.key))
    if bkind == "VirtualEthernetCardNetworkBackingInfo":
        nic.connection = ConnectionType.NETWORK
        nic.network = backing.deviceName or None
    elif bkind == "VirtualEthernetCardDistributedVirtualPortBackingInfo":
        nic.connection = ConnectionType.DISTRIBUTED
        nic.distributed_switch = backing.port.switchUuid
        nic.portgroup_key = backing.port.portgroupKey
        nic.network = portgroups.get(backing.port.portgroupKey)
    elif bkind == "VirtualEthernetCardOpaqueNetworkBackingInfo":
        nic.connection = ConnectionType.CUSTOM  # NSX: an opaque network id
        nic.network = backing.opaqueNetworkId
    elif backing is None:
        nic.connection = ConnectionType.NONE
    return nic


def to_char_device(dev: Any, index: int) -> CharDevice:
    backing = dev.backing
    bkind = kind(backing) if backing is not None else ""
    if bkind.endswith("FileBackingInfo"):
        return CharDevice(index, kind="file", target=backing.fileName)
    if bkind.endswith("PipeBackingInfo"):
        return CharDevice(index, kind="pipe", target=backing.pipeName,
                          extra={"endpoint": backing.endpoint})
    if bkind.endswith("URIBackingInfo"):
        return CharDevice(index, kind="network", target=backing.serviceURI,
                          extra={"direction": backing.direction})
    if bkind.endswith("DeviceBackingInfo"):
        return CharDevice(index, kind="device", target=backing.deviceName)
    return CharDevice(index, kind="none")


def to_video(dev: Any) -> Video:
    vram = getattr(dev, "videoRamSizeInKB", None)
    return Video(model="vmvga", vram_kib=int(vram) if vram else None,
                 heads=getattr(dev, "numDisplays", None))


def to_passthrough(dev: Any) -> PassthroughDevice | None:
    """PCI (DirectPath, vGPU), SR-IOV NICs and host USB devices handed to the VM."""
    dkind = kind(dev)
    if dkind == "VirtualSriovEthernetCard":
        pf = getattr(getattr(dev, "sriovBacking", None), "physicalFunctionBacking", None)
        return PassthroughDevice("sriov", address=getattr(pf, "id", None), label=label(dev))
    if dkind == "VirtualPCIPassthrough":
        backing = dev.backing
        if kind(backing) == "VirtualPCIPassthroughVmiopBackingInfo":
            return PassthroughDevice("vgpu", address=backing.vgpu, label=label(dev))
        return PassthroughDevice("pci", address=getattr(backing, "id", None) or None,
                                 label=getattr(backing, "deviceName", None) or label(dev))
    if dkind == "VirtualUSB":
        return PassthroughDevice("usb", address=getattr(dev.backing, "deviceName", None),
                                 label=label(dev))
    return None


def to_usb_controller(dev: Any) -> UsbController | None:
    model = USB_MODELS.get(kind(dev))
    return UsbController(model=model) if model else None
