"""Predicates on what inspection found inside the guest (see predicates.py)."""

from __future__ import annotations

from typing import Any

from vmshift.inspect.result import Guest, Inspection
from vmshift.inspect.rules.predicates import TWO_TIB, Reasons, _guests, rule
from vmshift.model import VirtualMachine
from vmshift.units import human


def _label(g: Guest) -> str:
    # libguestfs' product name for Debian is just "12.5": say which OS it is.
    if g.product_name and any(c.isalpha() for c in g.product_name):
        return g.product_name
    return f"{g.distro or g.type} {g.version or ''} on {g.root}".replace("  ", " ")


@rule("guest.free_space")
def free_space(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    if insp is None:
        return None
    mins = p["min_bytes"]
    checked = [fs for fs in insp.filesystems if fs.mountpoint and fs.free_bytes is not None]
    if not checked:
        return None
    out = []
    for fs in checked:
        need = mins.get(fs.mountpoint, mins["*"])
        if fs.free_bytes < need:  # type: ignore[operator]
            out.append(f"{fs.mountpoint} ({fs.device}): {human(fs.free_bytes or 0)} free, "
                       f"{human(need)} needed")
    return out


@rule("guest.encrypted_volume")
def encrypted_volume(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    if insp is None:
        return None
    return [f"{v.kind} on {v.device}" for v in insp.encrypted]


@rule("guest.windows_hibernation")
def windows_hibernation(vm: VirtualMachine, insp: Inspection | None, p: dict,
                        o: Any) -> Reasons:
    wins = _guests(insp, "windows")
    if wins is None:
        return None
    out, unknown = [], False
    for g in wins:
        w = g.windows
        if w is None or (w.hiberfil_hibernated is None and w.hiberboot_enabled is None):
            unknown = True
            continue
        if w.hiberfil_hibernated:
            out.append(f"{g.root}: hibernated (hiberfil.sys holds a resume image)")
        if w.hiberboot_enabled:
            out.append(f"{g.root}: fast startup on (HiberbootEnabled=1)")
    return None if unknown and not out else out


@rule("guest.mbr_over_2tib")
def mbr_over_2tib(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    if insp is None:
        return None
    return [f"{d.source}: {d.virtual_size / 1024**4:.1f} TiB" for d in insp.disks
            if d.partition_table == "msdos" and d.virtual_size > TWO_TIB]


@rule("guest.virtio_missing_windows")
def virtio_missing_windows(vm: VirtualMachine, insp: Inspection | None, p: dict,
                           o: Any) -> Reasons:
    wins = _guests(insp, "windows")
    if wins is None:
        return None
    if o.driver_source or o.allow_emulated:
        return []  # the converter installs the drivers from there, or uses SATA
    out, unknown = [], False
    for g in wins:
        services = g.windows.services if g.windows else {}
        if not services:
            unknown = True
        elif not g.windows.has_service("viostor", "vioscsi"):  # type: ignore[union-attr]
            out.append(f"{_label(g)}: no viostor or vioscsi service")
    return None if unknown and not out else out


@rule("guest.virtio_missing_linux")
def virtio_missing_linux(vm: VirtualMachine, insp: Inspection | None, p: dict,
                         o: Any) -> Reasons:
    linuxes = _guests(insp, "linux")
    if linuxes is None:
        return None
    out, unknown = [], False
    for g in linuxes:
        for k in g.kernels or []:
            ready = k.virtio_ready()
            if ready is None:
                unknown = True
            elif not ready:
                where = k.initramfs.path if k.initramfs else f"kernel {k.version} (no initramfs)"
                out.append(f"{where}: virtio_pci with virtio_blk or virtio_scsi missing")
        unknown = unknown or g.kernels is None
    return None if unknown and not out else out


@rule("guest.no_os")
def no_os(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    if insp is None:
        return None
    return [] if insp.guests else ["no operating system found"]


@rule("guest.unrecognised_disk")
def unrecognised_disk(vm: VirtualMachine, insp: Inspection | None, p: dict,
                      o: Any) -> Reasons:
    if insp is None:
        return None
    known = {f.device for f in insp.filesystems if f.type != "unknown"}
    known |= {e.device for e in insp.encrypted}
    out, unknown = [], False
    for d in insp.disks:
        if d.partition_table or d.partitions or d.device in known or d.boot_signature:
            continue
        if d.boot_signature is None:
            unknown = True  # its first sector could not be read
            continue
        out.append(f"{d.source}: no partition table, no filesystem, no boot sector")
    return None if unknown and not out else out


@rule("guest.fstab_device_names")
def fstab_device_names(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    linuxes = _guests(insp, "linux")
    if linuxes is None:
        return None
    if any(g.fstab is None for g in linuxes):
        return None
    out = []
    for g in linuxes:
        out += [f"/etc/fstab:{e.line}: {e.device.spec} ({e.mountpoint})"
                for e in g.fstab or [] if e.device.needs_rewrite]
        out += [f"/etc/crypttab:{e.line}: {e.device.spec} ({e.name})"
                for e in g.crypttab or [] if e.device.needs_rewrite]
    return out


@rule("guest.device_install_restricted")
def device_install_restricted(vm: VirtualMachine, insp: Inspection | None, p: dict,
                              o: Any) -> Reasons:
    wins = _guests(insp, "windows")
    if wins is None:
        return None
    states = [(g, g.windows.device_install_blocked if g.windows else None) for g in wins]
    out = [f"{g.root}: {g.windows.device_install_restrictions}" for g, s in states
           if s and g.windows]
    return None if not out and any(s is None for _, s in states) else out


@rule("guest.vmware_tools")
def vmware_tools(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    if insp is None or not insp.guests:
        if vm.guest.tools_installed is None:
            return None
        return ["VMware Tools reported by the hypervisor"] if vm.guest.tools_installed else []
    states = [g.vmware_tools for g in insp.guests]
    out = [_label(g) for g in insp.guests if g.vmware_tools]
    return None if not out and any(s is None for s in states) else out
