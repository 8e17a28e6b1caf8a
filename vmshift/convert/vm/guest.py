"""Stage 3: one appliance launch inspects the guest, runs the rules and changes it.

Inspection and conversion share the launch (about 15 s under TCG each time):
the overlays are attached writable, inspection mounts read-only as always,
and the Linux or Windows driver then mounts the same filesystems read-write.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

from vmshift.drivers.linux import LinuxOptions, LinuxResult, convert_linux
from vmshift.drivers.windows import WindowsOptions, WindowsResult, convert_windows
from vmshift.errors import BadInput, OperationFailed, Refused
from vmshift.inspect.api import inspect_session
from vmshift.inspect.probe import ImageProbe
from vmshift.inspect.result import Guest, Inspection, WindowsService
from vmshift.inspect.rules import Finding, RuleOptions, blockers, evaluate
from vmshift.inspect.session import ApplianceSession
from vmshift.model import VirtualMachine

DISK_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}


@dataclass
class GuestStage:
    inspection: Inspection
    findings: list[Finding]
    linux: LinuxResult | None
    appliance_launches: int
    windows: WindowsResult | None = None

    def converted(self) -> Inspection:
        """The inspection as the converted guest will be: what the domain XML
        is chosen from (the virtio drivers just installed decide the buses)."""
        if self.windows is None:
            return self.inspection
        view = copy.deepcopy(self.inspection)
        services = view.guests[0].windows.services  # type: ignore[union-attr]
        live = {"virtio": "viostor", "scsi": "vioscsi"}.get(self.windows.disk_bus)
        for name in (live, "netkvm" if self.windows.nic_model == "virtio" else None):
            if name in self.windows.installed:
                services[name] = WindowsService(name, True, 0 if name == live else 3,
                                                f"system32\\drivers\\{name}.sys")
        return view


def _the_guest(inspection: Inspection, where: str) -> Guest:
    if not inspection.guests:
        raise BadInput(f"{where}: no operating system found on the VM's disks")
    if len(inspection.guests) > 1:
        roots = ", ".join(g.root for g in inspection.guests)
        raise BadInput(f"{where}: several operating systems ({roots}); vmshift converts one")
    return inspection.guests[0]


def inspect_and_convert(overlays: list[ImageProbe], vm: VirtualMachine, disk_bus: Callable[
        [Inspection], str], opts: LinuxOptions, wopts: WindowsOptions, *, dry_run: bool,
        where: str, step: Callable[[str], None]) -> GuestStage:
    rule_opts = RuleOptions(driver_source=str(wopts.virtio_win) if wopts.virtio_win else None,
                            allow_emulated=wopts.allow_emulated)
    with ApplianceSession(overlays, writable=True) as session:
        inspection = inspect_session(session, step)
        findings = evaluate(vm, inspection, options=rule_opts)
        stop = blockers(findings)
        if stop:
            # exit 3 with the command's own document: the findings, nothing created
            raise Refused(f"{len(stop)} blocker(s): {', '.join(f.rule_id for f in stop)}",
                          document=("convert_vm", {"source": where, "findings": findings,
                                                   "blockers": [f.rule_id for f in stop],
                                                   "inspection": inspection}))
        guest = _the_guest(inspection, where)
        linux = windows = None
        if guest.type == "linux":
            opts.disk_prefix = DISK_PREFIX.get(disk_bus(inspection), "vd")
            step("changing the guest for KVM")
            linux = convert_linux(session.g, guest, inspection.filesystems, vm.nics or [],
                                  opts, dry_run=dry_run)
        elif guest.type == "windows":
            step("changing the guest for KVM")
            windows = convert_windows(session.g, guest, vm.nics or [], wopts, dry_run=dry_run)
        else:
            raise OperationFailed(f"{where}: {guest.type} guests cannot be converted; "
                                  "only Linux and Windows guests are")
        launches = session.launch_events
    return GuestStage(inspection, findings, linux, launches, windows)
