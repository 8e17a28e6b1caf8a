"""``inspect_disks``: look inside the disks of one VM without changing them.

Pipeline: qemu-img probes every file (bad input stops here, before any
appliance), one read-only appliance launch, then block-level facts (partition
tables, filesystems, encryption), then per operating system the Linux or
Windows reader over the guest's own mounts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vmshift.confine import Policy
from vmshift.errors import BadInput
from vmshift.inspect import linux, network, storage
from vmshift.inspect.files import GuestfsFiles
from vmshift.inspect.probe import probe_image
from vmshift.inspect.result import Application, DiskInfo, Filesystem, Guest, Inspection
from vmshift.inspect.session import ApplianceSession
from vmshift.inspect.windows import windows_facts
from vmshift.model import VirtualMachine

VMWARE_TOOLS_APPS = ("open-vm-tools", "open-vm-tools-desktop", "vmware-tools", "vmware tools",
                     "vmwaretools", "vmware-tools-core")
Step = Callable[[str], None]


def inspect_disks(paths: list[str], *, vm: VirtualMachine | None = None,
                  progress: Step | None = None, policy: Policy | None = None) -> Inspection:
    """Inspect the disks of one VM in one appliance launch (read-only).

    Raises BadInput (exit 2) naming the file when one is not a usable image.
    ``vm`` is accepted for callers that have a model; the facts returned come
    only from the disks.
    """
    if not paths:
        raise BadInput("inspect: no disk image given")
    probes = [probe_image(p, policy) for p in paths]  # policy: devices --allow-device lets in
    with ApplianceSession(probes) as session:
        return inspect_session(session, progress)


def inspect_session(session: ApplianceSession, progress: Step | None = None) -> Inspection:
    """Launch SESSION's appliance and inspect its drives; the handle stays usable
    (the conversion reuses the same launch)."""
    step = progress or (lambda _msg: None)
    step("launching the appliance")
    session.launch()
    g = session.g
    step("reading partitions and filesystems")
    devices = session.devices()
    blk = storage.probe_devices(g, devices)
    disks = storage.disk_layout(session.images, devices, blk)
    filesystems, encrypted = storage.filesystems(g, disks, blk)
    step("looking for operating systems")
    guests = [_guest(g, root, disks, filesystems, step) for root in g.inspect_os()]
    storage.attach_mountpoints(filesystems, guests)
    storage.fill_free_space(g, filesystems)
    result = Inspection(disks, filesystems, encrypted, guests)
    result.appliance_launches = session.launch_events
    if not guests:
        result.notes.append("no operating system found on these disks")
    return result


def _guest(g: Any, root: str, disks: list[DiskInfo], filesystems: list[Filesystem],
           step: Step) -> Guest:
    ostype = g.inspect_get_type(root)
    guest = Guest(root=root, type=ostype)
    step(f"inspecting {ostype} on {root}")
    guest.distro = _known(g.inspect_get_distro(root))
    guest.major, guest.minor = g.inspect_get_major_version(root), g.inspect_get_minor_version(root)
    guest.version = f"{guest.major}.{guest.minor}"
    guest.product_name = _known(g.inspect_get_product_name(root))
    guest.arch = _known(g.inspect_get_arch(root))
    guest.hostname = _known(g.inspect_get_hostname(root))
    guest.package_format = _known(g.inspect_get_package_format(root))
    guest.package_management = _known(g.inspect_get_package_management(root))
    guest.mountpoints = dict(g.inspect_get_mountpoints(root))
    guest.firmware_needed = storage.firmware_needed(disks, list(guest.mountpoints.values()))
    mounted = _mount_ro(g, guest.mountpoints, guest)
    try:
        files = GuestfsFiles(g)
        if ostype == "linux":
            _linux(g, files, guest, step)
        elif ostype == "windows":
            _windows(g, files, guest, root)
        guest.applications = _applications(g, root, guest)
        guest.vmware_tools = any(a.vmware_tools for a in guest.applications) or \
            bool(guest.vmware_tools)
        _measure_free(g, guest, filesystems, mounted)
    finally:
        g.umount_all()
    return guest


def _measure_free(g: Any, guest: Guest, filesystems: list[Filesystem],
                  mounted: list[str]) -> None:
    # The guest's filesystems are mounted right now: measure them in place.
    by_dev = {fs.device: fs for fs in filesystems}
    for mp in mounted:
        fs = by_dev.get(guest.mountpoints[mp])
        if fs is not None and fs.free_bytes is None:
            fs.free_bytes = storage.statvfs_free(g, mp)


def _known(value: str) -> str | None:
    return None if value in ("unknown", "") else value


def _mount_ro(g: Any, mountpoints: dict[str, str], guest: Guest) -> list[str]:
    """Mount the guest's filesystems read-only; return the mountpoints that worked."""
    mounted = []
    # Shortest path first, so that / is mounted before /boot.
    for mp in sorted(mountpoints, key=len):
        try:
            g.mount_ro(mountpoints[mp], mp)
            mounted.append(mp)
        except RuntimeError as exc:
            guest.notes.append(f"cannot mount {mountpoints[mp]} on {mp}: {exc}")
    return mounted


def _linux(g: Any, files: GuestfsFiles, guest: Guest, step: Step) -> None:
    lvm = set(g.lvs())
    guest.kernels = [linux.kernel_facts(files, v, lambda p: step(f"reading {p}"))
                     for v in linux.kernel_versions(files)]
    guest.bootloader = linux.bootloader(files)
    fstab = files.read("/etc/fstab")
    guest.fstab = linux.parse_fstab(fstab.decode(errors="replace"), lvm) \
        if fstab is not None else []
    crypttab = files.read("/etc/crypttab")
    guest.crypttab = linux.parse_crypttab(crypttab.decode(errors="replace"), lvm) \
        if crypttab is not None else []
    guest.network = network.network_configs(files)
    guest.vmware_tools = linux.vmware_tools_files(files)


def _windows(g: Any, files: GuestfsFiles, guest: Guest, root: str) -> None:
    def case_path(path: str) -> str | None:
        try:
            return str(g.case_sensitive_path(path))
        except RuntimeError:
            return None

    systemroot = g.inspect_get_windows_systemroot(root)
    info, host = windows_facts(files, case_path, systemroot)
    guest.windows = info
    guest.hostname = guest.hostname or host
    guest.bootloader = "windows-bootmgr"
    guest.vmware_tools = info.vmware_tools
    if info.product_name and not guest.product_name:
        guest.product_name = info.product_name


def _package_version(app: dict[str, Any]) -> str | None:
    """epoch:version-release, the way the package manager itself writes it."""
    version = app.get("app2_version") or ""
    if not version:
        return None
    epoch, release = app.get("app2_epoch") or 0, app.get("app2_release") or ""
    return f"{epoch}:" * bool(epoch) + version + (f"-{release}" if release else "")


def _applications(g: Any, root: str, guest: Guest) -> list[Application]:
    try:
        apps = g.inspect_list_applications2(root)
    except RuntimeError as exc:
        guest.notes.append(f"cannot list applications: {exc}")
        return []
    out = []
    for a in apps:
        # Windows' app2_name is the Uninstall key (often a GUID); the display name reads.
        display = a.get("app2_display_name") or a.get("app2_name") or ""
        name = display if guest.type == "windows" else a.get("app2_name") or display
        version = _package_version(a)
        tools = any(t == name.lower() or t in display.lower() for t in VMWARE_TOOLS_APPS)
        out.append(Application(name, version, tools))
    return out


