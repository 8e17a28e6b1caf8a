"""The device choices for a KVM guest: VirtualMachine -> libvirt Domain object.

This is the policy; ``libvirt_xml`` only maps objects to XML. Every choice is
driven by the table below or by a fact (the model, the guest profile), and
every choice that changes something the source had is said in a note.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from vmshift.convert import libvirt_xml as lx
from vmshift.convert.guestprofile import GuestProfile, profile
from vmshift.convert.maps import NetworkMap, StorageMap
from vmshift.errors import BadInput
from vmshift.model import DiskMode, DiskSharing, FirmwareType, VirtualMachine

# --- rules as data ----------------------------------------------------------
RULES: dict[str, Any] = {
    # More disks than this go on one virtio-scsi controller instead of one PCI
    # slot each (virtio-blk), which q35 would run out of.
    "max_virtio_blk_disks": 8,
    # When the guest cannot use virtio, per machine type.
    "fallback_disk_bus": {"q35": "sata", "pc": "ide"},
    "fallback_nic_model": {"q35": "e1000e", "pc": "e1000"},
    "cdrom_bus": {"q35": "sata", "pc": "ide"},
    # CPU: host-model (migratable, near-native). For TCG too: libvirt 9.0 builds
    # a named model from what TCG emulates (verified to define and boot on the
    # test bed, tests/test_libvirt_accept.py), while the bare default qemu64
    # lacks x86-64-v2 and RHEL 9 refuses to boot on it.
    "cpu_mode": {"kvm": "host-model", "qemu": "host-model"},
    # The Hyper-V enlightenments Windows uses for timers and spinlocks on KVM.
    "hyperv": ["relaxed", "vapic", "spinlocks", "vpindex", "synic", "stimer", "frequencies"],
    "console_alias": "ua-vmshift-console",
    "graphics_listen": "127.0.0.1",
}
DEV_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd", "fdc": "fd"}
METADATA_NS = "https://vmshift.dev/xmlns/source/1"


@dataclass
class Options:
    virt_type: str  # kvm | qemu (already resolved from auto)
    network_map: NetworkMap
    default_network: str = "default"
    storage_map: StorageMap | None = None


@dataclass
class Choice:
    """The result: the domain object and what was decided on the way."""

    domain: lx.Domain
    notes: list[str] = field(default_factory=list)
    machine: str = "q35"
    disk_bus: str = "virtio"


def choose(vm: VirtualMachine, options: Options, inspection: Any | None = None) -> Choice:
    _require_essentials(vm)
    guest = profile(vm, inspection)
    domain = lx.Domain(type=options.virt_type)
    choice = Choice(domain=domain, notes=list(guest.reasons))
    choice.machine = _machine(vm, guest)
    _identity(vm, choice)
    _os_and_firmware(vm, guest, choice)
    _cpu_memory(vm, options, domain)
    _features_and_clock(guest, choice, options.virt_type)
    _storage(vm, guest, options, choice)
    _network(vm, guest, options, choice)
    _consoles(vm, choice)
    _extras(guest, choice)
    return choice


def _require_essentials(vm: VirtualMachine) -> None:
    where = vm.source_ref or vm.name or "VM"
    if not vm.memory_mib or vm.memory_mib <= 0:
        raise BadInput(f"{where}: memory size unknown; cannot write a domain")
    if not vm.cpu.vcpus or vm.cpu.vcpus <= 0:
        raise BadInput(f"{where}: vCPU count unknown; cannot write a domain")
    if vm.guest.arch not in (None, "x86_64", "i686"):
        raise BadInput(f"{where}: guest architecture {vm.guest.arch} is not x86")


def _machine(vm: VirtualMachine, guest: GuestProfile) -> str:
    # Secure Boot needs SMM, which only q35 offers.
    if guest.old and not vm.firmware.secure_boot:
        return "pc"
    return "q35"


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _identity(vm: VirtualMachine, choice: Choice) -> None:
    domain = choice.domain
    # libvirt refuses '/' in a name (it becomes a file name); XML cannot hold
    # control characters, whichever reader let them through.
    name = _NOT_XML.sub("", (vm.name or "").replace("/", "_").replace("\n", " ")).strip()
    if name != vm.name:
        choice.notes.append(f"domain name {vm.name!r} written as {name or 'vm'!r}")
    domain.name = name or "vm"
    if vm.uuid and vm.uuid.replace("0", "").replace("-", ""):
        domain.uuid = vm.uuid  # an all-zero UUID is "none", not an identity
    if vm.annotation:
        domain.description = _NOT_XML.sub("\ufffd", vm.annotation)
    meta = {"kind": vm.source_kind or "unknown"}
    if vm.source_ref:
        meta["ref"] = vm.source_ref
    if vm.guest.vmware_guest_id:
        meta["guest-id"] = vm.guest.vmware_guest_id
    domain.add_metadata(METADATA_NS, "vmshift", "source",
                        **{k: _NOT_XML.sub("\ufffd", v) for k, v in meta.items()})


def _os_and_firmware(vm: VirtualMachine, guest: GuestProfile, choice: Choice) -> None:
    domain = choice.domain
    domain.os_type = "hvm"
    domain.os_arch = "x86_64"  # VMware's virtual hardware is 64-bit: 32-bit guests run too
    domain.os_machine = choice.machine
    if guest.firmware == FirmwareType.EFI:
        # Firmware auto-selection: libvirt picks the OVMF build and creates the
        # VM's own NVRAM from its template, from the descriptors ovmf ships.
        domain.os_firmware = "efi"
        secure = bool(vm.firmware.secure_boot)
        for name in ("secure-boot", "enrolled-keys"):
            domain.add(lx.FirmwareFeature(name=name, enabled=secure), under="./os/firmware")
        if secure:
            domain.smm = True
    if vm.firmware.tpm_present:
        choice.notes.append("the source has a vTPM: its sealed secrets cannot be carried "
                            "over; add an emulated TPM and re-seal in the guest")


def _cpu_memory(vm: VirtualMachine, options: Options, domain: lx.Domain) -> None:
    assert vm.memory_mib and vm.cpu.vcpus
    domain.memory_kib = vm.memory_mib * 1024
    domain.memory_unit = "KiB"
    domain.current_memory_kib = vm.memory_mib * 1024
    domain.current_memory_unit = "KiB"
    domain.vcpus = vm.cpu.vcpus
    domain.cpu_mode = RULES["cpu_mode"][options.virt_type]
    cores = vm.cpu.cores_per_socket or 1
    threads = vm.cpu.threads_per_core or 1
    domain.cpu_sockets = vm.cpu.sockets or max(1, vm.cpu.vcpus // (cores * threads))
    domain.cpu_dies = 1
    domain.cpu_cores = cores
    domain.cpu_threads = threads


def _features_and_clock(guest: GuestProfile, choice: Choice, virt_type: str) -> None:
    domain = choice.domain
    domain.set_feature("acpi")
    domain.set_feature("apic")
    if guest.windows:
        domain.clock_offset = "localtime"  # Windows keeps the RTC in local time
        if virt_type == "kvm":
            _hyperv(domain)
        else:
            # QEMU refuses hv-vpindex and friends without KVM ("kernel doesn't
            # allow setting HyperV VP_INDEX"): measured on the test bed, TCG.
            choice.notes.append("Hyper-V enlightenments need KVM; left out under TCG")
    else:
        domain.clock_offset = "utc"
    domain.add(lx.Timer(name="rtc", tickpolicy="catchup"), under="./clock")
    domain.add(lx.Timer(name="pit", tickpolicy="delay"), under="./clock")
    domain.add(lx.Timer(name="hpet", present=False), under="./clock")


def _hyperv(domain: lx.Domain) -> None:
    """The enlightenments Windows uses for timers and spinlocks on KVM."""
    domain.hyperv_mode = "custom"
    for name in RULES["hyperv"]:
        feature = lx.HypervFeature(name, state=True)
        if name == "spinlocks":
            feature.retries = 8191
        domain.add(feature, under="./features/hyperv")
    domain.add(lx.Timer(name="hypervclock", present=True), under="./clock")


def _disk_bus(vm: VirtualMachine, guest: GuestProfile, machine: str) -> tuple[str, str]:
    """(bus, why): virtio-blk unless many/shared disks want virtio-scsi, or no virtio."""
    disks = vm.disks or []
    if guest.virtio_blk is False and guest.virtio_scsi is False:
        return RULES["fallback_disk_bus"][machine], "the guest has no virtio storage driver"
    wants_scsi = [d.label or d.source for d in disks
                  if d.sharing == DiskSharing.MULTI_WRITER or d.rdm or d.passthrough]
    if guest.virtio_scsi is not False:
        if len(disks) > RULES["max_virtio_blk_disks"]:
            return "scsi", f"{len(disks)} disks: one virtio-scsi controller"
        if wants_scsi:
            return "scsi", f"shared/raw disks ({', '.join(map(str, wants_scsi))}) need SCSI"
        if guest.virtio_blk is False:
            return "scsi", "the guest has virtio_scsi but not virtio_blk"
    return "virtio", "virtio-blk"


def _dev_name(prefix: str, index: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'aa' (the kernel's sd naming)."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return prefix + letters


def _storage(vm: VirtualMachine, guest: GuestProfile, options: Options, choice: Choice) -> None:
    bus, why = _disk_bus(vm, guest, choice.machine)
    choice.disk_bus = bus
    if vm.disks:
        choice.notes.append(f"disks on {bus}: {why}")
    counters: dict[str, int] = {}

    def next_dev(on_bus: str) -> str:
        prefix = DEV_PREFIX[on_bus]
        counters[prefix] = counters.get(prefix, 0) + 1
        return _dev_name(prefix, counters[prefix] - 1)

    if bus == "scsi":
        choice.domain.add_device(lx.Controller(type="scsi", index=0, model="virtio-scsi"))
    for index, disk in enumerate(vm.disks or []):
        xml_disk = lx.Disk(device="disk")
        _disk_source(xml_disk, disk.source, disk.format, options, choice.notes, disk.label)
        if disk.source_offset is not None:
            _in_place_slice(xml_disk, disk.source_offset, disk.source_size, choice.notes,
                            disk.label)
        xml_disk.target_dev, xml_disk.target_bus = next_dev(bus), bus
        if bus == "scsi":
            xml_disk.address_type, xml_disk.address_controller = "drive", 0
            xml_disk.address_bus, xml_disk.address_target, xml_disk.address_unit = 0, 0, index
        if disk.boot_order:
            xml_disk.boot_order = disk.boot_order
        _disk_flags(xml_disk, disk.mode, disk.sharing, disk.readonly, choice.notes, disk.label)
        choice.domain.add_device(xml_disk)
    cdrom_bus = RULES["cdrom_bus"][choice.machine]
    for cdrom in vm.cdroms or []:
        xml_cd = lx.Disk(device="cdrom")
        if cdrom.source:
            _disk_source(xml_cd, cdrom.source, "raw", options, choice.notes, "CD-ROM")
        else:
            xml_cd.type = "file"  # an empty drive: media can be inserted later
        xml_cd.target_dev, xml_cd.target_bus = next_dev(cdrom_bus), cdrom_bus
        xml_cd.readonly = True
        if cdrom.boot_order:
            xml_cd.boot_order = cdrom.boot_order
        choice.domain.add_device(xml_cd)
    _floppies(vm, options, choice, next_dev)
    if not _per_device_boot(vm):
        choice.domain.add_boot_dev("hd")
        if vm.cdroms:
            choice.domain.add_boot_dev("cdrom")


def _floppies(vm: VirtualMachine, options: Options, choice: Choice, next_dev: Any) -> None:
    for floppy in vm.floppies or []:
        if choice.machine == "q35":
            choice.notes.append(f"floppy{floppy.unit}: q35 has no floppy controller; left "
                                "out (attach the image as a CD-ROM or disk if needed)")
            continue
        xml_fd = lx.Disk(device="floppy")
        if floppy.source:
            _disk_source(xml_fd, floppy.source, "raw", options, choice.notes, "floppy")
        else:
            xml_fd.type = "file"
        xml_fd.target_dev, xml_fd.target_bus = next_dev("fdc"), "fdc"
        choice.domain.add_device(xml_fd)


def _per_device_boot(vm: VirtualMachine) -> bool:
    devices = [*(vm.disks or []), *(vm.cdroms or []), *(vm.nics or [])]
    return any(getattr(d, "boot_order", None) for d in devices)


def _disk_source(xml_disk: lx.Disk, source: str | None, fmt: str | None, options: Options,
                 notes: list[str], label: str | None) -> None:
    assert source is not None
    storage = options.storage_map or StorageMap()
    target = storage.resolve(source)
    if target.kind == "volume":
        xml_disk.type, xml_disk.source_pool, xml_disk.source_volume = (
            "volume", target.pool, target.volume)
    else:
        xml_disk.type, xml_disk.source_file = "file", target.path
        if target.kind == "unmapped" and target.path and target.path.startswith("/vmfs/"):
            notes.append(f"{label}: {source} lives on an ESXi datastore that no --storage-map "
                         "entry maps; the XML points at the ESXi path")
    xml_disk.driver_name = "qemu"
    xml_disk.driver_type = fmt or _format_from_name(source)


def _in_place_slice(xml_disk: lx.Disk, offset: int, size: int | None, notes: list[str],
                    label: str | None) -> None:
    """A disk inside an OVA: QEMU reads that byte range of the tar. Read-only, because
    writing would modify the source package."""
    xml_disk.slice_type, xml_disk.slice_offset, xml_disk.slice_size = "storage", offset, size
    xml_disk.readonly = True
    notes.append(f"{label}: read in place from the package (read-only); convert the disk "
                 "to run the VM")


def _format_from_name(source: str) -> str:
    return "vmdk" if source.lower().endswith(".vmdk") else (
        "qcow2" if source.lower().endswith(".qcow2") else "raw")


def _disk_flags(xml_disk: lx.Disk, mode: DiskMode | None, sharing: DiskSharing | None,
                readonly: bool | None, notes: list[str], label: str | None) -> None:
    if mode in (DiskMode.INDEPENDENT_NONPERSISTENT, DiskMode.NONPERSISTENT):
        xml_disk.transient = True  # changes are discarded at power-off, as on VMware
        notes.append(f"{label}: non-persistent disk -> <transient/>")
    if sharing == DiskSharing.MULTI_WRITER:
        xml_disk.shareable = True
        xml_disk.driver_cache = "none"  # a shared disk must not be cached by one host
    if readonly:
        xml_disk.readonly = True


def _network(vm: VirtualMachine, guest: GuestProfile, options: Options, choice: Choice) -> None:
    model = "virtio" if guest.virtio_net is not False else (
        RULES["fallback_nic_model"][choice.machine])
    for nic in vm.nics or []:
        target = options.network_map.target_for(nic)
        if target is None:
            source = nic.network or nic.portgroup_key or nic.distributed_switch or "no network"
            choice.notes.append(f"{nic.label}: {source!r} -> network "
                                f"{options.default_network!r} (not in the network map)")
            kind, name = "network", options.default_network
        else:
            kind, name = target.kind, target.name
        iface = lx.Interface(type=kind)
        if nic.mac:
            iface.mac = nic.mac
        else:
            choice.notes.append(f"{nic.label}: MAC unknown; libvirt will generate one")
        if kind == "bridge":
            iface.source_bridge = name
        else:
            iface.source_network = name
        iface.model = model
        if nic.boot_order:
            iface.boot_order = nic.boot_order
        choice.domain.add_device(iface)


def _consoles(vm: VirtualMachine, choice: Choice) -> None:
    """Serial ports become ptys: a VMware pipe, file, host device or vSPC URI means
    nothing on the KVM host. Without any, one is added for `virsh console`."""
    for port in vm.serials or []:
        if port.kind not in (None, "device") or port.target:
            choice.notes.append(f"serial{port.index}: VMware {port.kind} backing "
                                f"{port.target!r} -> a pty (virsh console)")
        choice.domain.add_device(lx.Serial(type="pty", target_port=port.index))
    if not vm.serials:
        choice.domain.add_device(lx.Serial(type="pty", target_port=0,
                                           alias=RULES["console_alias"]))
    first = (vm.serials or [None])[0]
    choice.domain.add_device(lx.Console(type="pty", target_type="serial",
                                       target_port=first.index if first else 0))
    for port in vm.parallels or []:
        choice.notes.append(f"parallel{port.index}: VMware {port.kind} backing -> a pty")
        choice.domain.add_device(lx.Parallel(type="pty", target_port=port.index))


def _extras(guest: GuestProfile, choice: Choice) -> None:
    domain = choice.domain
    domain.add_device(lx.Channel(type="unix", target_type="virtio",
                                 target_name="org.qemu.guest_agent.0"))
    video = "virtio" if guest.family == "linux" and guest.virtio_net is not False else "vga"
    domain.add_device(lx.Video(model=video, primary=True))
    domain.add_device(lx.Graphics(type="vnc", autoport=True, listen_type="address",
                                  listen_address=RULES["graphics_listen"]))
    if guest.virtio_net is not False:
        domain.add_device(lx.Rng(model="virtio", backend_model="random",
                                 backend="/dev/urandom"))
        domain.add_device(lx.MemBalloon(model="virtio"))
    else:
        domain.add_device(lx.MemBalloon(model="none"))
