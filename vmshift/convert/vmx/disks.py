"""The VMX reader for ``vmshift inspect``: the model plus disks that must exist.

``vmx2xml`` translates and never opens disks; ``inspect`` looks inside them,
so here a disk that is missing, remote or broken is bad input (exit 2). Each
descriptor is read with the VMDK parser (``vmshift.convert.vmdk``): the
snapshot chain, the capacity and raw-device mappings come from there.
"""

from __future__ import annotations

import os
from pathlib import Path

from vmshift.convert.vmdk import missing_extents, resolve_chain
from vmshift.convert.vmx import read_vmx
from vmshift.errors import BadInput
from vmshift.model import Disk, RdmMode, VirtualMachine

_RDM = {"vmfsrawdevicemap": RdmMode.VIRTUAL, "vmfspassthroughrawdevicemap": RdmMode.PHYSICAL}


def read_vmx_with_disks(path: str | Path) -> VirtualMachine:
    vm = read_vmx(path)
    for disk in vm.disks or []:
        _check_disk(vm, disk)
    return vm


def _check_disk(vm: VirtualMachine, disk: Disk) -> None:
    where = f"{vm.source_ref}: {disk.label}"
    source = disk.source or ""
    if not source.startswith("/") or source.startswith("/vmfs/"):
        raise BadInput(f"{where}: {source} is on an ESXi datastore, not a local file; "
                       "copy the VM's folder here (or use `vmshift vsphere download`) to "
                       "inspect it")
    if not os.path.isfile(source):
        raise BadInput(f"{where}: disk file {source} does not exist")
    if disk.format != "vmdk":
        return
    chain = resolve_chain(Path(source))  # BadInput naming the descriptor line on faults
    missing = missing_extents(chain)
    if missing:
        raise BadInput(f"{where}: extent {missing[0].path} of {source} does not exist")
    top = chain[0]
    disk.capacity_bytes = top.capacity_bytes
    disk.snapshot_chain = [str(d.path) for d in reversed(chain)]
    kind = (top.create_type or "").lower()
    if kind in _RDM:
        disk.rdm = _RDM[kind]


def reader(arg: str) -> VirtualMachine | None:
    """The `vmshift inspect` hook: a .vmx argument is ours, anything else is not."""
    if not arg.lower().endswith(".vmx"):
        return None
    return read_vmx_with_disks(arg)
