"""The virtio drivers into a Windows guest: files, and what makes the boot disk's start.

Windows stops with 0x7B (INACCESSIBLE_BOOT_DEVICE) when no driver bound to the
boot disk's controller starts at boot. Plug and Play cannot help there (it
runs later), so the boot driver is made boot-critical offline:
- its service starts at boot (Start=0) from ``System32\\drivers``;
- the controller's PCI ids are bound to it: in the CriticalDeviceDatabase up
  to Windows 7 / 2008 R2, in ``SYSTEM\\DriverDatabase`` from Windows 8 / 2012
  on (which no longer reads the CriticalDeviceDatabase), with the package in
  the driver store as Windows itself would put it.
Every other driver is staged for Plug and Play (``DevicePath``) and for the
first boot's pnputil.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from vmshift.drivers import registry as reg
from vmshift.drivers.edits import Edit, EditPlan
from vmshift.drivers.windows.catalogue import STORAGE_CLASS, Driver
from vmshift.drivers.windows.virtiowin import Selection
from vmshift.inspect.result import WindowsInfo

Resolve = Callable[[str], str]  # a guest path with the case the guest's files have
STAGING = "Drivers/VirtIO"  # under SystemRoot, as virtio-win's own installer does
# DriverPackages\...\Version: flags, then the package's setup class GUID; Windows'
# kernel PnP reads the class from it when it binds the boot disk (Windows 10 / 2016).
VERSION_HEAD = bytes([0x00, 0xFF, 0x09, 0x00, 0, 0, 0, 0])


def win_path(system_root: str, rel: str) -> str:
    return system_root.rstrip("\\") + "\\" + rel.replace("/", "\\")


def plan_files(sel: Selection, host: dict[str, Path], sysroot: str, resolve: Resolve
               ) -> EditPlan:
    """Each driver's files to the staging folder, and its .sys where Windows loads it."""
    plan = EditPlan()
    for name, (_, os_folder, files) in sel.drivers.items():
        for tree_path in files:
            base = PurePosixPath(tree_path).name
            plan.add(Edit("drivers", "upload", resolve(f"{sysroot}/{STAGING}/{name}/{base}"),
                          f"{name} for pnputil and Plug and Play ({os_folder})",
                          source=str(host[tree_path])))
            if base.lower().endswith(".sys"):
                plan.add(Edit("drivers", "upload", resolve(f"{sysroot}/System32/drivers/{base}"),
                              f"{name} where Windows loads drivers from",
                              source=str(host[tree_path])))
    return plan


def _package_label(driver: Driver, files: list[str], host: dict[str, Path], arch: str) -> str:
    inf = next((f for f in files if f.lower().endswith(".inf")), None)
    digest = hashlib.sha256(host[inf].read_bytes() if inf else driver.name.encode())
    return f"{driver.name}.inf_{arch}_{digest.hexdigest()[:16]}"


def plan_boot_driver(sel: Selection, driver: Driver, info: WindowsInfo, host: dict[str, Path],
                     sysroot: str, arch: str, resolve: Resolve) -> EditPlan:
    """Make DRIVER start at boot and bind it to its controllers' PCI ids."""
    plan = EditPlan()
    system = resolve(f"{sysroot}/System32/config/SYSTEM")
    ccs = str(info.current_control_set)
    why = f"{driver.name} starts at boot, so Windows finds its disk on the {driver.bus} bus"
    plan.add(Edit("registry", "registry", system, why, key=(ccs, "Services", driver.name),
                  values=(reg.dword("Type", 1), reg.dword("Start", 0),
                          reg.sz("Group", "SCSI miniport"), reg.dword("ErrorControl", 1),
                          reg.expand_sz("ImagePath", f"system32\\drivers\\{driver.name}.sys"))))
    if info.driver_database:
        _, _, files = sel.drivers[driver.name]
        plan.extend(_driver_database(driver, files, host, system, sysroot, arch, resolve))
    else:
        for pci in driver.pci_ids:
            plan.add(Edit("registry", "registry", system,
                          f"binds {driver.name} to PCI\\{pci} (CriticalDeviceDatabase, "
                          "Windows 7 / 2008 R2 and older)",
                          key=(ccs, "Control", "CriticalDeviceDatabase", f"PCI#{pci}"),
                          values=(reg.sz("Service", driver.name),
                                  reg.sz("ClassGUID", STORAGE_CLASS))))
    return plan


def _driver_database(driver: Driver, files: list[str], host: dict[str, Path], system: str,
                     sysroot: str, arch: str, resolve: Resolve) -> EditPlan:
    plan = EditPlan()
    label = _package_label(driver, files, host, arch)
    inf, config = f"{driver.name}.inf", f"{driver.name}_inst"
    for tree_path in files:  # the package where the driver store keeps it
        base = PurePosixPath(tree_path).name
        plan.add(Edit("drivers", "upload",
                      resolve(f"{sysroot}/System32/DriverStore/FileRepository/{label}/{base}"),
                      f"{driver.name}'s package in the driver store", source=str(host[tree_path])))
    why = f"binds {driver.name} to its controller in the DriverDatabase (Windows 8 / 2012 on)"
    version = VERSION_HEAD + uuid.UUID(STORAGE_CLASS).bytes_le + bytes(24)
    for key, values in (
            (("DriverInfFiles", inf), (reg.multi_sz("", [label]), reg.sz("Active", label),
                                       reg.multi_sz("Configurations", [config]))),
            (("DriverPackages", label), (reg.binary("Version", version),
                                         reg.sz("Provider", "Red Hat, Inc."),
                                         reg.sz("InfName", inf))),
            (("DriverPackages", label, "Configurations", config),
             (reg.dword("ConfigFlags", 0), reg.sz("Service", driver.name)))):
        plan.add(Edit("registry", "registry", system, why, key=("DriverDatabase", *key),
                      values=values))
    for pci in driver.pci_ids:
        plan.add(Edit("registry", "registry", system, why,
                      key=("DriverDatabase", "DeviceIds", "PCI", pci),
                      values=(reg.binary(inf, bytes([0x01, 0xFF, 0x00, 0x00])),)))
        plan.add(Edit("registry", "registry", system, why,
                      key=("DriverDatabase", "DriverPackages", label, "Descriptors", "PCI", pci),
                      values=(reg.sz("Configuration", config),)))
    return plan


def plan_device_path(sel: Selection, info: WindowsInfo, sysroot: str, resolve: Resolve
                     ) -> EditPlan:
    """Plug and Play also looks in the staging folders, for devices added later."""
    plan = EditPlan()
    current = info.device_path or "%SystemRoot%\\inf"
    parts = [p for p in current.split(";") if p]
    for name in sel.drivers:
        folder = f"%SystemRoot%\\{STAGING.replace('/', chr(92))}\\{name}"
        if folder.lower() not in (p.lower() for p in parts):
            parts.append(folder)
    if ";".join(parts) != current:
        plan.add(Edit("registry", "registry", resolve(f"{sysroot}/System32/config/SOFTWARE"),
                      "Plug and Play searches the staged virtio drivers",
                      key=("Microsoft", "Windows", "CurrentVersion"),
                      values=(reg.expand_sz("DevicePath", ";".join(parts)),)))
    return plan
