"""Block-level facts: partition tables, filesystems, free space, encryption."""

from __future__ import annotations

from typing import Any

from vmshift.inspect.probe import ImageProbe
from vmshift.inspect.result import (
    DiskInfo,
    EncryptedVolume,
    Filesystem,
    Guest,
    Partition,
)

ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT_GUID = "21686148-6449-6E6F-744E-656564454649"
MBR_ESP_ID = 0xEF
BITLOCKER_SIGNATURE = b"-FVE-FS-"  # OEM id at offset 3 of a BitLocker volume's boot sector
LUKS_MAGIC = b"LUKS\xba\xbe"
BOOT_KEY = "VMSHIFT_BOOT_SIGNATURE"  # added to a whole disk's blkid facts by probe_devices
# Filesystems one cannot (or need not) mount to measure free space.
UNMOUNTABLE = {"swap", "unknown", "crypto_LUKS", "BitLocker", "LVM2_member", "linux_raid_member",
               "squashfs", "iso9660"}


def _try(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except RuntimeError:
        return None


def probe_devices(g: Any, devices: list[str]) -> dict[str, dict[str, str]]:
    """blkid of every disk, partition and LV: one cheap call each.

    Why not list_filesystems/parted: under TCG each of those costs seconds
    per disk, and list_filesystems skips a whole-disk LUKS volume.
    """
    names = [*devices, *g.list_partitions(), *g.lvs()]
    found = {dev: (_try(g.blkid, dev) or {}) for dev in names}
    for dev in devices:  # a boot sector blkid may not name (boot code, no table)
        tail = _try(g.pread_device, dev, 2, 510)
        if tail is not None:
            found[dev][BOOT_KEY] = "yes" if bytes(tail) == b"\x55\xaa" else "no"
    return found


def _partition(dev: str, info: dict[str, str]) -> Partition:
    sector = int(info.get("LOGICAL_SECTOR_SIZE", "512"))
    ptype = info.get("PART_ENTRY_TYPE", "")
    scheme = info.get("PART_ENTRY_SCHEME")
    part = Partition(int(info.get("PART_ENTRY_NUMBER", "0")), dev,
                     int(info.get("PART_ENTRY_OFFSET", "0")) * sector,
                     int(info.get("PART_ENTRY_SIZE", "0")) * sector,
                     (ptype.upper() if scheme == "gpt" else ptype.removeprefix("0x")) or None)
    part.esp = part.type_id in (ESP_GUID, f"{MBR_ESP_ID:x}")
    part.bios_boot = part.type_id == BIOS_BOOT_GUID
    return part


def disk_layout(probes: list[ImageProbe], devices: list[str],
                blk: dict[str, dict[str, str]]) -> list[DiskInfo]:
    disks = []
    for probe, dev in zip(probes, devices, strict=True):
        pttype = blk.get(dev, {}).get("PTTYPE")
        disk = DiskInfo(probe.path, dev, probe.format, probe.virtual_size, probe.actual_size,
                        {"dos": "msdos"}.get(pttype or "", pttype))
        boot = blk.get(dev, {}).get(BOOT_KEY)
        disk.boot_signature = None if boot is None else boot == "yes"
        disk.partitions = sorted((_partition(p, i) for p, i in blk.items()
                                  if p.startswith(dev) and p != dev and "PART_ENTRY_NUMBER" in i),
                                 key=lambda p: p.number)
        disks.append(disk)
    return disks


def _signature(g: Any, dev: str) -> str | None:
    head = _try(g.pread_device, dev, 16, 0)
    if head is None:
        return None
    head = bytes(head)
    if head[3:11] == BITLOCKER_SIGNATURE:
        return "bitlocker"
    if head.startswith(LUKS_MAGIC):
        return "luks"
    return None


def filesystems(g: Any, disks: list[DiskInfo],
                blk: dict[str, dict[str, str]]) -> tuple[list[Filesystem], list[EncryptedVolume]]:
    """Every partition, unpartitioned disk and LV, with encrypted ones recognised."""
    partitioned = {d.device for d in disks if d.partition_table}
    found, encrypted = [], []
    for dev, info in blk.items():
        if dev in partitioned:
            continue
        fstype = info.get("TYPE") or "unknown"
        # blkid knows LUKS; a BitLocker volume it may not, so read the boot sector.
        kind = "luks" if fstype == "crypto_LUKS" else \
            _signature(g, dev) if fstype in ("unknown", "BitLocker") else None
        if kind is not None:
            encrypted.append(EncryptedVolume(dev, kind))
            fstype = "crypto_LUKS" if kind == "luks" else "BitLocker"
        found.append(Filesystem(dev, fstype, info.get("UUID"), info.get("LABEL"),
                                _try(g.blockdev_getsize64, dev)))
    return found, encrypted


def fill_free_space(g: Any, filesystems: list[Filesystem]) -> None:
    """Free space of the filesystems the guest passes did not already measure."""
    for fs in filesystems:
        if fs.free_bytes is None and fs.type not in UNMOUNTABLE:
            fs.free_bytes = _free_bytes(g, fs.device)


def statvfs_free(g: Any, path: str) -> int | None:
    st = _try(g.statvfs, path)
    # bfree, not bavail: the conversion writes as root, so the blocks reserved
    # for root are usable (virt-v2v measures it the same way).
    return None if st is None else int(st["bfree"]) * int(st["frsize"] or st["bsize"])


def _free_bytes(g: Any, dev: str) -> int | None:
    try:
        g.mount_ro(dev, "/")
    except RuntimeError:
        return None
    try:
        return statvfs_free(g, "/")
    finally:
        g.umount_all()


def firmware_needed(disks: list[DiskInfo], guest_devices: list[str]) -> str:
    """UEFI when the guest's disks have an EFI system partition; BIOS otherwise.

    The guest's disks are those holding its mounted partitions; when it lives
    on LVM (no partition device to go by), all disks count.
    """
    own = [d for d in disks if any(dev.startswith(d.device) for dev in guest_devices)]
    if any(p.esp for d in own or disks for p in d.partitions):
        return "uefi"
    return "bios"


def attach_mountpoints(filesystems: list[Filesystem], guests: list[Guest]) -> None:
    """Label each filesystem with where its guest mounts it ("/", "/boot", "C:")."""
    by_dev = {fs.device: fs for fs in filesystems}
    for guest in guests:
        for mp, dev in guest.mountpoints.items():
            if dev in by_dev:
                by_dev[dev].mountpoint = "C:" if guest.type == "windows" and mp == "/" else mp
