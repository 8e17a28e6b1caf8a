"""Windows guest facts, read with hivex from copies of the SYSTEM and SOFTWARE hives.

The hives are downloaded from the read-only appliance mount and opened on
the host, so nothing in the guest is ever written. Keys are looked up
case-insensitively, as Windows does.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

from vmshift.inspect.files import GuestFiles
from vmshift.inspect.result import WindowsInfo, WindowsService
from vmshift.inspect.windows_net import tools_uninstall, windows_nics

VIRTIO_SERVICES = ("viostor", "vioscsi", "netkvm")
VMWARE_TOOLS_SERVICES = ("VMTools", "vmtoolsd", "VMware Physical Disk Helper Service")
CURRENT_VERSION = ("Microsoft", "Windows NT", "CurrentVersion")
RESTRICTIONS = ("Policies", "Microsoft", "Windows", "DeviceInstall", "Restrictions")
REG_SZ, REG_EXPAND_SZ, REG_DWORD, REG_MULTI_SZ = 1, 2, 4, 7
CasePath = Callable[[str], str | None]


class Hive:
    """A thin read-only wrapper over python3-hivex with path lookups."""

    def __init__(self, path: str) -> None:
        import hivex  # Debian's python3-hivex, through --system-site-packages

        self.h = hivex.Hivex(path)

    def node(self, *names: str) -> int | None:
        node = self.h.root()
        for name in names:
            node = self.h.node_get_child(node, name)
            if not node:
                return None
        return int(node)

    def children(self, node: int) -> list[tuple[str, int]]:
        return [(self.h.node_name(c), int(c)) for c in self.h.node_children(node)]

    def values(self, node: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for v in self.h.node_values(node):
            out[self.h.value_key(v)] = self._decode(v)
        return out

    def value(self, node: int | None, key: str) -> Any:
        if node is None:
            return None
        for v in self.h.node_values(node):
            if self.h.value_key(v).lower() == key.lower():
                return self._decode(v)
        return None

    def _decode(self, v: int) -> Any:
        vtype, _ = self.h.value_type(v)
        try:
            if vtype in (REG_SZ, REG_EXPAND_SZ):
                return self.h.value_string(v)
            if vtype == REG_DWORD:
                return int(self.h.value_dword(v))
            if vtype == REG_MULTI_SZ:
                return list(self.h.value_multiple_strings(v))
        except RuntimeError:
            return None
        return self.h.value_value(v)[1]


def _as_int(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def software_facts(hive: Hive, info: WindowsInfo) -> None:
    cv = hive.node(*CURRENT_VERSION)
    info.product_name = hive.value(cv, "ProductName")
    major, minor = hive.value(cv, "CurrentMajorVersionNumber"), \
        hive.value(cv, "CurrentMinorVersionNumber")
    info.version = f"{major}.{minor}" if isinstance(major, int) and isinstance(minor, int) \
        else hive.value(cv, "CurrentVersion")
    info.build = hive.value(cv, "CurrentBuildNumber") or hive.value(cv, "CurrentBuild")
    info.edition = hive.value(cv, "EditionID")
    info.installation_type = hive.value(cv, "InstallationType")
    info.system_root = hive.value(cv, "SystemRoot") or info.system_root
    restrictions = hive.node(*RESTRICTIONS)
    if restrictions is None:
        info.device_install_restrictions = {}
        info.device_install_blocked = False
    else:
        vals = hive.values(restrictions)
        info.device_install_restrictions = {k: v for k, v in vals.items()
                                            if not isinstance(v, bytes)}
        info.device_install_blocked = any(
            k.lower().startswith("deny") and _as_int(v) == 1 for k, v in vals.items())
    tools_key = hive.node("VMware, Inc.", "VMware Tools") is not None
    info.vmware_tools_uninstall = tools_uninstall(hive)
    info.vmware_tools = bool(info.vmware_tools) or tools_key \
        or info.vmware_tools_uninstall is not None
    device_path = hive.value(hive.node("Microsoft", "Windows", "CurrentVersion"), "DevicePath")
    info.device_path = device_path if isinstance(device_path, str) else None


def system_facts(hive: Hive, info: WindowsInfo) -> None:
    current = _as_int(hive.value(hive.node("Select"), "Current"))
    if current is None:
        info.errors.append("SYSTEM hive has no Select\\Current value")
        return
    ccs = f"ControlSet{current:03d}"
    info.current_control_set = ccs
    services = hive.node(ccs, "Services")
    for name in VIRTIO_SERVICES:
        svc = hive.node(ccs, "Services", name) if services else None
        info.services[name] = WindowsService(
            name, svc is not None, _as_int(hive.value(svc, "Start")),
            hive.value(svc, "ImagePath"))
    if services and any(hive.node(ccs, "Services", s) for s in VMWARE_TOOLS_SERVICES):
        info.vmware_tools = True
    info.nics = windows_nics(hive, ccs)
    info.driver_database = hive.node("DriverDatabase") is not None
    power = hive.node(ccs, "Control", "Session Manager", "Power")
    hiberboot = _as_int(hive.value(power, "HiberbootEnabled"))
    # Absent means Windows' default, which is on for Windows 8 and later clients.
    info.hiberboot_enabled = bool(hiberboot) if hiberboot is not None else None


def hostname(hive: Hive, ccs: str | None) -> str | None:
    if ccs is None:
        return None
    params = hive.node(ccs, "Services", "Tcpip", "Parameters")
    return hive.value(params, "Hostname") or hive.value(params, "NV Hostname")


def _fetch_hive(files: GuestFiles, case_path: CasePath, path: str, tmp: str) -> str | None:
    real = case_path(path)
    if real is None or not files.is_file(real):
        return None
    local = os.path.join(tmp, os.path.basename(real))
    files.fetch(real, local)
    return local


def hiberfil(files: GuestFiles, case_path: CasePath, info: WindowsInfo) -> None:
    real = case_path("/hiberfil.sys")
    size = files.size(real) if real else None
    info.hiberfil_present = bool(size)
    info.hiberfil_hibernated = False
    if real and size:
        # A resumable image starts with "hibr" (or "HIBR"); Windows rewrites the
        # signature to "wake"/zeros once it has resumed.
        info.hiberfil_hibernated = (files.head(real, 4) or b"").lower() == b"hibr"


def windows_facts(files: GuestFiles, case_path: CasePath,
                  system_root_path: str | None) -> tuple[WindowsInfo, str | None]:
    """The facts and the hostname of one Windows root (applications come from libguestfs)."""
    info = WindowsInfo(None, system_root_path, None, None, None, None, None, None)
    host = None
    root = system_root_path or "/Windows"
    with tempfile.TemporaryDirectory(prefix="vmshift-hives-") as tmp:
        software = _fetch_hive(files, case_path, f"{root}/System32/config/SOFTWARE", tmp)
        system = _fetch_hive(files, case_path, f"{root}/System32/config/SYSTEM", tmp)
        for name, local, reader in (("SOFTWARE", software, software_facts),
                                    ("SYSTEM", system, system_facts)):
            if local is None:
                info.errors.append(f"{name} hive not found")
                continue
            try:
                hive = Hive(local)
                reader(hive, info)
                if name == "SYSTEM":
                    host = hostname(hive, info.current_control_set)
            except RuntimeError as exc:
                info.errors.append(f"{name} hive unreadable: {exc}")
    hiberfil(files, case_path, info)
    return info, host
