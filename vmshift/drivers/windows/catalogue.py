"""Which virtio-win folders hold the drivers for a given Windows, as data.

virtio-win lays its drivers out as ``DRIVER/OS/ARCH/`` (``viostor/2k19/amd64``).
The OS folder is named after the release, not the kernel version: 6.3 is
both Windows 8.1 (``w8.1``) and Server 2012 R2 (``2k12R2``), and 10.0 is
Windows 10, 11 and four servers, told apart by the build number.
"""

from __future__ import annotations

from dataclasses import dataclass

# (major, minor, first build, server?) -> the OS folders to try, best first.
# A newer release falls back to the folder of the one before it: virtio-win
# ships a release's folder some time after the release itself.
OS_FOLDERS: list[tuple[int, int, int, bool, tuple[str, ...]]] = [
    (6, 1, 0, False, ("w7",)),
    (6, 1, 0, True, ("2k8R2",)),
    (6, 2, 0, False, ("w8",)),
    (6, 2, 0, True, ("2k12",)),
    (6, 3, 0, False, ("w8.1",)),
    (6, 3, 0, True, ("2k12R2",)),
    (10, 0, 0, False, ("w10",)),
    (10, 0, 22000, False, ("w11", "w10")),
    (10, 0, 14393, True, ("2k16",)),
    (10, 0, 17763, True, ("2k19", "2k16")),
    (10, 0, 20348, True, ("2k22", "2k19")),
    (10, 0, 26100, True, ("2k25", "2k22")),
]

ARCH_FOLDERS = {"x86_64": "amd64", "i386": "x86", "aarch64": "ARM64"}
QEMU_GA_MSI = {"x86_64": "qemu-ga-x86_64.msi", "i386": "qemu-ga-i386.msi"}
STORAGE_CLASS = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"  # SCSI and RAID controllers


@dataclass(frozen=True)
class Driver:
    name: str  # the Windows service name
    folder: str  # the top-level folder in virtio-win
    bus: str | None = None  # the disk bus it boots from, for the storage drivers
    # PCI hardware ids (legacy virtio 0.9, then virtio 1.0) the boot driver is bound to
    pci_ids: tuple[str, ...] = ()


DRIVERS = (
    Driver("viostor", "viostor", "virtio", ("VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
                                            "VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01")),
    Driver("vioscsi", "vioscsi", "scsi", ("VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00",
                                          "VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01")),
    Driver("netkvm", "NetKVM"),
    Driver("balloon", "Balloon"),
    Driver("vioser", "vioserial"),
    Driver("viorng", "viorng"),
)


def is_server(installation_type: str | None, product_name: str | None) -> bool:
    return "server" in (installation_type or product_name or "").lower()


def os_folders(major: int, minor: int, build: int, server: bool) -> tuple[str, ...]:
    """The virtio-win OS folders for this Windows, best first; () when unsupported."""
    best: tuple[str, ...] = ()
    for maj, mino, first, srv, folders in OS_FOLDERS:
        if (maj, mino, srv) == (major, minor, server) and build >= first:
            best = folders  # the table is in build order: the last match is the closest
    return best


def boot_driver(bus: str) -> Driver | None:
    return next((d for d in DRIVERS if d.bus == bus), None)
