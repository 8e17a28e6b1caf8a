"""Cold download of a VM's disks: power policy, snapshot handling, file list.

A disk copied while its VM writes to it is torn, so a powered-on VM is
refused (exit 3) unless the user chooses how to get a consistent image:
``--power-off`` (a guest shutdown through VMware Tools, waiting up to a
timeout; a hard power-off only with ``--hard-power-off``) or ``--snapshot`` (the
disks are frozen by a snapshot, copied from it, and the snapshot is removed
afterwards, whatever happened).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vmshift.convert.vsphere import devices as dv
from vmshift.convert.vsphere.connection import Session
from vmshift.convert.vsphere.datastore import DatastoreFile, Fetched, Throttle, fetch
from vmshift.convert.vsphere.reader import datacenter_of, inventory_path, properties
from vmshift.errors import BadInput, OperationFailed, Refused
from vmshift.output import Progress

SNAPSHOT_PREFIX = "vmshift-export"


def decide_action(vm: Any, power_off: bool, snapshot: bool, hard_power_off: bool) -> str:
    """How to get consistent disks from this VM, or Refused."""
    if power_off and snapshot:
        raise BadInput("--power-off and --snapshot exclude each other; pick one")
    if hard_power_off and not power_off:
        raise BadInput("--hard-power-off only applies to --power-off")
    state = str(vm.runtime.powerState)
    if state == "poweredOff":
        return "none"
    if snapshot:
        return "snapshot"
    if power_off:
        return "shutdown"
    why = f"VM {vm.name!r} is {state}: a cold download needs it powered off"
    raise Refused(f"{why}; pass --power-off (guest shutdown) or --snapshot (copy from a "
                  "snapshot)", detail=[{"id": "vsphere.vm_running", "severity": "blocker",
                                        "message": why, "vm": vm.name, "power_state": state}])


def disk_files(session: Session, vm: Any, hardware: Any) -> list[DatastoreFile]:
    """Every file of every disk chain (descriptors and extents), parent first.

    vSphere's file layout lists which files make up each chain link; the
    descriptor alone is not a disk on VMFS (its data is the -flat extent).
    """
    layout = properties(session, vm, ["layoutEx"])["layoutEx"]
    files_by_key = {f.key: f for f in (layout.file if layout else None) or []}
    by_name = {f.name: f for f in files_by_key.values()}
    chains = {d.key: d.chain for d in (layout.disk if layout else None) or []}
    found: list[DatastoreFile] = []
    for dev in hardware.device:
        if dv.kind(dev) != "VirtualDisk":
            continue
        if dv.DISK_BACKINGS.get(dv.kind(dev.backing)) in ("rdm", "rawdisk"):
            why = f"disk {dv.label(dev)!r} of {vm.name!r} is a raw device mapping"
            raise Refused(f"{why}: its data is a LUN, not a datastore file; copy it with the "
                          "array's tools or convert it to a virtual disk first",
                          detail=[{"id": "vsphere.raw_device_mapping", "severity": "blocker",
                                   "message": why}])
        for descriptor in dv.disk_chain(dev.backing):
            found += _link_files(descriptor, by_name, files_by_key, chains.get(dev.key) or [])
    unique: dict[str, DatastoreFile] = {}
    for f in found:
        unique.setdefault(f.ref, f)
    _refuse_name_clashes(list(unique.values()))
    return list(unique.values())


def _link_files(descriptor: str, by_name: dict, files_by_key: dict,
                chain: list[Any]) -> list[DatastoreFile]:
    info = by_name.get(descriptor)
    if info is not None:
        for unit in chain:
            if info.key in unit.fileKey:
                return [DatastoreFile.parse(files_by_key[k].name, files_by_key[k].size)
                        for k in unit.fileKey if k in files_by_key]
    return [DatastoreFile.parse(descriptor)]  # no layout: the descriptor is all we know


def _refuse_name_clashes(files: list[DatastoreFile]) -> None:
    seen: dict[str, str] = {}
    for f in files:
        if f.basename in seen:
            raise OperationFailed(f"two disk files share the name {f.basename!r} "
                                  f"({seen[f.basename]} and {f.ref}); they cannot land in "
                                  "one --dest directory")
        seen[f.basename] = f.ref


def wait_task(session: Session, task: Any, what: str, timeout: float = 3600) -> Any:
    """Wait for a vSphere task; return its result, or OperationFailed with its error.

    Reads only info.state/error/result: some servers (the govmomi simulator
    among them) put a non-entity in info.entity, which pyVmomi refuses.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = properties(session, task, ["info.state", "info.error", "info.result"])
        state = str(info["info.state"])
        if state == "success":
            return info["info.result"]
        if state == "error":
            error = info["info.error"]
            reason = getattr(error, "localizedMessage", None) or getattr(error, "msg", None)
            raise OperationFailed(f"{what} failed: {reason or type(error).__name__}")
        time.sleep(0.2)
    raise OperationFailed(f"{what} did not finish within {timeout:g} s")


def shut_down(session: Session, vm: Any, timeout: float, hard_power_off: bool) -> str:
    """Guest shutdown through VMware Tools; a hard power-off only if the user allows it."""
    tools = str(getattr(vm.guest, "toolsRunningStatus", "") or "")
    if tools == "guestToolsRunning":
        vm.ShutdownGuest()
        if _wait_powered_off(vm, timeout):
            return "shutdown"
        if not hard_power_off:
            raise OperationFailed(f"{vm.name!r} did not shut down within {timeout:g} s; "
                                  "pass --hard-power-off to power it off hard, or a longer "
                                  "--shutdown-timeout")
    elif not hard_power_off:
        raise OperationFailed(f"VMware Tools are not running in {vm.name!r}, so the guest "
                              "cannot be shut down cleanly; --hard-power-off powers it off "
                              "hard")
    wait_task(session, vm.PowerOffVM_Task(), f"powering off {vm.name!r}")
    return "power-off"


def _wait_powered_off(vm: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if str(vm.runtime.powerState) == "poweredOff":
            return True
        time.sleep(1.0)
    return str(vm.runtime.powerState) == "poweredOff"


@contextmanager
def export_snapshot(session: Session, vm: Any) -> Iterator[Any]:
    """A snapshot to copy from, removed afterwards even when the copy fails.

    After the snapshot the VM writes into new delta files; the snapshot's own
    configuration names the frozen chain, which is what gets copied.
    """
    tools = str(getattr(vm.guest, "toolsRunningStatus", "") or "") == "guestToolsRunning"
    name = f"{SNAPSHOT_PREFIX}-{int(time.time())}"
    task = vm.CreateSnapshot_Task(name=name, description="vmshift download; removed after",
                                  memory=False, quiesce=tools)
    snapshot = wait_task(session, task, f"snapshot of {vm.name!r}")
    try:
        yield snapshot
    finally:
        wait_task(session, snapshot.RemoveSnapshot_Task(removeChildren=False, consolidate=True),
                  f"removing snapshot {name!r} of {vm.name!r}")


def datacenter_path(session: Session, vm: Any) -> str:
    return inventory_path(session, datacenter_of(vm))


def copy_files(session: Session, files: list[DatastoreFile], dc_path: str, dest: Path,
               json_mode: bool, bandwidth: int | None) -> list[Fetched]:
    dest.mkdir(parents=True, exist_ok=True)
    total = sum(f.size or 0 for f in files) or None
    throttle = Throttle(bandwidth)
    done: list[Fetched] = []
    with Progress("download", total, json_mode=json_mode) as progress:
        count = [0.0]

        def on_bytes(n: int) -> None:
            count[0] += n
            progress.update_to(count[0])

        for f in files:
            done.append(fetch(session, f, dc_path, dest, on_bytes, throttle))
    return done
