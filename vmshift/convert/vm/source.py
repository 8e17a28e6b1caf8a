"""Stage 1: the source, read into the neutral model, with each disk's local file.

Every disk path was confined by the reader (a VMX names nothing outside its
directory or the storage map's targets); here each one only has to exist and
be a regular file, or a device the user named with --allow-device.

Some sources' disks are not local files yet: an OVA's are tar members, a
vSphere VM's are on a datastore (vmshift/convert/vm/vsphere.py). Such a
source carries a ``fetch`` that the pipeline runs, timed, once the output's
preflight passed, to put them into its work directory (removed with it).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmshift.errors import BadInput, bad_input
from vmshift.model import CpuTopology, Disk, Nic, VirtualMachine

DEFAULT_MEMORY_MIB = 2048
DEFAULT_VCPUS = 2


@dataclass
class Source:
    vm: VirtualMachine
    disk_files: list[Path]  # one per model disk that is converted, in the model's order
    kind: str  # vmx, disk, ova, ovf, vsphere
    ref: str
    # Puts the disks into local files (given the run's work directory) and
    # returns them: the pipeline's stage ``fetch_stage`` (extract, download).
    fetch: Callable[[Path], list[Path]] | None = None
    fetch_stage: str = "fetch"
    kept_dir: Path | None = None  # where fetched disks stay after the run (--disk-dir)


def _disk_file(path: str, where: str, allow_devices: tuple[str, ...]) -> Path:
    """The file a converted disk is read from: confine.check's rule (it exists, and is a
    regular file or a device --allow-device names). Where it may lie was the reader's
    check (a definition's directory or a mapped one); here its own directory."""
    from vmshift import confine

    p = Path(path)
    confine.check(p, [p.parent], confine.Where(where),
                  confine.Policy.of(devices=allow_devices))
    return p


def from_vmx(vmx: Path, storage_map: object | None,
             allow_devices: tuple[str, ...] = ()) -> Source:
    """The VMX's disks must exist, inside its directory or a mapped one (vmshift.confine)."""
    from vmshift.confine import Policy
    from vmshift.convert.vmx import read_vmx

    vm = read_vmx(vmx, Policy.of(storage_map=storage_map,  # type: ignore[arg-type]
                                 devices=allow_devices), must_exist=True)
    files = [_disk_file(_mapped(d.source or "", storage_map, f"{vmx}: {d.label or 'disk'}"),
                        f"{vmx}: {d.label or 'disk'}", allow_devices)
             for d in converted_disks(vm, str(vmx))]
    return Source(vm, files, "vmx", str(vmx))


def converted_disks(vm: VirtualMachine, where: str) -> list[Disk]:
    """The model's disks that get copied, in order (the rules report the others)."""
    disks = [d for d in vm.disks or [] if d.source is not None and not d.rdm
             and not d.passthrough]
    if not disks:
        raise BadInput(f"{where}: the VM has no disk to convert")
    return disks


def local_files(vm: VirtualMachine, where: str,
                allow_devices: tuple[str, ...] = ()) -> list[Path]:
    """Each converted disk's file, which must be here now."""
    return [_disk_file(d.source or "", f"{where}: {d.label or 'disk'}", allow_devices)
            for d in converted_disks(vm, where)]


def _mapped(source: str, storage_map: object | None, where: str) -> str:
    """Where the storage map sends SOURCE (a [datastore] path or a path prefix), as the
    reader resolved it when it confined the disk; unmapped, the path as written."""
    if storage_map is None:
        return source
    target = storage_map.resolve(source)  # type: ignore[attr-defined]
    if target.kind == "volume":
        raise BadInput(f"{where}: {source} maps to volume {target.volume} of pool "
                       f"{target.pool}; convert vm reads disk files: map it to a directory")
    return str(target.path or source)


def from_disks(paths: list[str], *, name: str | None, memory_mib: int | None,
               vcpus: int | None, macs: tuple[str, ...],
               allow_devices: tuple[str, ...] = ()) -> Source:
    """Bare disks: the VM's shape comes from inspection and the options."""
    files = [_disk_file(p, "--disk", allow_devices) for p in paths]
    vm = VirtualMachine(name=name or files[0].name.split(".")[0], source_kind="disk",
                        source_ref=str(files[0]))
    vm.memory_mib = memory_mib or DEFAULT_MEMORY_MIB
    count = vcpus or DEFAULT_VCPUS
    vm.cpu = CpuTopology(vcpus=count, sockets=1, cores_per_socket=count, threads_per_core=1)
    vm.disks = [Disk(source=str(f)) for f in files]
    vm.nics = [Nic(label=f"--mac {m.lower()}", mac=m.lower(), mac_type="static")
               for m in macs] or [Nic(label="nic0")]
    vm.cdroms, vm.floppies, vm.serials, vm.parallels = [], [], [], []
    vm.snapshots, vm.passthrough = [], []
    if not macs:
        vm.notes.append("no --mac: the NIC gets a new MAC, so its name may change in the guest")
    return Source(vm, files, "disk", str(files[0]))


def from_ova(path: Path, storage_map: object | None, allow_devices: tuple[str, ...],
             json_mode: bool) -> Source:
    """An OVA (its manifest checked first) or a bare OVF beside its disk files.

    A disk inside an OVA is a tar member: qemu-img can read it in place (a raw
    ``offset``/``size`` node in a ``json:`` file name), but the disk engine
    confines every backing file to a plain path, so the member is copied out
    (in the kernel, by sendfile) into the work directory instead.
    """
    from vmshift.confine import Policy
    from vmshift.convert.cli import read_ova

    if path.exists() and not path.is_dir() and not path.is_file():
        raise bad_input(path, "--ova: not a regular file")
    package = read_ova(path, Policy.of(storage_map=storage_map,  # type: ignore[arg-type]
                                       devices=allow_devices), json_mode)
    vm = package.vm
    disks = converted_disks(vm, str(path))
    if all(d.source_offset is None for d in disks):  # a bare OVF: files beside it
        return Source(vm, local_files(vm, str(path), allow_devices), "ovf", str(path))

    def extract(work: Path) -> list[Path]:
        return extract_members(path, disks, work, json_mode)
    return Source(vm, [], "ova", str(path), fetch=extract, fetch_stage="extract")


def extract_members(ova: Path, disks: list[Disk], work: Path, json_mode: bool) -> list[Path]:
    """Copy each disk's tar member into WORK; the model's disks then point there."""
    from vmshift.output import Progress

    with tarfile.open(ova, mode="r:") as tar:  # the members' names, for the files' names
        names = {m.offset_data: Path(m.name).name for m in tar.getmembers()}
    files = []
    for index, disk in enumerate(disks, start=1):
        offset, size = disk.source_offset or 0, disk.source_size or 0
        target = work / f"ova{index}-{names.get(offset, 'disk')}"
        with Progress(f"extract {target.name[5:]}", size, json_mode=json_mode) as bar:
            _copy_range(ova, offset, size, target, bar.update_to)
        disk.source, disk.source_offset, disk.source_size = str(target), None, None
        files.append(target)
    return files


def _copy_range(src: Path, offset: int, size: int, target: Path,
                progress: Callable[[float], None]) -> None:
    chunk = 64 * 1024 * 1024
    with src.open("rb") as fin, open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                                             0o600), "wb") as fout:
        done = 0
        while done < size:
            sent = os.sendfile(fout.fileno(), fin.fileno(), offset + done,
                               min(chunk, size - done))
            if sent == 0:
                raise BadInput(f"{src}: the package ends inside a disk member (truncated)")
            done += sent
            progress(done)
