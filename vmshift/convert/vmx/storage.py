"""Disks, CD-ROMs and floppies from a VMX.

Device keys look like ``scsi0:3.fileName``: a bus, a controller index, a unit.
A device counts only when its own ``present`` is TRUE and, for SCSI/SATA/NVMe,
its controller's too (what VMware powers on with; libvirt reads it the same
way). ``present = "FALSE"`` therefore removes the whole device.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmshift.confine import Policy
from vmshift.convert.vmx.lexer import VmxFile
from vmshift.convert.vmx.paths import SourcePath, resolve_file_name
from vmshift.errors import bad_input
from vmshift.model import BusType, CdRom, Controller, Disk, DiskMode, DiskSharing, Floppy

_DEVICE_KEY = re.compile(r"^(scsi|sata|nvme|ide)(\d+):(\d+)\.present$")
_FLOPPY_KEY = re.compile(r"^floppy(\d+)\.present$")

# Controller models VMware writes in scsiN.virtualDev; an absent one means the
# guest OS default, which for every guest VMware supports today is LSI Logic.
SCSI_MODELS = {"buslogic", "lsilogic", "lsisas1068", "pvscsi"}

# deviceType values, grouped by what the guest sees.
DISK_TYPES = {"scsi-harddisk", "ata-harddisk", "disk", "plaindisk", "rawdisk",
              "scsi-nonpersistent", "scsi-persistent"}
CDROM_TYPES = {"cdrom-image", "cdrom-raw", "atapi-cdrom"}
# Controllers that exist with no key: IDE is built into the virtual chipset.
IMPLICIT_CONTROLLERS = {"ide"}
# Unit limits per bus (pvscsi "superwide" has 64 targets, SATA 30 ports).
MAX_UNIT = {"scsi": 64, "sata": 29, "nvme": 63, "ide": 1}
MAX_CONTROLLER = {"scsi": 3, "sata": 3, "nvme": 3, "ide": 1}
# Order in which buses are listed, as libvirt's reader lists them.
BUS_ORDER = {"scsi": 0, "sata": 1, "nvme": 2, "ide": 3}

_MODES = {
    "persistent": DiskMode.PERSISTENT,
    "independent-persistent": DiskMode.INDEPENDENT_PERSISTENT,
    "independent-nonpersistent": DiskMode.INDEPENDENT_NONPERSISTENT,
    "nonpersistent": DiskMode.NONPERSISTENT,
    "undoable": DiskMode.UNDOABLE,
}
EMPTY_BACKINGS = {"", "emptybackingstring"}


@dataclass
class Storage:
    disks: list[Disk]
    cdroms: list[CdRom]
    floppies: list[Floppy]
    passthrough_luns: list[str]  # SCSI generic passthrough that is not a CD-ROM


@dataclass
class _Files:
    """Resolves the file names of one VMX under one confinement policy."""

    vmx: VmxFile
    policy: Policy | None
    must_exist: bool

    def resolve(self, key: str, name: str, *, disk: bool) -> SourcePath:
        return resolve_file_name(self.vmx.path, self.vmx.spelled(key), name,
                                 self.vmx.line(key), self.policy,
                                 must_exist=disk and self.must_exist)


def read_storage(vmx: VmxFile, notes: list[str], policy: Policy | None = None, *,
                 must_exist: bool = False) -> Storage:
    """The VMX's storage devices; every file they name is confined by ``policy``
    (``must_exist``: a disk must be here, not only be allowed to be)."""
    result = Storage([], [], [], [])
    files = _Files(vmx, policy, must_exist)
    slots = sorted(
        ((m.group(1), int(m.group(2)), int(m.group(3))) for m in vmx.keys_matching(_DEVICE_KEY)),
        key=lambda s: (BUS_ORDER[s[0]], s[1], s[2]),
    )
    for bus, ctrl, unit in slots:
        prefix = f"{bus}{ctrl}:{unit}"
        if not vmx.get_bool(f"{prefix}.present", False):
            continue
        _check_slot(vmx, bus, ctrl, unit, prefix)
        controller = _controller(vmx, bus, ctrl, notes, prefix)
        if controller is None:
            continue
        _read_device(files, prefix, bus, controller, unit, result, notes)
    result.floppies = _floppies(files, notes)
    _refuse_double_attachment(vmx, result.disks)
    return result


def _refuse_double_attachment(vmx: VmxFile, disks: list[Disk]) -> None:
    """One disk file on two slots: VMware refuses to power on (the file is locked),
    and on KVM two writers on one image corrupt it, unless both say multi-writer."""
    seen: dict[str, Disk] = {}
    for disk in disks:
        assert disk.source is not None
        first = seen.get(disk.source)
        if first is not None and not (disk.sharing == first.sharing == DiskSharing.MULTI_WRITER):
            key = f"{disk.label}.fileName"
            raise bad_input(vmx.path, f"{vmx.spelled(key)}: {disk.source!r} is already attached "
                                      f"as {first.label} (same file twice, not multi-writer)",
                            vmx.line(key))
        seen[disk.source] = disk


def _check_slot(vmx: VmxFile, bus: str, ctrl: int, unit: int, prefix: str) -> None:
    if ctrl > MAX_CONTROLLER[bus] or unit > MAX_UNIT[bus]:
        raise bad_input(vmx.path, f"{prefix}: no such {bus} slot (controller 0.."
                                  f"{MAX_CONTROLLER[bus]}, unit 0..{MAX_UNIT[bus]})",
                        vmx.line(f"{prefix}.present"))


def _controller(vmx: VmxFile, bus: str, ctrl: int, notes: list[str],
                prefix: str) -> Controller | None:
    if bus in IMPLICIT_CONTROLLERS:
        return Controller(bus=BusType.IDE, index=ctrl)
    if not vmx.get_bool(f"{bus}{ctrl}.present", False):
        notes.append(f"{prefix}: its controller {bus}{ctrl} is not present; the device is "
                     "ignored, as VMware does")
        return None
    model = (vmx.get(f"{bus}{ctrl}.virtualDev") or "").strip().lower() or None
    if bus == "scsi" and model is not None and model not in SCSI_MODELS:
        raise bad_input(vmx.path, f"{bus}{ctrl}.virtualDev = {model!r}: unknown SCSI "
                                  f"controller (expected one of {sorted(SCSI_MODELS)})",
                        vmx.line(f"{bus}{ctrl}.virtualDev"))
    if bus == "sata":
        model = model or "ahci"
    return Controller(bus=BusType(bus), index=ctrl, model=model)


def _device_type(vmx: VmxFile, prefix: str, bus: str) -> str:
    value = (vmx.get(f"{prefix}.deviceType") or "").strip().lower()
    if value:
        return value
    name = (vmx.get(f"{prefix}.fileName") or "").lower()
    if name.endswith(".iso"):
        return "cdrom-image"
    return "scsi-harddisk" if bus == "scsi" else "ata-harddisk"


def _read_device(files: _Files, prefix: str, bus: str, controller: Controller, unit: int,
                 result: Storage, notes: list[str]) -> None:
    vmx = files.vmx
    device_type = _device_type(vmx, prefix, bus)
    if device_type in DISK_TYPES:
        result.disks.append(_disk(files, prefix, controller, unit))
    elif device_type in CDROM_TYPES:
        result.cdroms.append(_cdrom(files, prefix, controller, unit, device_type, notes))
    elif device_type == "scsi-passthru":
        name = vmx.get(f"{prefix}.fileName") or ""
        if "cdrom" in name.lower():
            result.cdroms.append(CdRom(controller=controller, unit=unit,
                                       device_type="passthrough"))
            notes.append(f"{prefix}: CD-ROM passthrough of the ESXi host's drive {name!r}; "
                         "it becomes an empty CD-ROM drive")
        else:
            result.passthrough_luns.append(f"{prefix}={name}")
            notes.append(f"{prefix}: SCSI passthrough device {name!r} cannot move to another "
                         "host; left out")
    else:
        raise bad_input(vmx.path, f"{prefix}.deviceType = {device_type!r}: unknown device type",
                        vmx.line(f"{prefix}.deviceType"))


def _disk(files: _Files, prefix: str, controller: Controller, unit: int) -> Disk:
    vmx = files.vmx
    key = f"{prefix}.fileName"
    name = vmx.get(key)
    if name is None or name.strip() == "":
        raise bad_input(vmx.path, f"{prefix}: a disk without a fileName",
                        vmx.line(f"{prefix}.present"))
    where = files.resolve(key, name.strip(), disk=True)
    mode_text = (vmx.get(f"{prefix}.mode") or "").strip().lower()
    if mode_text and mode_text not in _MODES:
        raise bad_input(vmx.path, f"{prefix}.mode = {mode_text!r}: unknown disk mode",
                        vmx.line(f"{prefix}.mode"))
    sharing = (vmx.get(f"{prefix}.sharing") or "").strip().lower()
    return Disk(
        source=where.path,
        format=_format_of(where.path),
        controller=controller,
        unit=unit,
        mode=_MODES.get(mode_text, DiskMode.PERSISTENT),
        sharing=DiskSharing.MULTI_WRITER if sharing == "multi-writer" else DiskSharing.NONE,
        rdm=None,
        passthrough=False,
        cbt_enabled=vmx.get_bool(f"{prefix}.ctkEnabled", False),
        datastore=where.datastore,
        label=prefix,
        readonly=False,
    )


def _format_of(path: str) -> str | None:
    lower = path.lower()
    for ext, fmt in ((".vmdk", "vmdk"), (".qcow2", "qcow2"), (".img", "raw"), (".raw", "raw")):
        if lower.endswith(ext):
            return fmt
    return None


def _cdrom(files: _Files, prefix: str, controller: Controller, unit: int, device_type: str,
           notes: list[str]) -> CdRom:
    vmx = files.vmx
    key = f"{prefix}.fileName"
    name = (vmx.get(key) or "").strip()
    if device_type == "cdrom-image" and name.lower() not in EMPTY_BACKINGS:
        where = files.resolve(key, name, disk=False)
        return CdRom(source=where.path, controller=controller, unit=unit, device_type="iso")
    if device_type == "cdrom-image":
        return CdRom(controller=controller, unit=unit, device_type="empty")
    if name and name.lower() != "auto detect":
        notes.append(f"{prefix}: CD-ROM drive backed by the source host's device {name!r}; "
                     "it becomes an empty CD-ROM drive")
    return CdRom(controller=controller, unit=unit, device_type="host-device")


def _floppies(files: _Files, notes: list[str]) -> list[Floppy]:
    vmx = files.vmx
    floppies: list[Floppy] = []
    for index in sorted(int(m.group(1)) for m in vmx.keys_matching(_FLOPPY_KEY)):
        prefix = f"floppy{index}"
        if index > 1:
            raise bad_input(vmx.path, f"{prefix}: a PC has floppy0 and floppy1 only",
                            vmx.line(f"{prefix}.present"))
        if not vmx.get_bool(f"{prefix}.present", False):
            continue
        file_type = (vmx.get(f"{prefix}.fileType") or "device").strip().lower()
        key = f"{prefix}.fileName"
        name = (vmx.get(key) or "").strip()
        if file_type == "file" and name:
            where = files.resolve(key, name, disk=False)
            floppies.append(Floppy(source=where.path, unit=index, device_type="image"))
        else:
            if name:
                notes.append(f"{prefix}: floppy drive backed by the source host's device "
                             f"{name!r}; it becomes an empty drive")
            floppies.append(Floppy(unit=index, device_type="host-device" if name else "empty"))
    return floppies
