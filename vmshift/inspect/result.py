"""What inspection found, as plain dataclasses (the --json document's shape).

Same convention as the VM model: ``None`` means "not known", ``[]`` means
"known to be none". The rules depend on it to say ``not_evaluable`` instead
of passing on missing facts. Bump ``INSPECTION_SCHEMA`` when a field changes
meaning or disappears (adding fields is compatible).
"""

from __future__ import annotations

from dataclasses import dataclass, field

INSPECTION_SCHEMA = 1

# The drivers a guest needs to boot and network on KVM's virtio devices.
VIRTIO_MODULES = ("virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci")


@dataclass
class Partition:
    number: int
    device: str  # appliance name, e.g. /dev/sda1
    start_bytes: int
    size_bytes: int
    type_id: str | None = None  # MBR id ("83") or GPT type GUID
    esp: bool = False  # an EFI system partition
    bios_boot: bool = False  # GPT BIOS boot partition (GRUB core.img on GPT + BIOS)


@dataclass
class DiskInfo:
    source: str  # the file on the host
    device: str  # appliance name, /dev/sdX (order of the arguments)
    format: str  # what qemu-img found
    virtual_size: int
    actual_size: int | None = None
    partition_table: str | None = None  # "msdos", "gpt", or None when unpartitioned
    partitions: list[Partition] = field(default_factory=list)
    boot_signature: bool | None = None  # 0x55AA ends the first sector (MBR or boot sector)


@dataclass
class Filesystem:
    device: str
    type: str  # ext4, xfs, ntfs, vfat, swap, crypto_LUKS, BitLocker, unknown...
    uuid: str | None = None
    label: str | None = None
    size_bytes: int | None = None
    free_bytes: int | None = None  # free to root (statvfs bfree): what a conversion can use
    mountpoint: str | None = None  # where the guest mounts it ("/", "/boot", "C:")


@dataclass
class EncryptedVolume:
    device: str
    kind: str  # "luks" or "bitlocker"


@dataclass
class Initramfs:
    path: str
    compression: list[str]  # the cpio segments' compression, in order: none, zstd, gzip...
    # module name -> True/False, counting modules.builtin; None = the image could not be read
    virtio: dict[str, bool] | None
    error: str | None = None


@dataclass
class Kernel:
    version: str
    vmlinuz: str | None
    modules_dir: str | None  # /lib/modules/VERSION when present
    builtin: list[str] = field(default_factory=list)  # virtio modules built into the kernel
    initramfs: Initramfs | None = None  # None: no initramfs found for this kernel

    def virtio_ready(self) -> bool | None:
        """Can this kernel boot from a virtio disk? None when the initramfs is unreadable."""
        if self.initramfs is None:
            have = dict.fromkeys(VIRTIO_MODULES, False)
            for name in self.builtin:
                have[name] = True
        elif self.initramfs.virtio is None:
            return None
        else:
            have = self.initramfs.virtio
        return have.get("virtio_pci", False) and (
            have.get("virtio_blk", False) or have.get("virtio_scsi", False))


@dataclass
class DeviceRef:
    """How a config line names a device, and whether KVM's disk names break it."""

    spec: str
    kind: str  # device_path, uuid, label, partuuid, partlabel, lvm, mapper, by_id, ...
    needs_rewrite: bool  # the name depends on the source hypervisor's bus or serials


@dataclass
class FstabEntry:
    line: int
    device: DeviceRef
    mountpoint: str
    fstype: str
    options: str


@dataclass
class CrypttabEntry:
    line: int
    name: str
    device: DeviceRef
    keyfile: str | None
    options: str | None


@dataclass
class NetConfig:
    source: str  # ifupdown, netplan, networkmanager, ifcfg, systemd-networkd, udev
    file: str
    interface: str | None  # the name the config refers to (None: matched by MAC only)
    mac: str | None = None  # a MAC pin: the config only applies to (or renames) this MAC
    method: str | None = None  # dhcp, static, manual, ...


@dataclass
class Application:
    name: str
    version: str | None = None
    vmware_tools: bool = False  # VMware Tools or open-vm-tools: remove or disable on KVM


@dataclass
class WindowsService:
    name: str
    present: bool
    start: int | None = None  # 0 boot, 1 system, 2 auto, 3 demand, 4 disabled
    image_path: str | None = None


@dataclass
class WindowsNic:
    """One physical NIC's TCP/IP settings, from the SYSTEM hive."""

    guid: str  # NetCfgInstanceId, the Tcpip\Parameters\Interfaces key
    description: str | None
    component_id: str | None  # pci\ven_15ad&dev_07b0 (vmxnet3)
    mac: str | None  # only when set as NetworkAddress; the burnt-in MAC is not in the registry
    dhcp: bool
    addresses: list[str] = field(default_factory=list)  # "192.168.50.10/24"
    gateways: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    dns6: list[str] = field(default_factory=list)


@dataclass
class WindowsInfo:
    system_root: str | None  # e.g. C:\Windows
    system_root_path: str | None  # the same, as a path on the mounted filesystem
    product_name: str | None
    version: str | None  # "10.0" or "6.1"
    build: str | None
    edition: str | None
    installation_type: str | None  # Client, Server
    current_control_set: str | None  # ControlSet001
    services: dict[str, WindowsService] = field(default_factory=dict)  # viostor, vioscsi...
    vmware_tools: bool | None = None
    device_install_restrictions: dict[str, object] | None = None  # values under the policy key
    device_install_blocked: bool | None = None  # any Deny* policy set to 1
    hiberboot_enabled: bool | None = None  # fast startup
    hiberfil_present: bool | None = None
    hiberfil_hibernated: bool | None = None  # hiberfil.sys starts with "hibr": a live image
    nics: list[WindowsNic] = field(default_factory=list)
    vmware_tools_uninstall: str | None = None  # its registered UninstallString
    driver_database: bool | None = None  # SYSTEM\DriverDatabase: Windows 8 / 2012 and later
    device_path: str | None = None  # where Plug and Play looks for drivers
    errors: list[str] = field(default_factory=list)

    def has_service(self, *names: str) -> bool:
        """Any of NAMES is an installed service (viostor, vioscsi, netkvm)."""
        return any(self.services.get(n) is not None and self.services[n].present
                   for n in names)


@dataclass
class Guest:
    root: str  # the root filesystem device
    type: str  # linux, windows, freebsd, unknown...
    distro: str | None = None
    version: str | None = None  # "12", "10.0"
    major: int | None = None
    minor: int | None = None
    product_name: str | None = None
    arch: str | None = None
    hostname: str | None = None
    package_format: str | None = None
    package_management: str | None = None
    mountpoints: dict[str, str] = field(default_factory=dict)  # guest path -> device
    kernels: list[Kernel] | None = None  # None for non-Linux guests
    bootloader: str | None = None  # grub2, grub-legacy, systemd-boot, windows-bootmgr
    firmware_needed: str | None = None  # bios or uefi
    fstab: list[FstabEntry] | None = None
    crypttab: list[CrypttabEntry] | None = None
    network: list[NetConfig] | None = None
    applications: list[Application] | None = None
    vmware_tools: bool | None = None  # any VMware Tools flavour present
    windows: WindowsInfo | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Inspection:
    disks: list[DiskInfo]
    filesystems: list[Filesystem]
    encrypted: list[EncryptedVolume]
    guests: list[Guest]
    appliance_launches: int = 0
    notes: list[str] = field(default_factory=list)
    schema: int = INSPECTION_SCHEMA
