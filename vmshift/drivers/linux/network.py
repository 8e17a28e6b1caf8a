"""Keep every interface's name, so its configuration comes up unchanged on KVM.

On ESXi a vmxnet3 NIC in PCI slot 192 is ``ens192``; the same MAC on a
virtio-net device in a q35 machine would be ``enp1s0``, and an ifupdown,
netplan, NetworkManager or ifcfg configuration written for ``ens192``
would configure nothing. Rather than rewriting five configuration formats,
vmshift pins each old name to the NIC's MAC (the MAC travels unchanged):
a systemd ``.link`` file, or a udev rule where udev predates ``.link`` files.
The configuration files themselves are not touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from vmshift.drivers.edits import Edit, EditPlan
from vmshift.inspect.files import GuestFiles
from vmshift.inspect.result import Guest, NetConfig
from vmshift.model import Nic

LINK_DIR = "/etc/systemd/network"
UDEV_RULE = "/etc/udev/rules.d/70-vmshift-net-names.rules"
PERSISTENT_NET = "/etc/udev/rules.d/70-persistent-net.rules"
# Names that are not a physical NIC: bonds, bridges, VLANs on top of a NIC, tunnels.
VIRTUAL = re.compile(r"^(lo|bond|br|team|vlan|virbr|docker|veth|tun|tap|wg|dummy|vnet)\d*")
SLOT_NAME = re.compile(r"^ens(\d+)$")
ETH_NAME = re.compile(r"^eth(\d+)$")


@dataclass(frozen=True)
class Pin:
    name: str
    mac: str
    how: str  # why this NIC: slot, eth order, only NIC, order


def configured_names(configs: list[NetConfig]) -> list[str]:
    """Physical interface names the guest's configuration refers to, without a MAC pin."""
    # A persistent-net rule pins by MAC *and* by VMware's driver (DRIVERS=="vmxnet3"),
    # so on virtio-net it matches nothing: it is stale, not a pin (and is removed).
    pinned = {c.interface for c in configs if c.mac and c.interface and c.source != "udev"}
    names: list[str] = []
    for c in configs:
        name = (c.interface or "").split(".")[0].split(":")[0]  # ens192.10, eth0:1
        if not name or name in pinned or VIRTUAL.match(name) or name in names:
            continue
        if "*" in name or "?" in name:
            continue
        names.append(name)
    return names


def assign(names: list[str], nics: list[Nic]) -> list[Pin]:
    """Which source NIC (by MAC) each configured name belonged to.

    ESXi names a NIC after its PCI slot (ens160, ens192, ens224...), which the
    VMX records; ethN follows the NICs' order; a lone name and a lone NIC match.
    """
    with_mac = [n for n in nics if n.mac]
    pins: list[Pin] = []
    left = list(names)
    free = list(with_mac)
    for name in list(left):
        m = SLOT_NAME.match(name)
        nic = next((n for n in free if m and n.pci_slot == int(m.group(1))), None)
        e = ETH_NAME.match(name)
        if nic is None and e and int(e.group(1)) < len(with_mac):
            nic = with_mac[int(e.group(1))] if with_mac[int(e.group(1))] in free else None
        if nic is not None:
            pins.append(Pin(name, str(nic.mac), "slot" if m else "eth order"))
            left.remove(name)
            free.remove(nic)
    if len(left) == 1 and len(free) == 1:
        return pins + [Pin(left[0], str(free[0].mac), "only NIC")]
    for name, nic in zip(sorted(left, key=_natural), free, strict=False):
        pins.append(Pin(name, str(nic.mac), "order"))
    return pins


def _natural(name: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def link_file(pin: Pin) -> tuple[str, bytes]:
    # Path=pci-*: only the PCI device itself, not a VLAN or bond that shares its MAC.
    text = ("# Written by vmshift: the name this NIC had on VMware, kept on KVM,\n"
            "# so that the guest's network configuration still applies to it.\n"
            f"[Match]\nMACAddress={pin.mac}\nPath=pci-*\n\n[Link]\nName={pin.name}\n")
    return f"{LINK_DIR}/10-vmshift-{pin.name}.link", text.encode()


def udev_rules(pins: list[Pin]) -> bytes:
    lines = ["# Written by vmshift: the names these NICs had on VMware, kept on KVM."]
    lines += [f'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{{address}}=="{p.mac}", '
              f'ATTR{{type}}=="1", NAME="{p.name}"' for p in pins]
    return ("\n".join(lines) + "\n").encode()


def has_link_support(files: GuestFiles) -> bool:
    """systemd-udevd applies .link files (systemd 209 and later); older udev does not."""
    return any(files.is_file(p) for p in ("/lib/systemd/network/99-default.link",
                                          "/usr/lib/systemd/network/99-default.link"))


def _stale_rules(files: GuestFiles, pins: list[Pin], plan: EditPlan) -> None:
    """Drop persistent-net lines naming our interfaces or MACs: they would fight the pin."""
    raw = files.read(PERSISTENT_NET)
    if raw is None:
        return
    names = {p.name for p in pins}
    macs = {p.mac.lower() for p in pins}
    kept, dropped = [], 0
    for line in raw.decode(errors="replace").splitlines():
        m = re.search(r'NAME="([^"]+)"', line)
        mac = re.search(r'ATTR\{address\}=="([^"]+)"', line)
        if m and (m.group(1) in names or (mac and mac.group(1).lower() in macs)):
            dropped += 1
            continue
        kept.append(line)
    if dropped:
        plan.add(Edit("network", "write", PERSISTENT_NET,
                      f"{dropped} stale persistent-net rule(s) would rename the NIC",
                      content=("\n".join(kept) + "\n").encode()))


def plan_network(files: GuestFiles, guest: Guest,
                 nics: list[Nic]) -> tuple[EditPlan, list[Pin]]:
    plan = EditPlan()
    names = configured_names(guest.network or [])
    if not names:
        plan.notes.append("no interface is configured by name: nothing to pin")
        return plan, []
    pins = assign(names, nics)
    for name in names:
        if name not in {p.name for p in pins}:
            plan.notes.append(f"interface {name}: no NIC with a MAC left to pin it to; "
                              "its configuration may not apply on KVM")
    if not pins:
        return plan, []
    if has_link_support(files):
        for pin in pins:
            path, content = link_file(pin)
            plan.add(Edit("network", "write", path, f"keep the name {pin.name} for "
                          f"{pin.mac} (matched by {pin.how})", content=content, backup=False))
    else:
        plan.add(Edit("network", "write", UDEV_RULE, "keep the names " + ", ".join(
            f"{p.name}={p.mac}" for p in pins), content=udev_rules(pins), backup=False))
    _stale_rules(files, pins, plan)
    return plan, pins
