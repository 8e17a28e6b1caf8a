"""Windows guest conversion: what must change inside a VMware Windows guest for KVM.

The concerns are modules of their own (``catalogue``: which virtio-win
folders; ``drivers``: files and the boot-critical registry; ``firstboot``:
pnputil, the agent, VMware Tools, the network). Each only plans ``Edit``
objects; this module picks the buses, orders the plan and applies it
through the appliance, on the copy-on-write overlay, never on the source.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmshift.drivers.edits import Applied, Edit, EditPlan, change_guest
from vmshift.drivers.windows import catalogue, drivers, firstboot
from vmshift.drivers.windows.virtiowin import Selection, open_virtio_win
from vmshift.errors import BadInput, OperationFailed
from vmshift.inspect.result import Guest
from vmshift.model import Nic


@dataclass
class WindowsOptions:
    virtio_win: Path | None = None
    allow_emulated: bool = False
    keep_vmware_tools: bool = False


@dataclass
class WindowsResult:
    plan: EditPlan
    disk_bus: str  # virtio, scsi or sata: what the XML gives the disks
    nic_model: str  # virtio or e1000e
    installed: list[str] = field(default_factory=list)  # drivers injected
    os_folder: str | None = None
    restores: list[firstboot.Restore] = field(default_factory=list)
    firstboot: list[str] = field(default_factory=list)
    applied: list[Applied] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        changes = self.applied and [a.as_dict() for a in self.applied] \
            or [e.as_dict() for e in self.plan.edits]
        return {"changes": changes, "checked": list(self.plan.notes),
                "drivers_installed": list(self.installed), "virtio_win_folder": self.os_folder,
                "disk_bus": self.disk_bus, "nic_model": self.nic_model,
                "network_restore": [r.as_dict() for r in self.restores],
                "firstboot": list(self.firstboot)}


def has_virtio(guest: Guest, names: tuple[str, ...]) -> bool:
    return guest.windows is not None and guest.windows.has_service(*names)


def _version(guest: Guest) -> tuple[int, int, int]:
    w = guest.windows
    build = int(w.build) if w and w.build and str(w.build).isdigit() else 0
    return guest.major or 0, guest.minor or 0, build


def _selection(guest: Guest, opts: WindowsOptions) -> tuple[Selection, Any]:
    if opts.virtio_win is None:
        return Selection(), None
    tree = open_virtio_win(opts.virtio_win)
    w = guest.windows
    server = catalogue.is_server(w.installation_type if w else None, guest.product_name)
    folders = catalogue.os_folders(*_version(guest), server)
    return tree.select(folders, guest.arch or ""), tree


def _buses(guest: Guest, sel: Selection, opts: WindowsOptions, plan: EditPlan
           ) -> tuple[str, str]:
    """virtio when its drivers are (or will be) there; else SATA/e1000e only if allowed."""
    if "viostor" in sel.drivers or has_virtio(guest, ("viostor",)):
        disk = "virtio"
    elif "vioscsi" in sel.drivers or has_virtio(guest, ("vioscsi",)):
        disk = "scsi"
    elif opts.allow_emulated:
        disk = "sata"
        plan.notes.append("no virtio storage driver for this Windows: disks on SATA "
                          "(--allow-emulated); install virtio-win later for speed")
    else:
        where = f" in {opts.virtio_win}" if opts.virtio_win else ""
        raise BadInput(f"--virtio-win: no viostor or vioscsi driver for {guest.product_name} "
                       f"({guest.arch}){where}; give a virtio-win that has one, or "
                       "--allow-emulated for SATA and e1000e")
    net = "virtio" if "netkvm" in sel.drivers or has_virtio(guest, ("netkvm",)) else "e1000e"
    if net == "e1000e":
        plan.notes.append("no netkvm driver: the NICs are e1000e, which Windows drives itself")
    return disk, net


def plan_windows(guest: Guest, nics: list[Nic], opts: WindowsOptions, resolve: drivers.Resolve,
                 work: Path) -> WindowsResult:
    info = guest.windows
    if info is None or not info.current_control_set or not info.system_root_path:
        raise OperationFailed(f"{guest.root}: the Windows registry could not be read: "
                              + "; ".join(info.errors if info else []))
    plan = EditPlan()
    sel, tree = _selection(guest, opts)
    disk_bus, nic_model = _buses(guest, sel, opts, plan)
    if sel.missing and sel.drivers:
        plan.notes.append(f"virtio-win has no {', '.join(sel.missing)} for this Windows")
    wanted = [f for _, _, files in sel.drivers.values() for f in files]
    wanted += [sel.qemu_ga] if sel.qemu_ga else []
    host = tree.extract(wanted, work) if tree is not None else {}
    sysroot = info.system_root_path
    arch = catalogue.ARCH_FOLDERS.get(guest.arch or "", "amd64").lower()
    plan.extend(drivers.plan_files(sel, host, sysroot, resolve))
    boot = catalogue.boot_driver(disk_bus)
    if boot is not None and boot.name in sel.drivers:
        plan.extend(drivers.plan_boot_driver(sel, boot, info, host, sysroot, arch, resolve))
    plan.extend(drivers.plan_device_path(sel, info, sysroot, resolve))
    restores, notes = firstboot.match_nics(info.nics, nics)
    plan.notes.extend(notes)
    fb_plan, steps = firstboot.plan_firstboot(firstboot.FirstbootInput(
        info, sysroot, list(sel.drivers),
        restores, host.get(sel.qemu_ga) if sel.qemu_ga else None,
        remove_tools=not opts.keep_vmware_tools), resolve)
    plan.extend(fb_plan)
    plan.edits = _ordered(plan.edits)
    return WindowsResult(plan, disk_bus, nic_model, list(sel.drivers), sel.os_folder,
                         restores, steps)


def _ordered(edits: list[Edit]) -> list[Edit]:
    """Files first, then the registry hive by hive, so each hive is opened once."""
    files = [e for e in edits if e.action != "registry"]
    hives = sorted({str(e.path) for e in edits if e.action == "registry"})
    return files + [e for h in hives for e in edits if e.action == "registry" and e.path == h]


def resolver(g: Any) -> drivers.Resolve:
    """The guest's own spelling of a path: NTFS keeps case, and ntfs-3g matches it exactly."""
    def resolve(path: str) -> str:
        parts = [p for p in path.split("/") if p]
        for n in range(len(parts), 0, -1):
            try:
                head = str(g.case_sensitive_path("/" + "/".join(parts[:n])))
            except RuntimeError:
                continue
            return "/".join([head.rstrip("/")] + parts[n:])
        return "/" + "/".join(parts)
    return resolve


def convert_windows(g: Any, guest: Guest, nics: list[Nic], opts: WindowsOptions, *,
                    dry_run: bool) -> WindowsResult:
    """Plan, and unless DRY_RUN apply, the Windows changes in the mounted overlay."""
    # The host copies of the drivers live until they are uploaded.
    with tempfile.TemporaryDirectory(prefix="vmshift-virtio-win-") as work:
        return change_guest(  # type: ignore[no-any-return]
            g, guest, lambda: plan_windows(guest, nics, opts, resolver(g), Path(work)),
            dry_run=dry_run)
