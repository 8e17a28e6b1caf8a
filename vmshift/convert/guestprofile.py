"""What the chooser needs to know about the guest, from the model and (when
there is one) inspection: its family, its age, and which virtio drivers it
can use. Inspection wins over the source's hints because it looked inside.

``None`` keeps meaning "unknown": the chooser then takes the modern default
(virtio) for Linux and the safe one for Windows, which never ships virtio
drivers of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vmshift.convert import guestos
from vmshift.model import FirmwareType, VirtualMachine

# Windows service names of the virtio-win drivers, per device.
WINDOWS_VIRTIO_SERVICES = {"blk": "viostor", "scsi": "vioscsi", "net": "netkvm"}


@dataclass
class GuestProfile:
    family: str | None  # linux, windows, other
    old: bool  # predates q35/AHCI: needs the pc machine
    virtio_blk: bool | None
    virtio_scsi: bool | None
    virtio_net: bool | None
    firmware: FirmwareType | None
    reasons: list[str] = field(default_factory=list)

    @property
    def windows(self) -> bool:
        return self.family == "windows"


def profile(vm: VirtualMachine, inspection: Any | None) -> GuestProfile:
    guest = _first_guest(inspection)
    family = vm.guest.family
    if guest is not None and getattr(guest, "type", None) in ("linux", "windows"):
        family = guest.type
    result = GuestProfile(
        family=family,
        old=guestos.is_old(vm.guest.vmware_guest_id),
        virtio_blk=None, virtio_scsi=None, virtio_net=None,
        firmware=vm.firmware.type,
    )
    if result.firmware is None and guest is not None:
        needed = getattr(guest, "firmware_needed", None)
        if needed in ("uefi", "bios"):
            result.firmware = FirmwareType.EFI if needed == "uefi" else FirmwareType.BIOS
            result.reasons.append(f"firmware {needed}: from inspection (the source did not say)")
    if guest is not None and family == "linux":
        _linux_virtio(result, guest)
    elif guest is not None and family == "windows":
        _windows_virtio(result, guest)
    elif family == "windows":
        result.virtio_blk = result.virtio_scsi = result.virtio_net = False
        result.reasons.append("Windows guest, not inspected: Windows has no virtio drivers of "
                              "its own, so disks and NICs stay on emulated devices")
    if result.old and result.virtio_blk is None:
        result.virtio_blk = result.virtio_scsi = result.virtio_net = False
        result.reasons.append(f"guest OS {vm.guest.vmware_guest_id!r} predates virtio: "
                              "emulated devices")
    return result


def _first_guest(inspection: Any | None) -> Any | None:
    guests = getattr(inspection, "guests", None) if inspection is not None else None
    return guests[0] if guests else None


def _linux_virtio(result: GuestProfile, guest: Any) -> None:
    """A kernel counts if its initramfs (or the kernel itself) carries the module."""
    kernels = getattr(guest, "kernels", None) or []
    found: dict[str, bool | None] = {"virtio_blk": None, "virtio_scsi": None, "virtio_net": None}
    for kernel in kernels:
        initramfs = getattr(kernel, "initramfs", None)
        builtin = set(getattr(kernel, "builtin", []) or [])
        modules = getattr(initramfs, "virtio", None) if initramfs is not None else None
        if initramfs is not None and modules is None:
            continue  # unreadable initramfs: says nothing
        for name in found:
            have = name in builtin or bool(modules and modules.get(name))
            # virtio_net loads from the root filesystem, not the initramfs.
            if name == "virtio_net" and getattr(kernel, "modules_dir", None):
                have = True
            found[name] = bool(found[name]) or have
    if kernels and all(v is not None for v in found.values()):
        result.virtio_blk = found["virtio_blk"]
        result.virtio_scsi = found["virtio_scsi"]
        result.virtio_net = found["virtio_net"]
        if not (result.virtio_blk or result.virtio_scsi):
            result.reasons.append("inspection: no kernel can boot from virtio (no virtio_blk "
                                  "or virtio_scsi in any initramfs)")


def _windows_virtio(result: GuestProfile, guest: Any) -> None:
    windows = getattr(guest, "windows", None)
    if windows is None:
        return
    have = {kind: windows.has_service(name) for kind, name in WINDOWS_VIRTIO_SERVICES.items()}
    result.virtio_blk, result.virtio_scsi, result.virtio_net = (
        have["blk"], have["scsi"], have["net"])
    if not (have["blk"] or have["scsi"]):
        result.reasons.append("inspection: Windows has no viostor/vioscsi driver; disks on "
                              "SATA/IDE until virtio-win drivers are installed")
