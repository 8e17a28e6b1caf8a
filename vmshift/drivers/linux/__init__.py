"""Linux guest conversion: what must change inside a VMware Linux guest for KVM.

Each concern is its own module and only plans (``Edit`` objects); this module
orders the plans and applies them through the appliance handle, on the
copy-on-write overlay, never on the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vmshift.drivers.edits import Applied, EditPlan, PlannedFiles, change_guest
from vmshift.drivers.linux import blockdev, bootloader, initramfs, network, tools
from vmshift.inspect.files import GuestFiles, GuestfsFiles
from vmshift.inspect.result import Filesystem, Guest
from vmshift.model import Nic


@dataclass
class LinuxOptions:
    keep_vmware_tools: bool = False
    disk_prefix: str = "vd"  # the guest's kernel names for its disks on KVM (virtio-blk)
    install_agent: bool = True


@dataclass
class LinuxResult:
    plan: EditPlan
    pins: list[network.Pin]
    applied: list[Applied] = field(default_factory=list)
    firstboot: list[str] = field(default_factory=list)  # what the first boot will do

    def as_dict(self) -> dict[str, Any]:
        return {
            "changes": [a.as_dict() for a in self.applied] if self.applied else
            [e.as_dict() for e in self.plan.edits],
            "checked": list(self.plan.notes),
            "interface_pins": [{"name": p.name, "mac": p.mac, "matched_by": p.how}
                               for p in self.pins],
            "initramfs_rebuilt": [e.path for e in self.plan.edits
                                  if e.area == "initramfs" and e.action == "run"],
            "firstboot": list(self.firstboot),
        }


def plan_linux(files: GuestFiles, guest: Guest, filesystems: list[Filesystem],
               nics: list[Nic], opts: LinuxOptions) -> LinuxResult:
    plan = EditPlan()
    files = PlannedFiles(files, plan)  # each planner sees the edits planned before it
    tools_plan, steps = tools.plan_vmware_tools(files, guest, opts.keep_vmware_tools)
    plan.extend(tools_plan)
    net_plan, pins = network.plan_network(files, guest, nics)
    plan.extend(net_plan)
    dev_plan, regen = blockdev.plan_blockdev(files, guest, filesystems, opts.disk_prefix)
    plan.extend(dev_plan)
    console_plan, console_changed = bootloader.plan_console(files, guest)
    plan.extend(console_plan)
    plan.extend(bootloader.plan_uefi_fallback(files, guest))
    # After the module list and the .link files are in place, so a rebuilt
    # initramfs carries both.
    plan.extend(initramfs.plan_initramfs(files, guest))
    plan.extend(bootloader.plan_grub(files, regen or console_changed))
    late: list[tools.Step] = []
    if opts.install_agent:
        agent, note = tools.agent_step(files, guest)
        plan.notes.append(note)
        late += [agent] if agent else []
    firstboot_plan, firstboot = tools.plan_firstboot(files, steps, late)
    plan.extend(firstboot_plan)
    plan.extend(tools.plan_caches(files, relabel_needed=bool(plan.edits)))
    return LinuxResult(plan, pins, firstboot=firstboot)


def convert_linux(g: Any, guest: Guest, filesystems: list[Filesystem], nics: list[Nic],
                  opts: LinuxOptions, *, dry_run: bool) -> LinuxResult:
    """Plan, and unless DRY_RUN apply, the Linux changes in the mounted overlay."""
    return change_guest(  # type: ignore[no-any-return]
        g, guest, lambda: plan_linux(GuestfsFiles(g), guest, filesystems, nics, opts),
        dry_run=dry_run)
