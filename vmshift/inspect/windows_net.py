"""Windows NICs and their TCP/IP settings, read from the SYSTEM hive.

The network class key lists every adapter Windows knows; only PCI ones are
the VM's NICs (the others are WAN miniports, tunnels, loopback). Each names
its ``Tcpip\\Parameters\\Interfaces\\{GUID}`` key, which holds the static
addresses, gateways and DNS servers the first boot on KVM must put back on
the virtio NIC: the new NIC is a new device, so Windows gives it none of them.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from vmshift.inspect.result import WindowsNic

NET_CLASS = "{4D36E972-E325-11CE-BFC1-08002BE10318}"


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [v.strip() for v in value if isinstance(v, str) and v.strip()]


def _dns(value: Any) -> list[str]:
    # Windows keeps NameServer as one string, separated by commas or spaces.
    return [x for s in _strings(value) for x in re.split(r"[,\s]+", s) if x]


def _mac(value: Any) -> str | None:
    text = re.sub(r"[^0-9a-fA-F]", "", value) if isinstance(value, str) else ""
    if len(text) != 12:
        return None
    return ":".join(text[i:i + 2] for i in range(0, 12, 2)).lower()


def _addresses(ips: list[str], masks: list[str]) -> list[str]:
    out = []
    for ip, mask in zip(ips, masks + [""] * len(ips), strict=False):
        if ip in ("", "0.0.0.0"):
            continue
        try:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask or '255.255.255.255'}").prefixlen
            out.append(f"{ipaddress.IPv4Address(ip)}/{prefix}")
        except ValueError:
            continue  # a malformed entry is left out, not guessed
    return out


def _physical(hive: Any, ccs: str) -> list[tuple[str, dict[str, Any]]]:
    node = hive.node(ccs, "Control", "Class", NET_CLASS)
    if node is None:
        return []
    found = []
    for name, child in sorted(hive.children(node)):
        values = {k.lower(): v for k, v in hive.values(child).items()}
        component = values.get("componentid")
        if isinstance(component, str) and component.lower().startswith("pci\\") \
                and isinstance(values.get("netcfginstanceid"), str):
            found.append((name, values))
    return found


def windows_nics(hive: Any, ccs: str) -> list[WindowsNic]:
    """The VM's NICs in the order of their class keys (0000, 0001...), the
    order Windows installed them in."""
    nics = []
    for _, values in _physical(hive, ccs):
        guid = values["netcfginstanceid"]
        tcp = hive.node(ccs, "Services", "Tcpip", "Parameters", "Interfaces", guid)
        tcp6 = hive.node(ccs, "Services", "Tcpip6", "Parameters", "Interfaces", guid)
        dhcp = hive.value(tcp, "EnableDHCP")
        nic = WindowsNic(guid=guid, description=values.get("driverdesc"),
                         component_id=values.get("componentid"),
                         mac=_mac(values.get("networkaddress")),
                         dhcp=dhcp != 0)
        if not nic.dhcp:
            nic.addresses = _addresses(_strings(hive.value(tcp, "IPAddress")),
                                       _strings(hive.value(tcp, "SubnetMask")))
            nic.gateways = _strings(hive.value(tcp, "DefaultGateway"))
        nic.dns = _dns(hive.value(tcp, "NameServer"))
        nic.dns6 = _dns(hive.value(tcp6, "NameServer"))
        nics.append(nic)
    return nics


def tools_uninstall(hive: Any) -> str | None:
    """VMware Tools' registered uninstall command, from the SOFTWARE hive."""
    node = hive.node("Microsoft", "Windows", "CurrentVersion", "Uninstall")
    for _, child in hive.children(node) if node is not None else []:
        if str(hive.value(child, "DisplayName") or "").startswith("VMware Tools"):
            command = hive.value(child, "UninstallString")
            return command if isinstance(command, str) else None
    return None
