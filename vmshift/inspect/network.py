"""Network configuration a Linux guest carries, and which interfaces it names.

On KVM the NIC changes model (vmxnet3 -> virtio-net) and usually PCI slot,
so predictable names (ens192) and MAC pins are what breaks networking after
a move. This module only finds them; rewriting is the converter's job.
"""

from __future__ import annotations

import configparser
import posixpath
import re

from vmshift.inspect.files import GuestFiles, glob_dir, read_text
from vmshift.inspect.result import NetConfig

_MAC = re.compile(r"^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$")


def _mac(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().strip('"\'')
    return value.lower().replace("-", ":") if _MAC.match(value) else None


def ifupdown(files: GuestFiles) -> list[NetConfig]:
    paths = ["/etc/network/interfaces"] + glob_dir(files, "/etc/network/interfaces.d")
    out: list[NetConfig] = []
    for path in paths:
        text = read_text(files, path)
        if text is None:
            continue
        current: NetConfig | None = None
        named: set[str] = set()
        for raw in text.splitlines():
            f = raw.split("#", 1)[0].split()
            if not f:
                continue
            if f[0] == "iface" and len(f) >= 2:
                current = NetConfig("ifupdown", path, f[1], None, f[3] if len(f) > 3 else None)
                out.append(current)
                named.add(f[1])
            elif f[0] in ("auto", "allow-hotplug") or f[0].startswith("allow-"):
                current = None
                for name in f[1:]:
                    if name not in named:
                        named.add(name)
                        out.append(NetConfig("ifupdown", path, name))
            elif f[0] in ("hwaddress",) and current is not None:
                current.mac = _mac(f[-1])
    # "auto X" and "iface X" describe one interface: keep the iface entry.
    seen: dict[tuple[str, str | None], NetConfig] = {}
    for cfg in out:
        key = (cfg.file, cfg.interface)
        if key not in seen or cfg.method is not None:
            seen[key] = cfg
    return list(seen.values())


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def netplan(files: GuestFiles) -> list[NetConfig]:
    """Interfaces under ethernets/bonds/... with their ``match: macaddress`` pins.

    A small indentation walk rather than a YAML library: only the interface
    keys, ``match: macaddress`` and ``set-name`` matter here.
    """
    out: list[NetConfig] = []
    paths = [p for d in ("/etc/netplan", "/lib/netplan", "/run/netplan")
             for p in glob_dir(files, d) if p.endswith((".yaml", ".yml"))]
    for path in paths:
        stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing lines
        current: NetConfig | None = None
        for raw in (read_text(files, path) or "").splitlines():
            line = raw.split("#", 1)[0].rstrip()
            if not line.strip() or line.strip().startswith("- "):
                continue
            ind = _indent(line)
            key, _, value = line.strip().partition(":")
            value = value.strip().strip("'\"")
            while stack and stack[-1][0] >= ind:
                stack.pop()
            parents = [k for _, k in stack]
            if len(parents) >= 1 and parents[-1] in _NETPLAN_SECTIONS:
                current = NetConfig("netplan", path, key)
                out.append(current)
            elif current is not None and len(parents) >= 2 and parents[-2] in _NETPLAN_SECTIONS:
                _netplan_setting(current, key, value)
            elif current is not None and parents[-1:] == ["match"] and key == "macaddress":
                current.mac = _mac(value)
            stack.append((ind, key))
    return out


_NETPLAN_SECTIONS = ("ethernets", "bonds", "bridges", "vlans", "wifis")


def _netplan_setting(cfg: NetConfig, key: str, value: str) -> None:
    if key == "set-name":
        cfg.interface = value
    elif key in ("dhcp4", "dhcp6") and value.lower() in ("true", "yes"):
        cfg.method = "dhcp"
    elif key == "addresses" and cfg.method is None:
        cfg.method = "static"


def _ini(text: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        cp.read_string(text)
    except configparser.Error:
        pass  # a malformed file configures nothing the guest would use either
    return cp


def networkmanager(files: GuestFiles) -> list[NetConfig]:
    out = []
    for path in glob_dir(files, "/etc/NetworkManager/system-connections"):
        cp = _ini(read_text(files, path) or "")
        if not cp.has_section("connection"):
            continue
        iface = cp.get("connection", "interface-name", fallback=None)
        mac = None
        for sec in ("ethernet", "802-3-ethernet"):
            mac = mac or _mac(cp.get(sec, "mac-address", fallback=None))
        method = cp.get("ipv4", "method", fallback=None)
        out.append(NetConfig("networkmanager", path, iface, mac,
                             "dhcp" if method == "auto" else method))
    return out


def _shell_vars(text: str) -> dict[str, str]:
    out = {}
    for raw in text.splitlines():
        m = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)=(.*)$", raw)
        if m:
            out[m.group(1)] = m.group(2).strip().strip('"\'')
    return out


def ifcfg(files: GuestFiles) -> list[NetConfig]:
    out = []
    for d in ("/etc/sysconfig/network-scripts", "/etc/sysconfig/network"):
        for path in glob_dir(files, d):
            name = posixpath.basename(path)
            if not name.startswith("ifcfg-") or name == "ifcfg-lo":
                continue
            v = _shell_vars(read_text(files, path) or "")
            iface = v.get("DEVICE") or name.removeprefix("ifcfg-")
            method = v.get("BOOTPROTO", "").lower() or None
            out.append(NetConfig("ifcfg", path, iface, _mac(v.get("HWADDR")), method))
    return out


def networkd(files: GuestFiles) -> list[NetConfig]:
    out = []
    for d in ("/etc/systemd/network", "/run/systemd/network"):
        for path in glob_dir(files, d):
            if not path.endswith((".network", ".link")):
                continue
            cp = _ini(read_text(files, path) or "")
            name = cp.get("Match", "Name", fallback=None)
            mac = _mac(cp.get("Match", "MACAddress", fallback=None))
            if path.endswith(".link"):
                # A .link file renames the NIC whose MAC (or path) matches.
                name = cp.get("Link", "Name", fallback=name)
                method = "rename"
            else:
                dhcp = cp.get("Network", "DHCP", fallback="no").lower()
                method = "dhcp" if dhcp in ("yes", "ipv4", "true") else (
                    "static" if cp.has_option("Network", "Address") else None)
            out.append(NetConfig("systemd-networkd", path, name, mac, method))
    return out


def udev_rules(files: GuestFiles) -> list[NetConfig]:
    """70-persistent-net.rules pins a name to a MAC (older distributions)."""
    out = []
    for path in glob_dir(files, "/etc/udev/rules.d", ".rules"):
        for line in (read_text(files, path) or "").splitlines():
            if 'SUBSYSTEM=="net"' not in line or "NAME=" not in line:
                continue
            mac = re.search(r'ATTR\{address\}=="([^"]+)"', line)
            name = re.search(r'NAME="([^"]+)"', line)
            out.append(NetConfig("udev", path, name.group(1) if name else None,
                                 _mac(mac.group(1)) if mac else None, "rename"))
    return out


def network_configs(files: GuestFiles) -> list[NetConfig]:
    return [*ifupdown(files), *netplan(files), *networkmanager(files), *ifcfg(files),
            *networkd(files), *udev_rules(files)]
