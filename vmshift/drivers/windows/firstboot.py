"""What a Windows guest does once, at its first boot on KVM.

Offline, only the boot driver can be made to work; the rest needs Windows
running: pnputil for the other drivers, the guest agent's MSI, VMware Tools'
own uninstaller, and the network: the virtio NIC is a new device, so
Windows gives it none of the old NIC's static addresses. The script puts
them back on the NIC with the same MAC.

The script runs as a service when a service wrapper is available
(``rhsrvany.exe`` or ``pvvxsvc.exe``, as virt-v2v uses: found through
``$VMSHIFT_SRVANY`` or in /usr/share/virt-tools), so it runs at boot, before
anyone logs on; otherwise from HKLM's RunOnce, which Windows runs at the
first administrator's logon.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from vmshift.drivers import registry as reg
from vmshift.drivers.edits import Edit, EditPlan
from vmshift.drivers.windows.drivers import STAGING, Resolve, win_path
from vmshift.inspect.result import WindowsInfo, WindowsNic
from vmshift.model import Nic

SERVICE = "vmshift-firstboot"
HOME = "ProgramData/vmshift"  # C:\ProgramData exists from Windows Vista / 2008 on
WRAPPERS = ("/usr/share/virt-tools/rhsrvany.exe", "/usr/share/virt-tools/pvvxsvc.exe")


@dataclass
class Restore:
    """One NIC's settings for the first boot to put back."""

    mac: str
    guid: str
    matched_by: str  # network_address, only_nic, order
    dhcp: bool
    addresses: list[str] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    dns6: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def match_nics(found: list[WindowsNic], nics: list[Nic]) -> tuple[list[Restore], list[str]]:
    """Pair each Windows NIC with the VM's NIC (by MAC) whose settings it carries.

    The registry keeps a NIC's MAC only when it was overridden (NetworkAddress);
    otherwise one NIC on each side pairs by itself, and several pair in order
    (Windows numbers its class keys in install order, as VMware numbers
    ethernetN), which the report says so an admin can check it."""
    macs = [n.mac.lower() for n in nics if n.mac]
    out: list[Restore] = []
    notes: list[str] = []
    by_order = len(found) == len(macs)
    for i, w in enumerate(found):
        if w.mac and w.mac in macs:
            mac, how = w.mac, "network_address"
        elif len(found) == 1 and len(macs) == 1:
            mac, how = macs[0], "only_nic"
        elif by_order:
            mac, how = macs[i], "order"
        else:
            notes.append(f"network: cannot tell which NIC had {w.guid} ({w.description}); "
                         "its settings are not restored")
            continue
        out.append(Restore(mac, w.guid, how, w.dhcp, list(w.addresses), list(w.gateways),
                           list(w.dns), list(w.dns6)))
    return out, notes


def wrapper() -> Path | None:
    """A service wrapper to run the script at boot, if there is one on this host."""
    given = os.environ.get("VMSHIFT_SRVANY")
    for candidate in ([given] if given else []) + list(WRAPPERS):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def _ps(items: list[str]) -> str:
    # A PowerShell array of single-quoted strings ('' escapes a quote).
    return "@(" + ",".join("'" + s.replace("'", "''") + "'" for s in items) + ")"


def _mask(prefix: int) -> str:
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)


def network_step(r: Restore) -> tuple[str, str]:
    ips = [a.split("/")[0] for a in r.addresses]
    masks = [_mask(int(a.split("/")[1])) for a in r.addresses]
    mac = r.mac.upper()  # as WMI spells it
    code = (f"Restore-Nic '{mac}' {_ps(ips)} {_ps(masks)} {_ps(r.gateways)} "
            f"{_ps(r.dns)} {_ps(r.dns6)}")
    what = (f"restore {', '.join(r.addresses) or 'DHCP'}"
            + (f" via {', '.join(r.gateways)}" if r.gateways else "")
            + (f", DNS {', '.join(r.dns + r.dns6)}" if r.dns or r.dns6 else "")
            + f" on the NIC with MAC {r.mac} (matched by {r.matched_by})")
    return what, code


def tools_step(uninstall: str) -> tuple[str, str]:
    """VMware Tools' registered uninstaller, made silent when it is an MSI."""
    msi = re.search(r"(\{[0-9A-Fa-f-]{36}\})", uninstall)
    if msi and "msiexec" in uninstall.lower():
        args = f"/x {msi.group(1)} /qn /norestart REBOOT=ReallySuppress"
        return f"uninstall VMware Tools (msiexec {args})", f"Run 'msiexec.exe' '{args}'"
    return (f"uninstall VMware Tools ({uninstall})",
            f"Run 'cmd.exe' '/c {uninstall.replace(chr(39), chr(39) * 2)}'")


@dataclass
class FirstbootInput:
    info: WindowsInfo
    sysroot: str  # the guest path of SystemRoot (/Windows)
    drivers: list[str]  # the staged driver folders, for pnputil
    restores: list[Restore]
    agent_msi: Path | None  # the host copy of qemu-ga's MSI
    remove_tools: bool


def plan_firstboot(inp: FirstbootInput, resolve: Resolve) -> tuple[EditPlan, list[str]]:
    plan = EditPlan()
    root = inp.info.system_root or "C:\\Windows"
    drive = root.split("\\")[0] or "C:"
    home = win_path(drive, HOME)
    steps: list[tuple[str, str]] = []
    for name in inp.drivers:
        inf = win_path(root, f"{STAGING}/{name}/*.inf")
        steps.append((f"pnputil -i -a {inf}", f"Run 'pnputil.exe' '-i -a \"{inf}\"'"))
    if inp.agent_msi is not None:
        guest_msi = resolve(f"/{HOME}/{inp.agent_msi.name}")
        plan.add(Edit("guest_agent", "upload", guest_msi, "qemu-guest-agent's installer",
                      source=str(inp.agent_msi)))
        msi = win_path(drive, f"{HOME}/{inp.agent_msi.name}")
        steps.append((f"install qemu-guest-agent ({msi})",
                      f"Run 'msiexec.exe' '/i \"{msi}\" /qn /norestart'"))
    steps += [network_step(r) for r in inp.restores if not r.dhcp]
    if inp.remove_tools and inp.info.vmware_tools_uninstall:
        steps.append(tools_step(inp.info.vmware_tools_uninstall))
    helper = wrapper()
    runner = _runner(plan, inp, helper, home, resolve)
    script = _script(steps, home, remove=runner)
    plan.edits.insert(0, Edit("firstboot", "write", resolve(f"/{HOME}/firstboot.ps1"),
                              "the first-boot script", content=script.encode("utf-8-sig")))
    return plan, [what for what, _ in steps]


def _script(steps: list[tuple[str, str]], home: str, remove: str) -> str:
    template = resources.files("vmshift.drivers.windows").joinpath("files/firstboot.ps1")
    body = "\n".join(f"Say '{what.replace(chr(39), chr(39) * 2)}'\n{code}" for what, code in steps)
    text = template.read_text().replace("@LOG@", f"{home}\\firstboot.log")
    return text.replace("@STEPS@", body).replace("@REMOVE@", remove).replace("\n", "\r\n")


def _runner(plan: EditPlan, inp: FirstbootInput, helper: Path | None, home: str,
            resolve: Resolve) -> str:
    """Register how the script starts; return the script's line that unregisters it."""
    command = ("powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File "
               f"\"{home}\\firstboot.ps1\"")
    if helper is None:
        plan.notes.append("first boot: no service wrapper on this host ($VMSHIFT_SRVANY, "
                          "rhsrvany.exe): the script runs from RunOnce at the first "
                          "administrator's logon, so the network comes back then")
        plan.add(Edit("firstboot", "registry", resolve(f"{inp.sysroot}/System32/config/SOFTWARE"),
                      "runs the script once, at the first administrator's logon (no service "
                      "wrapper on this host)",
                      key=("Microsoft", "Windows", "CurrentVersion", "RunOnce"),
                      values=(reg.sz(SERVICE, command),)))
        return "# RunOnce entries remove themselves."
    exe = f"{home}\\{helper.name}"
    plan.add(Edit("firstboot", "upload", resolve(f"/{HOME}/{helper.name}"),
                  "the service wrapper that runs the script", source=str(helper)))
    ccs = str(inp.info.current_control_set)
    system = resolve(f"{inp.sysroot}/System32/config/SYSTEM")
    why = "runs the script once at boot, before anyone logs on"
    plan.add(Edit("firstboot", "registry", system, why, key=(ccs, "Services", SERVICE),
                  values=(reg.dword("Type", 0x10), reg.dword("Start", 2),
                          reg.dword("ErrorControl", 1), reg.expand_sz("ImagePath", exe),
                          reg.sz("ObjectName", "LocalSystem"),
                          reg.sz("DisplayName", "vmshift first boot"))))
    plan.add(Edit("firstboot", "registry", system, why, key=(ccs, "Services", SERVICE,
                                                             "Parameters"),
                  values=(reg.sz("CommandLine", command), reg.sz("PWD", home))))
    return f"Run 'sc.exe' 'delete {SERVICE}'"
