"""Where `vmshift inspect` gets its VM model: a reader, or bare disks.

Readers that turn an argument into a ``VirtualMachine`` (a .vmx file, a
vSphere VM, an OVF) plug in here, so `inspect` runs the same pipeline for
all of them: model -> local disks -> one inspection -> rules on both.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass

from vmshift.confine import Policy, is_remote
from vmshift.inspect.probe import ImageProbe, probe_image
from vmshift.model import Disk, VirtualMachine

Reader = Callable[[str, Policy | None], VirtualMachine | None]

# "module:function" readers tried in order; a reader returns None for an
# argument that is not its kind, and confines the disks it names by the policy
# (``vmshift.confine``): every one must be here, inside its definition's
# directory or one the user named. Modules that do not exist yet are skipped
# (found with find_spec, so an import error inside a real reader still shows).
READERS: list[str] = ["vmshift.convert.vmx.disks:reader"]  # defs: .vmx files
_REGISTERED: list[Reader] = []


def register_source(reader: Reader) -> Reader:
    """Add a reader at run time (usable as a decorator)."""
    _REGISTERED.append(reader)
    return reader


def _readers() -> list[Reader]:
    out = list(_REGISTERED)
    for spec in READERS:
        module, _, func = spec.partition(":")
        if importlib.util.find_spec(module) is None:
            continue
        out.append(getattr(importlib.import_module(module), func))
    return out


@dataclass
class Source:
    vm: VirtualMachine
    disks: list[str]  # local files to inspect, in the VM's disk order


def from_model(vm: VirtualMachine) -> Source:
    """Inspect the model's disks that are here (the reader confined them); remote
    ones cannot be opened here."""
    local = [p for p in vm.disk_paths() if not is_remote(p) and os.path.exists(p)]
    return Source(vm, local)


def from_disks(paths: list[str], probes: list[ImageProbe]) -> Source:
    """A VM known only by its disks: every other fact is unknown (None)."""
    disks = [Disk(source=p.path, format=p.format, capacity_bytes=p.virtual_size)
             for p in probes]
    vm = VirtualMachine(source_kind="disk", source_ref=paths[0] if paths else None, disks=disks)
    return Source(vm, list(paths))


def resolve(args: list[str], policy: Policy | None = None) -> Source:
    """Turn the command line's arguments into a model plus the disks to inspect."""
    if len(args) == 1:
        for reader in _readers():
            vm = reader(args[0], policy)
            if vm is not None:
                source = from_model(vm)
                for disk in source.disks:  # probed (and cached) before any appliance
                    probe_image(disk, policy)
                return source
    # Bare disks: validated now, so a bad one stops before the appliance starts.
    probes = [probe_image(a, policy) for a in args]
    return from_disks(args, probes)
