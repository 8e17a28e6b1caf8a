"""Linux guest facts: kernels and their initramfs, boot loader, fstab, crypttab.

Network configuration lives in ``network.py``. Everything here reads files
through ``GuestFiles``, never runs guest binaries.
"""

from __future__ import annotations

import os
import posixpath
import re
import tempfile
from collections.abc import Callable

from vmshift.inspect.files import GuestFiles, read_text
from vmshift.inspect.initramfs import builtin_modules, scan_initramfs_file
from vmshift.inspect.result import (
    VIRTIO_MODULES,
    CrypttabEntry,
    DeviceRef,
    FstabEntry,
    Initramfs,
    Kernel,
)

# Kernel disk names that belong to the source's bus: on KVM's virtio-blk the
# same disk is /dev/vdX, so a config naming /dev/sdX must be rewritten.
_BUS_NAMED = re.compile(r"^/dev/(sd[a-z]+|hd[a-z]+|xvd[a-z]+|vd[a-z]+|nvme\d+n\d+|cciss/)")
INITRAMFS_NAMES = ("/boot/initrd.img-{v}", "/boot/initramfs-{v}.img", "/boot/initrd-{v}",
                   "/boot/initramfs-{v}", "/boot/initrd-{v}.img")
VMWARE_TOOLS_PATHS = ("/etc/vmware-tools", "/usr/lib/vmware-tools", "/usr/bin/vmtoolsd")


def classify_device(spec: str, lvm_names: set[str] | None = None) -> DeviceRef:
    """How an fstab/crypttab field names its device, and whether KVM breaks it."""
    lvm_names = lvm_names or set()
    key, _, value = spec.partition("=")
    tagged = {"UUID": "uuid", "LABEL": "label", "PARTUUID": "partuuid",
              "PARTLABEL": "partlabel", "ID": "by_id"}
    if value and key.upper() in tagged:
        return DeviceRef(spec, tagged[key.upper()], key.upper() == "ID")
    if spec.startswith("/dev/disk/by-"):
        kind = spec.split("/")[3].removeprefix("by-").replace("-", "")
        # by-id and by-path embed the source's bus, vendor and serial numbers.
        return DeviceRef(spec, f"by_{kind}" if kind in ("id", "path") else kind,
                         kind in ("id", "path"))
    if spec.startswith("/dev/mapper/"):
        name = spec.removeprefix("/dev/mapper/")
        return DeviceRef(spec, "lvm" if _is_lvm_mapper(name, lvm_names) else "mapper", False)
    if _BUS_NAMED.match(spec):
        return DeviceRef(spec, "device_path", True)
    parts = spec.split("/")
    if spec.startswith("/dev/") and len(parts) == 4:
        # /dev/VG/LV is the LVM naming convention; confirmed when the VG is known.
        return DeviceRef(spec, "lvm", False)
    if spec.startswith("/dev/"):
        return DeviceRef(spec, "device_path", False)
    if ":" in spec or spec.startswith("//"):
        return DeviceRef(spec, "network", False)
    return DeviceRef(spec, "special", False)


def _is_lvm_mapper(name: str, lvm_names: set[str]) -> bool:
    # Device-mapper escapes '-' inside VG/LV names as '--'.
    vg_lv = re.split(r"(?<!-)-(?!-)", name, maxsplit=1)
    if len(vg_lv) != 2:
        return False
    vg, lv = (p.replace("--", "-") for p in vg_lv)
    return not lvm_names or f"/dev/{vg}/{lv}" in lvm_names


def _table_lines(text: str) -> list[tuple[int, list[str]]]:
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append((number, line.split()))
    return out


def parse_fstab(text: str, lvm_names: set[str] | None = None) -> list[FstabEntry]:
    entries = []
    for number, f in _table_lines(text):
        if len(f) < 3:
            continue  # malformed line: the guest's mount ignores it too
        entries.append(FstabEntry(number, classify_device(f[0], lvm_names), f[1], f[2],
                                  f[3] if len(f) > 3 else "defaults"))
    return entries


def parse_crypttab(text: str, lvm_names: set[str] | None = None) -> list[CrypttabEntry]:
    entries = []
    for number, f in _table_lines(text):
        if len(f) < 2:
            continue
        keyfile = f[2] if len(f) > 2 and f[2] not in ("none", "-") else None
        entries.append(CrypttabEntry(number, f[0], classify_device(f[1], lvm_names), keyfile,
                                     f[3] if len(f) > 3 else None))
    return entries


def _version_key(v: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"[.\-+~]", v)]


def kernel_versions(files: GuestFiles) -> list[str]:
    """Kernels installed: a /boot/vmlinuz-* or a /lib/modules/* directory."""
    versions = {n.removeprefix("vmlinuz-") for n in files.listdir("/boot")
                if n.startswith("vmlinuz-")}
    for moddir in ("/lib/modules", "/usr/lib/modules"):
        versions |= {n for n in files.listdir(moddir)
                     if files.is_dir(posixpath.join(moddir, n, "kernel"))}
    return sorted(versions, key=_version_key)


def _modules_dir(files: GuestFiles, version: str) -> str | None:
    for base in ("/lib/modules", "/usr/lib/modules"):
        path = posixpath.join(base, version)
        if files.is_dir(path):
            return path
    return None


def find_initramfs(files: GuestFiles, version: str) -> str | None:
    for pattern in INITRAMFS_NAMES:
        path = pattern.format(v=version)
        if files.is_file(path):
            return path
    return None


def kernel_facts(files: GuestFiles, version: str,
                 progress: Callable[[str], None] | None = None) -> Kernel:
    vmlinuz = f"/boot/vmlinuz-{version}"
    moddir = _modules_dir(files, version)
    builtin = builtin_modules(read_text(files, f"{moddir}/modules.builtin")) if moddir else set()
    kernel = Kernel(version, vmlinuz if files.is_file(vmlinuz) else None, moddir,
                    sorted(m for m in VIRTIO_MODULES if m in builtin))
    initrd = find_initramfs(files, version)
    if initrd is not None:
        if progress:
            progress(initrd)
        kernel.initramfs = _scan(files, initrd, builtin)
    return kernel


def _scan(files: GuestFiles, initrd: str, builtin: set[str]) -> Initramfs:
    # Copied to the host so that decompression runs at native speed, not
    # inside the TCG-emulated appliance.
    with tempfile.TemporaryDirectory(prefix="vmshift-initrd-") as tmp:
        local = os.path.join(tmp, "initrd")
        try:
            files.fetch(initrd, local)
        except (RuntimeError, OSError) as exc:
            return Initramfs(initrd, [], None, f"cannot read: {exc}")
        return scan_initramfs_file(initrd, local, builtin)


def bootloader(files: GuestFiles) -> str | None:
    """The boot loader the guest is configured for (None: none recognised)."""
    if files.is_file("/boot/grub/grub.cfg") or files.is_file("/boot/grub2/grub.cfg") \
            or files.is_dir("/boot/grub/i386-pc") or files.is_dir("/boot/grub2/i386-pc"):
        return "grub2"
    if files.is_file("/boot/grub/menu.lst") or files.is_file("/boot/grub/grub.conf"):
        return "grub-legacy"
    for esp in ("/boot/efi", "/efi", "/boot"):
        if files.is_dir(f"{esp}/loader/entries") or \
                files.is_file(f"{esp}/EFI/systemd/systemd-bootx64.efi"):
            return "systemd-boot"
    if files.is_file("/boot/efi/EFI/debian/grubx64.efi") or \
            any(files.is_file(f"/boot/efi/EFI/{d}/grubx64.efi")
                for d in files.listdir("/boot/efi/EFI")):
        return "grub2"
    if files.is_file("/etc/lilo.conf"):
        return "lilo"
    return None


def vmware_tools_files(files: GuestFiles) -> bool:
    """VMware's own tarball installer leaves no package behind, only files."""
    return any(files.is_dir(p) or files.is_file(p) for p in VMWARE_TOOLS_PATHS)
