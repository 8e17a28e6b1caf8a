"""Stage 1: a Debian root tree that looks like a guest exported from ESXi.

Everything here runs natively on the build host (debootstrap, chroot), never
inside the libguestfs appliance: the appliance runs under TCG on hosts whose
KVM is unusable, and rebuilding an initramfs there takes minutes instead of
seconds (see FIELD-NOTES, "The anchor").
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from vmshift.errors import OperationFailed
from vmshift.testbed.guestimage.initramfs import kernel_modules, list_initramfs, virtio_modules

SUITE = "bookworm"
# minbase plus what a small VMware Debian server really has. No openssh-server:
# nothing logs in over the network, and it would cost boot time under TCG.
PACKAGES = ("linux-image-amd64", "grub-pc", "systemd-sysv", "udev", "kmod", "ifupdown",
            "open-vm-tools", "initramfs-tools", "zstd", "iproute2")
# What `MODULES=dep` would put in an initramfs on ESXi: the paravirtual SCSI and
# LSI Logic controllers, SATA/IDE (ESXi's CD-ROM controllers), the disk and
# filesystem drivers. No virtio: that is the point of the no-virtio variant.
VMWARE_INITRAMFS_MODULES = ("vmw_pvscsi", "mptspi", "ahci", "ata_piix", "sd_mod", "ext4")
NOVIRTIO_CONF = "etc/initramfs-tools/conf.d/vmshift-vmware-only.conf"
UNSAFE_IO_CONF = "etc/dpkg/dpkg.cfg.d/vmshift-build-unsafe-io"
ROOT_PASSWORD = "vmshift"  # a throw-away test guest; documented in the README
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
              "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root"}


@dataclass(frozen=True)
class GuestIdentity:
    """What differs between the variants inside the guest."""

    hostname: str
    ipv4_cidr: str  # static address of ens192, as an ESXi admin would have set it
    gateway: str


def run_logged(argv: list[str], log: Path, *, env: dict[str, str] | None = None,
               input_text: str | None = None, what: str = "") -> None:
    """Run a build step, its output appended to the build log; fail with the log's tail."""
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                              input=input_text, text=True, check=False)
    if proc.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(True)[-15:])
        raise OperationFailed(f"reference guest build: {what or argv[0]} failed "
                              f"(exit {proc.returncode}); log {log}:\n{tail}")


def debootstrap(target: Path, *, mirror: str, deb_cache: Path, log: Path) -> None:
    """A minimal Debian 12 with a kernel, GRUB and open-vm-tools, debs cached for reuse."""
    deb_cache.mkdir(parents=True, exist_ok=True)
    # No fsync per unpacked file: a crashed build is thrown away anyway. dpkg in
    # the target reads this before debootstrap installs anything.
    _write(target, UNSAFE_IO_CONF, "force-unsafe-io\n")
    run_logged(["debootstrap", "--variant=minbase", f"--cache-dir={deb_cache}",
                "--include=" + ",".join(sorted(set(PACKAGES))), SUITE, str(target), mirror],
               log, env={**os.environ, **CHROOT_ENV}, what="debootstrap")
    (target / UNSAFE_IO_CONF).unlink()


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _set_grub_defaults(root: Path) -> None:
    # Serial console as on an ESXi VM with serial0 (console=ttyS0 last, so it is
    # /dev/console and the boot test can read systemd's messages). Timeout 1 s:
    # the boot test runs under TCG.
    _write(root, "etc/default/grub.d/vmshift-esxi.cfg",
           'GRUB_TIMEOUT=1\n'
           'GRUB_CMDLINE_LINUX_DEFAULT=""\n'
           'GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"\n'
           'GRUB_TERMINAL="console serial"\n'
           'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n')


def set_identity(root: Path, ident: GuestIdentity) -> None:
    """Hostname and the static address of ens192 (vmxnet3 in PCI slot 192 on ESXi)."""
    _write(root, "etc/hostname", ident.hostname + "\n")
    _write(root, "etc/hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{ident.hostname}\n"
                              "::1\tlocalhost ip6-localhost ip6-loopback\n")
    _write(root, "etc/network/interfaces",
           "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
           "allow-hotplug ens192\niface ens192 inet static\n"
           f"\taddress {ident.ipv4_cidr}\n\tgateway {ident.gateway}\n")
    _write(root, "etc/resolv.conf", f"nameserver {ident.gateway}\n")


def make_esxi_like(root: Path, log: Path) -> None:
    """What every variant shares: fstab on /dev/sda1, serial console, a root password."""
    # Old-style device name, as many ESXi-era installs have: /dev/sda on pvscsi.
    _write(root, "etc/fstab", "# <file system> <mount point> <type> <options> <dump> <pass>\n"
                              "/dev/sda1\t/\text4\terrors=remount-ro\t0\t1\n")
    _set_grub_defaults(root)
    # Empty machine-id: systemd makes one on first boot, as on a cloned template.
    _write(root, "etc/machine-id", "")
    run_logged(["chroot", str(root), "chpasswd"], log, env=CHROOT_ENV,
               input_text=f"root:{ROOT_PASSWORD}\n", what="chpasswd")
    _drop_caches(root)


def _drop_caches(root: Path) -> None:
    """Downloaded debs and apt lists: the debs stay in the host-side cache only."""
    for rel in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (root / rel).glob("*"):
            if path.is_file():
                path.unlink()


def kernel_version(root: Path) -> str:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise OperationFailed(f"reference guest build: no kernel in {root}/boot")
    return kernels[-1].name.removeprefix("vmlinuz-")


def initrd_path(root: Path) -> Path:
    return root / "boot" / f"initrd.img-{kernel_version(root)}"


def check_initramfs(root: Path, *, want_virtio: bool) -> set[str]:
    """Fail the build unless the initramfs has (or lacks) virtio; return its modules."""
    names = list_initramfs(initrd_path(root))
    virtio = virtio_modules(names)
    modules = kernel_modules(names)
    if want_virtio and not {"virtio_blk", "virtio_scsi", "virtio_pci"} <= virtio:
        raise OperationFailed(f"reference guest build: initramfs lacks virtio ({sorted(virtio)})")
    if not want_virtio and virtio:
        raise OperationFailed("reference guest build: the no-virtio initramfs still has "
                              + ", ".join(sorted(virtio)))
    if "vmw_pvscsi" not in modules:
        raise OperationFailed("reference guest build: initramfs lacks vmw_pvscsi")
    return modules


def make_vmware_only_initramfs(root: Path, log: Path) -> None:
    """Rebuild the initramfs with VMware drivers only, as MODULES=dep would on ESXi.

    It is built with MODULES=list (dep would look at *this* host's hardware),
    and the config then says MODULES=dep, which is what such a guest carries.
    The VMware modules stay listed in /etc/initramfs-tools/modules, so a
    converter that adds virtio modules there and rebuilds gets them.
    """
    modules = root / "etc/initramfs-tools/modules"
    with open(modules, "a") as out:
        out.write("# storage drivers of the ESXi virtual hardware\n")
        out.write("".join(m + "\n" for m in VMWARE_INITRAMFS_MODULES))
    _write(root, NOVIRTIO_CONF, "MODULES=list\n")
    run_logged(["chroot", str(root), "update-initramfs", "-u", "-k", "all"], log,
               env=CHROOT_ENV, what="update-initramfs (VMware-only)")
    _write(root, NOVIRTIO_CONF, "# built on ESXi: only the drivers of the hardware it ran on\n"
                                "MODULES=dep\n")
