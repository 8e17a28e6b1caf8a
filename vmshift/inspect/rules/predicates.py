"""One predicate per rule id in rules.json.

Each returns None (facts unknown: not_evaluable), [] (passes) or the reasons
it fires. A predicate never guesses: a None field in the model or a missing
inspection is "unknown", not "fine".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from vmshift.inspect.result import Guest, Inspection
from vmshift.model import DiskMode, DiskSharing, VirtualMachine

Reasons = list[str] | None
Predicate = Callable[[VirtualMachine, Inspection | None, dict[str, Any], Any], Reasons]
PREDICATES: dict[str, Predicate] = {}
TWO_TIB = 2 * 1024**4
RFC1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def rule(rule_id: str) -> Callable[[Predicate], Predicate]:
    def register(fn: Predicate) -> Predicate:
        PREDICATES[rule_id] = fn
        return fn
    return register


def _disk_name(i: int, disk: Any) -> str:
    return disk.label or disk.source or f"disk {i}"


def _per_disk(vm: VirtualMachine, bad: Callable[[Any], bool | None]) -> Reasons:
    """Fire for each disk where ``bad`` is True; unknown if any is None and none fired."""
    if vm.disks is None:
        return None
    verdicts = [(i, d, bad(d)) for i, d in enumerate(vm.disks)]
    fired = [_disk_name(i, d) for i, d, v in verdicts if v]
    if fired:
        return fired
    return None if any(v is None for _, _, v in verdicts) else []


def _guests(insp: Inspection | None, ostype: str) -> list[Guest] | None:
    return None if insp is None else [g for g in insp.guests if g.type == ostype]


# --- The vSphere rule set, on the model's fields ---

@rule("vsphere.cbt_disabled")
def cbt_disabled(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    reasons = ["VM-level ctkEnabled is off"] if vm.cbt_enabled is False else []
    disks = vm.disks or []
    reasons += [f"{_disk_name(i, d)}: CBT off" for i, d in enumerate(disks)
                if d.cbt_enabled is False]
    if reasons:
        return reasons
    known = vm.cbt_enabled is not None or any(d.cbt_enabled is not None for d in disks)
    return [] if known else None


@rule("vsphere.snapshots_present")
def snapshots_present(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    return None if vm.snapshots is None else [s.name for s in vm.snapshots]


@rule("vsphere.consolidation_needed")
def consolidation_needed(vm: VirtualMachine, insp: Inspection | None, p: dict,
                         o: Any) -> Reasons:
    if vm.consolidation_needed is None:
        return None
    return ["consolidationNeeded is set"] if vm.consolidation_needed else []


@rule("vsphere.shared_disk")
def shared_disk(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    return _per_disk(vm, lambda d: None if d.sharing is None
                     else d.sharing == DiskSharing.MULTI_WRITER)


@rule("vsphere.rdm_disk")
def rdm_disk(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    # The model: rdm None with passthrough False is a normal disk; both None is unknown.
    return _per_disk(vm, lambda d: True if d.rdm is not None or d.passthrough
                     else None if d.passthrough is None else False)


@rule("vsphere.independent_disk")
def independent_disk(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    independent = {DiskMode.INDEPENDENT_PERSISTENT, DiskMode.INDEPENDENT_NONPERSISTENT}
    return _per_disk(vm, lambda d: None if d.mode is None else d.mode in independent)


@rule("vsphere.invalid_disk_capacity")
def invalid_disk_capacity(vm: VirtualMachine, insp: Inspection | None, p: dict,
                          o: Any) -> Reasons:
    return _per_disk(vm, lambda d: None if d.capacity_bytes is None
                     else d.capacity_bytes <= 0 or d.capacity_bytes % 512 != 0)


@rule("vsphere.disk_not_on_datastore")
def disk_not_on_datastore(vm: VirtualMachine, insp: Inspection | None, p: dict,
                          o: Any) -> Reasons:
    if vm.source_kind is None or vm.disks is None:
        return None
    if vm.source_kind != "vsphere":
        return []  # files given directly: there is no datastore to be on
    return _per_disk(vm, lambda d: not d.datastore)


def _passthrough(vm: VirtualMachine, kinds: set[str]) -> Reasons:
    if vm.passthrough is None:
        return None
    return [f"{d.kind} {d.label or d.address or ''}".strip()
            for d in vm.passthrough if d.kind in kinds]


@rule("vsphere.passthrough_device")
def passthrough_device(vm: VirtualMachine, insp: Inspection | None, p: dict,
                       o: Any) -> Reasons:
    return _passthrough(vm, {"pci", "vgpu", "mdev"})


@rule("vsphere.sriov_device")
def sriov_device(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    found = _passthrough(vm, {"sriov"})
    nics = [f"NIC {n.label or n.mac}" for n in vm.nics or []
            if n.model and "sriov" in n.model.lower()]
    if found is None and not nics:
        return None
    return (found or []) + nics


@rule("vsphere.usb_device")
def usb_device(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    return _passthrough(vm, {"usb"})


@rule("vsphere.tpm_present")
def tpm_present(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    tpm = vm.firmware.tpm_present
    return None if tpm is None else (["vTPM present"] if tpm else [])


@rule("vsphere.cpu_hotplug")
def cpu_hotplug(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    return None if vm.cpu_hotadd is None else (["cpuHotAddEnabled"] if vm.cpu_hotadd else [])


@rule("vsphere.memory_hotplug")
def memory_hotplug(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    if vm.memory_hotadd is None:
        return None
    return ["memoryHotAddEnabled"] if vm.memory_hotadd else []


@rule("vsphere.affinity")
def affinity(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    if vm.cpu_affinity is None and vm.affinity_rules is None:
        return None
    reasons = [f"pinned to host CPUs {vm.cpu_affinity}"] if vm.cpu_affinity else []
    return reasons + [f"DRS rule {r}" for r in vm.affinity_rules or []]


@rule("vsphere.hostname_default")
def hostname_default(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    names = [vm.guest.hostname] if vm.guest.hostname is not None else \
        [g.hostname for g in (insp.guests if insp else []) if g.hostname is not None]
    if not names:
        return None
    defaults = set(p["defaults"])
    return [f"hostname {n!r}" for n in names if n.strip().lower() in defaults]


@rule("vsphere.name_not_rfc1123")
def name_not_rfc1123(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    if vm.name is None:
        return None
    return [] if RFC1123_LABEL.match(vm.name) else [f"name {vm.name!r}"]


@rule("vsphere.unsupported_os")
def unsupported_os(vm: VirtualMachine, insp: Inspection | None, p: dict, o: Any) -> Reasons:
    if insp is not None and insp.guests:
        # What is really on the disk beats what the hypervisor was told.
        out = []
        for g in insp.guests:
            if g.type not in p["supported_types"]:
                out.append(f"{g.type} on {g.root}")
            elif g.type == "windows" and g.major is not None and \
                    (g.major, g.minor or 0) < tuple(p["min_windows_version"]):
                out.append(f"{g.product_name or 'Windows'} {g.major}.{g.minor}")
        return out
    gid = vm.guest.vmware_guest_id
    if gid is None:
        return None
    lowered = gid.lower()
    return [f"guest id {gid}"] if any(lowered.startswith(x)
                                       for x in p["unsupported_guest_id_prefixes"]) else []
