"""NICs (``ethernetN.*``) from a VMX.

The MAC depends on ``addressType``: ``static`` keeps ``address``;
``generated`` (Workstation/ESXi) and ``vpx`` (assigned by vCenter) keep
``generatedAddress``. Both must survive the move, or the guest's DHCP
reservations and licences tied to the MAC break. A NIC on a distributed
switch names no network in the VMX, only ``dvs.*`` ids; the portgroup key is
what a network map can match.
"""

from __future__ import annotations

import re

from vmshift.convert.vmx.lexer import VmxFile
from vmshift.errors import bad_input
from vmshift.model import ConnectionType, Nic

_NIC_KEY = re.compile(r"^ethernet(\d+)\.present$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

# ethernetN.virtualDev values; an absent one is the historic default, vlance.
NIC_MODELS = {"vlance", "vmxnet", "vmxnet2", "vmxnet3", "e1000", "e1000e", "vmxnet3vrdma",
              "vrdma", "sriov"}
_CONNECTIONS = {
    "bridged": ConnectionType.BRIDGE,
    "nat": ConnectionType.NAT,
    "hostonly": ConnectionType.HOSTONLY,
    "custom": ConnectionType.CUSTOM,
}
MAX_NICS = 10  # ESXi: ethernet0..ethernet9


def read_nics(vmx: VmxFile, notes: list[str]) -> list[Nic]:
    nics: list[Nic] = []
    for index in sorted(int(m.group(1)) for m in vmx.keys_matching(_NIC_KEY)):
        prefix = f"ethernet{index}"
        if index >= MAX_NICS:
            raise bad_input(vmx.path, f"{prefix}: at most {MAX_NICS} NICs (ethernet0..9)",
                            vmx.line(f"{prefix}.present"))
        if vmx.get_bool(f"{prefix}.present", False):
            nics.append(_nic(vmx, prefix, notes))
    return nics


def _nic(vmx: VmxFile, prefix: str, notes: list[str]) -> Nic:
    model = (vmx.get(f"{prefix}.virtualDev") or "vlance").strip().lower()
    if model not in NIC_MODELS:
        raise bad_input(vmx.path, f"{prefix}.virtualDev = {model!r}: unknown NIC model",
                        vmx.line(f"{prefix}.virtualDev"))
    nic = Nic(model=model, label=prefix)
    nic.mac, nic.mac_type = _mac(vmx, prefix, notes)
    slot = (vmx.get(f"{prefix}.pciSlotNumber") or "").strip()
    nic.pci_slot = int(slot) if slot.isdigit() else None
    switch = vmx.get(f"{prefix}.dvs.switchId")
    if switch is not None:
        nic.connection = ConnectionType.DISTRIBUTED
        nic.distributed_switch = _switch_uuid(switch)
        nic.portgroup_key = (vmx.get(f"{prefix}.dvs.portgroupId") or "").strip() or None
        if nic.portgroup_key is None:
            notes.append(f"{prefix}: on distributed switch {nic.distributed_switch} but the "
                         "VMX names no portgroup; map the switch id or it gets the default "
                         "network")
        nic.network = (vmx.get(f"{prefix}.networkName") or "").strip() or None
        return nic
    kind = (vmx.get(f"{prefix}.connectionType") or "bridged").strip().lower()
    nic.connection = _CONNECTIONS.get(kind, ConnectionType.CUSTOM)
    if kind not in _CONNECTIONS:
        notes.append(f"{prefix}.connectionType = {kind!r} is not a kind vmshift knows; "
                     "treated as custom")
    nic.network = (vmx.get(f"{prefix}.networkName") or "").strip() or None
    if nic.connection == ConnectionType.CUSTOM and nic.network is None:
        nic.network = (vmx.get(f"{prefix}.vnet") or "").strip() or None
    return nic


def _mac(vmx: VmxFile, prefix: str, notes: list[str]) -> tuple[str | None, str | None]:
    address_type = (vmx.get(f"{prefix}.addressType") or "generated").strip().lower()
    if address_type not in ("static", "generated", "vpx"):
        raise bad_input(vmx.path, f"{prefix}.addressType = {address_type!r}: expected "
                                  "static, generated or vpx",
                        vmx.line(f"{prefix}.addressType"))
    key = f"{prefix}.address" if address_type == "static" else f"{prefix}.generatedAddress"
    value = vmx.get(key)
    if value is None or not value.strip():
        notes.append(f"{prefix}: addressType {address_type} but no {key.split('.', 1)[1]}; "
                     "the MAC is unknown and KVM will generate one")
        return None, address_type
    mac = value.strip().lower().replace("-", ":")
    if not _MAC.match(mac):
        raise bad_input(vmx.path, f"{vmx.spelled(key)} = {value!r}: not a MAC address",
                        vmx.line(key))
    if int(mac[:2], 16) & 1:
        raise bad_input(vmx.path, f"{vmx.spelled(key)} = {value!r}: a multicast MAC cannot "
                                  "belong to a NIC", vmx.line(key))
    return mac, address_type


def _switch_uuid(value: str) -> str:
    """'50 34 26 b2 ...-1d 68 ...' -> '503426b2-94e9-...' (the form vCenter shows)."""
    digits = re.sub(r"[\s-]", "", value).lower()
    if re.fullmatch(r"[0-9a-f]{32}", digits):
        return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
    return value.strip()
