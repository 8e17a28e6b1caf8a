"""Block device names: what the guest calls its disks on VMware stops existing on KVM.

A guest that mounts ``/dev/sda1`` finds ``/dev/vda1`` under virtio-blk; one
that names ``/dev/disk/by-id/scsi-36000c29...`` finds nothing, because that
name embeds VMware's bus and serial. Both are rewritten to ``UUID=``, which
survives any bus; a filesystem without a UUID gets its new kernel name.

The guest's own name is resolved to the appliance's device the way
libguestfs' inspection already did for mounted filesystems (the mountpoint
map), and otherwise by disk order: the guest's Nth disk of a bus is the
appliance's Nth drive, because the drives are added in the source's order.
"""

from __future__ import annotations

import re

from vmshift.drivers.edits import Edit, EditPlan
from vmshift.inspect.files import GuestFiles
from vmshift.inspect.result import DeviceRef, Filesystem, Guest

KERNEL_NAME = re.compile(r"^/dev/(?:sd|hd|xvd|vd)([a-z]+)(\d*)$")
# root=/dev/sda1 or resume=/dev/sdb2 on a kernel command line or in a config, and
# initramfs-tools' RESUME=/dev/sdb2.
CMDLINE_DEVICE = re.compile(r"\b(root|resume|RESUME)=(/dev/(?:sd|hd|xvd)[a-z]+\d*)")


class DeviceResolver:
    """Map a name the guest used on VMware to a filesystem the appliance sees."""

    def __init__(self, guest: Guest, filesystems: list[Filesystem], new_prefix: str) -> None:
        self.mountpoints = guest.mountpoints
        self.by_device = {fs.device: fs for fs in filesystems}
        self.new_prefix = new_prefix  # vd (virtio-blk) or sd (virtio-scsi, SATA)

    def appliance_device(self, spec: str, mountpoint: str | None) -> str | None:
        if mountpoint and mountpoint in self.mountpoints:
            return self.mountpoints[mountpoint]
        m = KERNEL_NAME.match(spec)
        if m:
            return f"/dev/sd{m.group(1)}{m.group(2)}"
        return None

    def stable_name(self, spec: str, mountpoint: str | None = None) -> str | None:
        """UUID=... for the filesystem, else its name on KVM; None when unresolvable."""
        device = self.appliance_device(spec, mountpoint)
        fs = self.by_device.get(device) if device else None
        if fs is not None and fs.uuid:
            return f"UUID={fs.uuid}"
        m = KERNEL_NAME.match(spec)
        if m and not spec.startswith("/dev/disk/"):
            return f"/dev/{self.new_prefix}{m.group(1)}{m.group(2)}"
        return None


def _replace_field(line: str, index: int, value: str) -> str:
    """Replace the INDEXth whitespace-separated field, keeping the line's spacing."""
    parts = re.split(r"(\s+)", line)
    offset = 1 if parts and parts[0] == "" else 0
    parts[offset + 2 * index] = value
    return "".join(parts)


def _rewrite_table(files: GuestFiles, path: str, entries: list[tuple[int, DeviceRef, int,
                   str | None]], resolver: DeviceResolver, plan: EditPlan) -> None:
    raw = files.read(path)
    if raw is None:
        return
    lines = raw.decode(errors="surrogateescape").split("\n")
    changed = []
    for lineno, ref, field_index, mountpoint in entries:
        if not ref.needs_rewrite:
            continue
        new = resolver.stable_name(ref.spec, mountpoint)
        if new is None:
            plan.notes.append(f"{path}:{lineno}: cannot tell which disk {ref.spec} is; "
                              "left as it is")
            continue
        lines[lineno - 1] = _replace_field(lines[lineno - 1], field_index, new)
        changed.append(f"{ref.spec} -> {new}")
    if changed:
        plan.add(Edit("blockdev", "write", path, "; ".join(changed),
                      content="\n".join(lines).encode(errors="surrogateescape")))


def _rewrite_cmdline_file(files: GuestFiles, path: str, resolver: DeviceResolver,
                          plan: EditPlan) -> bool:
    raw = files.read(path)
    if raw is None:
        return False
    text = raw.decode(errors="surrogateescape")
    changed: list[str] = []

    def swap(m: re.Match[str]) -> str:
        new = resolver.stable_name(m.group(2), "/" if m.group(1) == "root" else None)
        if new is None:
            return m.group(0)
        changed.append(f"{m.group(1)}={m.group(2)} -> {new}")
        return f"{m.group(1)}={new}"

    new_text = CMDLINE_DEVICE.sub(swap, text)
    if new_text == text:
        return False
    plan.add(Edit("blockdev", "write", path, "; ".join(changed),
                  content=new_text.encode(errors="surrogateescape")))
    return True


BOOT_CONFIG_DIRS = ("/etc/default/grub.d", "/boot/loader/entries")
BOOT_CONFIG_FILES = ("/etc/default/grub", "/etc/initramfs-tools/conf.d/resume",
                     "/boot/grub2/grubenv")
GRUB_CFGS = ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg")


def plan_blockdev(files: GuestFiles, guest: Guest, filesystems: list[Filesystem],
                  new_prefix: str = "vd") -> tuple[EditPlan, bool]:
    """The rewrites, and whether the GRUB configuration must be regenerated."""
    resolver = DeviceResolver(guest, filesystems, new_prefix)
    plan = EditPlan()
    _rewrite_table(files, "/etc/fstab", [(e.line, e.device, 0, e.mountpoint)
                                         for e in guest.fstab or []], resolver, plan)
    _rewrite_table(files, "/etc/crypttab", [(e.line, e.device, 1, None)
                                            for e in guest.crypttab or []], resolver, plan)
    paths = list(BOOT_CONFIG_FILES) + [f"{d}/{n}" for d in BOOT_CONFIG_DIRS
                                       for n in files.listdir(d)]
    defaults_changed = False
    for path in paths:
        if _rewrite_cmdline_file(files, path, resolver, plan) and path.startswith("/etc/default"):
            defaults_changed = True
    stale_cfg = any(CMDLINE_DEVICE.search((files.read(p) or b"").decode(errors="replace"))
                    for p in GRUB_CFGS)
    if stale_cfg:
        plan.notes.append("grub.cfg names a disk by its VMware kernel name: regenerated")
    if not plan.edits:
        plan.notes.append("no configuration names a disk by a VMware-only name")
    return plan, defaults_changed or stale_cfg
