"""The VMX reader with its disks: the model plus the disks' own checks.

``vmx2xml`` translates and never needs the disks; but a disk that is here is a
VMDK descriptor whose extents and parent could name any file of the host, so
its descriptor is read (and confined) too. ``inspect`` looks inside the disks,
so there a disk that is missing, remote or broken is bad input (exit 2). Each
descriptor is read with the VMDK parser (``vmshift.convert.vmdk``): the
snapshot chain, the capacity and raw-device mappings come from there.
"""

from __future__ import annotations

import os
from pathlib import Path

from vmshift.confine import Policy
from vmshift.convert.vmdk import missing_extents, parse_descriptor, resolve_chain
from vmshift.convert.vmx import read_vmx
from vmshift.errors import BadInput
from vmshift.model import Disk, RdmMode, VirtualMachine

_RDM = {"vmfsrawdevicemap": RdmMode.VIRTUAL, "vmfspassthroughrawdevicemap": RdmMode.PHYSICAL}


def read_vmx_checked(path: str | Path, policy: Policy | None = None) -> VirtualMachine:
    """For vmx2xml: the model, with the descriptor of every VMDK that is here confined."""
    vm = read_vmx(path, policy)
    for disk in vm.disks or []:
        source = disk.source or ""
        if disk.format == "vmdk" and os.path.isfile(source):
            parse_descriptor(source, policy)  # refuses extents and parents outside
    return vm


def read_vmx_with_disks(path: str | Path, policy: Policy | None = None) -> VirtualMachine:
    """For inspect: every disk must be here, confined, with a sound VMDK chain."""
    vm = read_vmx(path, policy, must_exist=True)
    for disk in vm.disks or []:
        _check_disk(vm, disk, policy)
    return vm


def _check_disk(vm: VirtualMachine, disk: Disk, policy: Policy | None) -> None:
    source = disk.source or ""
    if disk.format != "vmdk":
        return
    chain = resolve_chain(Path(source), policy=policy)  # names the descriptor line on faults
    missing = missing_extents(chain)
    if missing:
        raise BadInput(f"{vm.source_ref}: {disk.label}: extent {missing[0].path} of {source} "
                       "does not exist")
    top = chain[0]
    disk.capacity_bytes = top.capacity_bytes
    disk.snapshot_chain = [str(d.path) for d in reversed(chain)]
    kind = (top.create_type or "").lower()
    if kind in _RDM:
        disk.rdm = _RDM[kind]


def reader(arg: str, policy: Policy | None = None) -> VirtualMachine | None:
    """The `vmshift inspect` hook: a .vmx argument is ours, anything else is not."""
    if not arg.lower().endswith(".vmx"):
        return None
    return read_vmx_with_disks(arg, policy)
