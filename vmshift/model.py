"""The neutral VM model.

Every reader (VMX, vSphere, OVF, a bare disk, a physical machine) produces a
``VirtualMachine``; the libvirt writer, the pre-flight rules and the drivers
stage consume it. The model says what the source *is*, never what KVM should
get: device choices for KVM live in the writer's chooser, not here.

Convention: a field a reader cannot know is ``None``, never a guess. An empty
list means "known to have none"; ``None`` means "unknown". Rules rely on this
to report ``not_evaluable`` instead of a false pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class FirmwareType(StrEnum):
    BIOS = "bios"
    EFI = "efi"


class DiskMode(StrEnum):
    """VMware disk modes; independent disks are skipped by snapshots."""

    PERSISTENT = "persistent"
    INDEPENDENT_PERSISTENT = "independent_persistent"
    INDEPENDENT_NONPERSISTENT = "independent_nonpersistent"
    NONPERSISTENT = "nonpersistent"
    UNDOABLE = "undoable"


class DiskSharing(StrEnum):
    NONE = "none"
    MULTI_WRITER = "multi_writer"


class RdmMode(StrEnum):
    """Raw device mapping compatibility mode."""

    PHYSICAL = "physical"
    VIRTUAL = "virtual"


class BusType(StrEnum):
    SCSI = "scsi"
    SATA = "sata"
    IDE = "ide"
    NVME = "nvme"
    VIRTIO = "virtio"
    USB = "usb"
    FDC = "fdc"


class ConnectionType(StrEnum):
    """How a NIC reaches its network on the source."""

    NETWORK = "network"  # a named network or standard portgroup
    DISTRIBUTED = "distributed"  # a VDS portgroup
    BRIDGE = "bridge"
    NAT = "nat"
    HOSTONLY = "hostonly"
    CUSTOM = "custom"
    NONE = "none"
    DIRECT = "direct"  # macvtap onto a host interface (libvirt type='direct')
    USER = "user"  # user-mode networking inside the hypervisor process (SLIRP)


@dataclass
class Controller:
    """The controller a disk or CD-ROM hangs off, as the source had it."""

    bus: BusType
    index: int | None = None  # e.g. scsi0 -> 0
    model: str | None = None  # pvscsi, lsilogic, lsisas1068, buslogic, ahci...


@dataclass
class Tpm:
    backend: str | None = None  # emulator (state in files), passthrough (a host TPM)
    version: str | None = None  # 1.2, 2.0
    state_dir: str | None = None  # None: the hypervisor's default place


@dataclass
class Firmware:
    type: FirmwareType | None = None
    secure_boot: bool | None = None
    nvram_present: bool | None = None  # an NVRAM/vars file the VM owns
    tpm_present: bool | None = None  # a vTPM whose state must travel
    # Where that state lives, when the source says (libvirt does; its state
    # files travel apart from the disks).
    nvram_path: str | None = None
    tpms: list[Tpm] | None = None


@dataclass
class CpuTopology:
    vcpus: int | None = None
    sockets: int | None = None
    cores_per_socket: int | None = None
    threads_per_core: int | None = None


@dataclass
class Snapshot:
    name: str
    id: str | None = None
    created: str | None = None
    description: str | None = None
    current: bool = False


@dataclass
class Disk:
    source: str | None  # a local path, a [datastore] path, or a URL
    format: str | None = None  # vmdk, raw, qcow2, vdi, vhdx, vpc...
    controller: Controller | None = None
    unit: int | None = None
    capacity_bytes: int | None = None
    boot_order: int | None = None
    mode: DiskMode | None = None
    sharing: DiskSharing | None = None
    rdm: RdmMode | None = None  # None with passthrough False means a normal disk
    passthrough: bool | None = None  # a host block device handed to the VM
    snapshot_chain: list[str] | None = None  # parent first, the active delta last
    cbt_enabled: bool | None = None
    datastore: str | None = None  # the datastore it lives on; None when unknown
    label: str | None = None  # the source's own name for it (scsi0:0, "Hard disk 1")
    readonly: bool | None = None
    # Added by the vSphere reader: the source's backing kind (vSphere: flat,
    # sparse, seSparse, rdm, ...); rules need it (seSparse/vVol behave apart).
    backing: str | None = None
    # Added by the OVA reader: the image lies inside ``source`` (an OVA tar) at
    # this byte range, read in place (libvirt <slice>) instead of extracted.
    source_offset: int | None = None
    source_size: int | None = None
    # Added by the libvirt reader (a KVM host as the source, for migrate).
    target_dev: str | None = None  # the device name the source gives it (vda)
    source_type: str | None = None  # how it is reached: file, block, volume, network
    volume: str | None = None  # a volume in the storage pool named by ``datastore``
    cache: str | None = None  # the host cache mode (none, writeback, ...)


@dataclass
class CdRom:
    source: str | None = None  # ISO path; None when empty or a host device
    controller: Controller | None = None
    unit: int | None = None
    device_type: str | None = None  # iso, host-device, passthrough, empty
    boot_order: int | None = None
    target_dev: str | None = None
    source_type: str | None = None  # file, block, volume, network
    readonly: bool | None = None


@dataclass
class Floppy:
    source: str | None = None
    unit: int | None = None
    device_type: str | None = None  # image, host-device, empty
    target_dev: str | None = None
    source_type: str | None = None
    readonly: bool | None = None


@dataclass
class Nic:
    mac: str | None = None
    model: str | None = None  # the source's: vmxnet3, e1000, e1000e, vlance...
    network: str | None = None  # network, portgroup or bridge name
    connection: ConnectionType | None = None
    mac_type: str | None = None  # generated, static, vpx
    distributed_switch: str | None = None  # VDS uuid when connection is distributed
    portgroup_key: str | None = None
    label: str | None = None
    boot_order: int | None = None
    # The PCI slot the source gave it: ESXi guests name the NIC after it (slot
    # 192 -> ens192), which is how conversion pins the old name to this MAC.
    pci_slot: int | None = None


@dataclass
class CharDevice:
    """A serial or parallel port."""

    index: int
    kind: str | None = None  # file, device, pipe, network, none
    target: str | None = None  # file path, device node, pipe name or URI
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Video:
    model: str | None = None
    vram_kib: int | None = None
    heads: int | None = None


@dataclass
class UsbController:
    model: str | None = None  # uhci, ehci, xhci


@dataclass
class PassthroughDevice:
    kind: str  # pci, sriov, usb, vgpu, mdev
    address: str | None = None
    label: str | None = None


@dataclass
class GuestHints:
    """What the source says about the guest OS (not what inspection found)."""

    vmware_guest_id: str | None = None  # guestOS / guestId, e.g. "debian12-64"
    family: str | None = None  # linux, windows, other
    name: str | None = None  # a full name, e.g. "Debian GNU/Linux 12 (64-bit)"
    hostname: str | None = None
    arch: str | None = None  # x86_64, i686
    tools_installed: bool | None = None
    tools_running: bool | None = None


@dataclass
class VirtualMachine:
    name: str | None = None
    uuid: str | None = None
    source_kind: str | None = None  # vmx, vsphere, ovf, disk, p2v
    source_ref: str | None = None  # the file or inventory path it came from
    firmware: Firmware = field(default_factory=Firmware)
    cpu: CpuTopology = field(default_factory=CpuTopology)
    memory_mib: int | None = None
    cpu_hotadd: bool | None = None
    memory_hotadd: bool | None = None
    cpu_affinity: list[int] | None = None  # host CPUs pinned; [] = no pinning
    affinity_rules: list[str] | None = None  # DRS (anti-)affinity rules naming it
    disks: list[Disk] | None = None
    cdroms: list[CdRom] | None = None
    floppies: list[Floppy] | None = None
    nics: list[Nic] | None = None
    serials: list[CharDevice] | None = None
    parallels: list[CharDevice] | None = None
    video: Video | None = None
    usb_controllers: list[UsbController] | None = None
    passthrough: list[PassthroughDevice] | None = None
    snapshots: list[Snapshot] | None = None
    consolidation_needed: bool | None = None
    cbt_enabled: bool | None = None  # the VM-level ctkEnabled flag
    guest: GuestHints = field(default_factory=GuestHints)
    power_state: str | None = None  # poweredOn, poweredOff, suspended
    host: str | None = None  # the hypervisor host it runs on
    annotation: str | None = None  # the VM's own notes field
    leases: list[str] | None = None  # lock-manager leases it holds (lockspace/key)
    notes: list[str] = field(default_factory=list)  # reader warnings

    def disk_paths(self) -> list[str]:
        """The disks' sources in the source's order (known ones only)."""
        return [d.source for d in self.disks or [] if d.source]
