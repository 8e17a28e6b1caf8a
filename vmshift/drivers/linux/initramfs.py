"""virtio drivers in the initramfs: rebuilt only for the kernels that lack them.

Inspection has already read every initramfs (on the host, at native speed)
and knows which kernels can boot from a virtio disk. Rebuilding an initramfs
inside the emulated appliance is the slowest step of a conversion (minutes
under TCG), so a kernel that already carries virtio_blk/virtio_scsi and
virtio_pci, in its initramfs or built in, is left alone.
"""

from __future__ import annotations

from vmshift.drivers.edits import Edit, EditPlan
from vmshift.inspect.files import GuestFiles
from vmshift.inspect.result import Guest, Kernel

MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net")
DEBIAN_MODULES_FILE = "/etc/initramfs-tools/modules"
DRACUT_CONF = "/etc/dracut.conf.d/90-vmshift-virtio.conf"


def _tool(files: GuestFiles) -> str | None:
    for name, paths in (("update-initramfs", ("/usr/sbin/update-initramfs",
                                              "/sbin/update-initramfs")),
                        ("dracut", ("/usr/bin/dracut", "/usr/sbin/dracut", "/sbin/dracut")),
                        ("mkinitrd", ("/sbin/mkinitrd", "/usr/sbin/mkinitrd",
                                      "/usr/bin/mkinitrd"))):
        if any(files.is_file(p) for p in paths):
            return name
    return None


def _debian_modules(files: GuestFiles) -> Edit | None:
    """Listed modules go in whatever MODULES= says (most, dep or list)."""
    text = (files.read(DEBIAN_MODULES_FILE) or b"").decode(errors="replace")
    have = {line.split()[0] for line in text.splitlines() if line.strip()
            and not line.lstrip().startswith("#")}
    missing = [m for m in MODULES if m not in have]
    if not missing:
        return None
    new = text + ("" if text.endswith("\n") or not text else "\n") + \
        "# added by vmshift: drivers for KVM's virtio devices\n" + "\n".join(missing) + "\n"
    return Edit("initramfs", "write", DEBIAN_MODULES_FILE, "include the virtio drivers",
                content=new.encode())


def _rebuild(tool: str, kernel: Kernel) -> Edit:
    path = kernel.initramfs.path if kernel.initramfs else f"/boot/initramfs-{kernel.version}.img"
    why = f"kernel {kernel.version} cannot boot from a virtio disk"
    if tool == "update-initramfs":
        argv: tuple[str, ...] = ("update-initramfs", "-u", "-k", kernel.version)
    elif tool == "dracut":
        argv = ("dracut", "-f", "--add-drivers", " ".join(MODULES), path, kernel.version)
    else:  # SUSE's mkinitrd takes the modules with -m
        argv = ("mkinitrd", "-m", " ".join(MODULES), "-k", kernel.vmlinuz or "",
                "-i", path)
    return Edit("initramfs", "run", path, why, argv=argv)


def plan_initramfs(files: GuestFiles, guest: Guest) -> EditPlan:
    plan = EditPlan()
    kernels = guest.kernels or []
    lacking = [k for k in kernels if k.virtio_ready() is False]
    unknown = [k.version for k in kernels if k.virtio_ready() is None]
    for version in unknown:
        plan.notes.append(f"kernel {version}: initramfs unreadable; not rebuilt")
    for k in kernels:
        if k.virtio_ready():
            plan.notes.append(f"kernel {k.version}: virtio already in its initramfs; "
                              "not rebuilt")
    if not lacking:
        return plan
    tool = _tool(files)
    if tool is None:
        plan.notes.append("no initramfs tool (update-initramfs, dracut, mkinitrd) in the "
                          "guest: kernels " + ", ".join(k.version for k in lacking)
                          + " may not boot from virtio")
        return plan
    if tool == "update-initramfs":
        edit = _debian_modules(files)
        if edit:
            plan.add(edit)
    elif tool == "dracut":
        plan.add(Edit("initramfs", "write", DRACUT_CONF, "include the virtio drivers",
                      content=f'add_drivers+=" {" ".join(MODULES)} "\n'.encode(),
                      backup=False))
    for k in lacking:
        plan.add(_rebuild(tool, k))
    return plan
