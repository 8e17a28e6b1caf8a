"""Builders for the inspection tests' guest images (a helper module, not tests).

The images are real: ext4 and NTFS made by the libguestfs appliance, a LUKS2
volume made by the host's cryptsetup, Windows registry hives made with hivex
(after writing the documented empty regf header ourselves, since hivex cannot
create a hive from nothing).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from tests.hives import pe32plus, write_hive

GOOD_KERNEL = "6.1.0-13-amd64"
BARE_KERNEL = "6.1.0-9-amd64"
VIRTIO_KOS = ["kernel/drivers/block/virtio_blk.ko", "kernel/drivers/scsi/virtio_scsi.ko",
              "kernel/drivers/net/virtio_net.ko", "kernel/drivers/virtio/virtio_pci.ko"]

FSTAB = """\
# /etc/fstab: static file system information.
/dev/sda1  /          ext4  errors=remount-ro  0 1
UUID=0a3c1b2e-1111-4222-8333-444455556666  /boot  ext4  defaults  0 2
LABEL=data  /srv  xfs  defaults  0 2
/dev/mapper/vg0-home  /home  ext4  defaults  0 2
/dev/disk/by-id/scsi-36000c29d1a2b3c4d-part3  /opt  ext4  defaults  0 2
proc  /proc  proc  defaults  0 0
"""
CRYPTTAB = "cryptdata  UUID=99999999-aaaa-4bbb-8ccc-dddddddddddd  none  luks\n"
INTERFACES = """\
auto lo
iface lo inet loopback

allow-hotplug ens192
iface ens192 inet dhcp
"""
NETPLAN = """\
network:
  version: 2
  ethernets:
    nic0:
      match:
        macaddress: "00:50:56:aa:bb:cc"
      set-name: ens192
      dhcp4: true
    ens224:
      addresses: [10.0.0.5/24]
"""
NM = """\
[connection]
id=Wired
type=ethernet
interface-name=ens160

[ethernet]
mac-address=00:50:56:11:22:33

[ipv4]
method=auto
"""
IFCFG = 'DEVICE=eth0\nHWADDR="00:50:56:44:55:66"\nBOOTPROTO=dhcp\n'
NETWORKD_LINK = "[Match]\nMACAddress=00:50:56:77:88:99\n\n[Link]\nName=lan0\n"
NETWORKD_NET = "[Match]\nName=lan0\n\n[Network]\nDHCP=yes\n"
DPKG_STATUS = """\
Package: open-vm-tools
Status: install ok installed
Architecture: amd64
Version: 2:12.2.0-1+deb12u1
Description: Open VMware Tools

Package: bash
Status: install ok installed
Architecture: amd64
Version: 5.2.15-2+b2
Description: GNU Bourne Again SHell

"""

# --- Linux ---


def _cpio(directory: Path) -> bytes:
    names = sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))
    res = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=directory,
                         input="\n".join(names).encode(), capture_output=True, check=True)
    return res.stdout


def make_initramfs(path: Path, modules: list[str], version: str) -> None:
    """Debian 12's layout: an uncompressed early cpio, then a zstd-compressed one."""
    early, main = path.parent / f"{path.name}.early", path.parent / f"{path.name}.main"
    (early / "kernel/x86/microcode").mkdir(parents=True)
    (early / "kernel/x86/microcode/GenuineIntel.bin").write_bytes(b"\x01" * 3000)
    for name in ["init", "bin/busybox", *[f"usr/lib/modules/{version}/{m}" for m in modules],
                 f"usr/lib/modules/{version}/kernel/fs/ext4/ext4.ko"]:
        (main / name).parent.mkdir(parents=True, exist_ok=True)
        (main / name).write_bytes(b"\x7fELF" + os.urandom(64))
    zst = subprocess.run(["zstd", "-q", "-c"], input=_cpio(main), capture_output=True,
                         check=True).stdout
    path.write_bytes(_cpio(early) + zst)
    subprocess.run(["rm", "-rf", str(early), str(main)], check=True)


def write_linux_tree(root: Path) -> None:
    files = {
        "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"'
                          '\nVERSION_ID="12"\nVERSION="12 (bookworm)"\nID=debian\n',
        "etc/debian_version": "12.5\n",
        "etc/hostname": "esxi-web01\n",
        "etc/hosts": "127.0.0.1 localhost\n",
        "etc/fstab": FSTAB,
        "etc/crypttab": CRYPTTAB,
        "etc/network/interfaces": INTERFACES,
        "etc/netplan/01-netcfg.yaml": NETPLAN,
        "etc/NetworkManager/system-connections/Wired.nmconnection": NM,
        "etc/sysconfig/network-scripts/ifcfg-eth0": IFCFG,
        "etc/systemd/network/10-lan.link": NETWORKD_LINK,
        "etc/systemd/network/20-lan.network": NETWORKD_NET,
        "var/lib/dpkg/status": DPKG_STATUS,
        "boot/grub/grub.cfg": "menuentry 'Debian' {}\n",
        f"boot/vmlinuz-{GOOD_KERNEL}": "kernel",
        f"boot/vmlinuz-{BARE_KERNEL}": "kernel",
        f"lib/modules/{GOOD_KERNEL}/modules.builtin": "kernel/fs/ext4/ext4.ko\n",
        f"lib/modules/{BARE_KERNEL}/modules.builtin": "kernel/drivers/virtio/virtio_pci.ko\n",
        "bin/sh": "#!",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for v in (GOOD_KERNEL, BARE_KERNEL):
        (root / f"lib/modules/{v}/kernel").mkdir(parents=True, exist_ok=True)
    make_initramfs(root / f"boot/initrd.img-{GOOD_KERNEL}", VIRTIO_KOS, GOOD_KERNEL)
    make_initramfs(root / f"boot/initrd.img-{BARE_KERNEL}", [], BARE_KERNEL)


# --- Windows ---

WIN_SOFTWARE = {
    "Microsoft\\Windows NT\\CurrentVersion": {
        "ProductName": "Windows Server 2019 Standard", "CurrentVersion": "6.3",
        "CurrentMajorVersionNumber": 10, "CurrentMinorVersionNumber": 0,
        "CurrentBuildNumber": "17763", "EditionID": "ServerStandard",
        "InstallationType": "Server", "SystemRoot": "C:\\Windows"},
    "Microsoft\\Windows\\CurrentVersion\\Uninstall\\{VMwareToolsGUID}": {
        "DisplayName": "VMware Tools", "DisplayVersion": "12.1.5.20735119"},
    "VMware, Inc.\\VMware Tools": {"InstallPath": "C:\\Program Files\\VMware\\VMware Tools\\"},
    "Policies\\Microsoft\\Windows\\DeviceInstall\\Restrictions": {"DenyUnspecified": 1},
}
WIN_SYSTEM = {
    "Select": {"Current": 1, "Default": 1, "LastKnownGood": 2},
    "ControlSet001\\Services\\viostor": {"Start": 0, "Type": 1,
                                        "ImagePath": "System32\\drivers\\viostor.sys"},
    "ControlSet001\\Services\\netkvm": {"Start": 3, "Type": 1},
    "ControlSet001\\Services\\Tcpip\\Parameters": {"Hostname": "WIN-PAYROLL"},
    "ControlSet001\\Control\\Session Manager\\Power": {"HiberbootEnabled": 1},
    "ControlSet002\\Services": {},
}


def write_windows_tree(root: Path) -> None:
    system32 = root / "Windows/System32"
    (system32 / "config").mkdir(parents=True)
    (system32 / "drivers").mkdir()
    (system32 / "cmd.exe").write_bytes(pe32plus())
    (system32 / "drivers/viostor.sys").write_bytes(b"MZ")
    write_hive(system32 / "config/SOFTWARE", WIN_SOFTWARE)
    write_hive(system32 / "config/SYSTEM", WIN_SYSTEM)
    (root / "Program Files").mkdir()
    (root / "Users").mkdir()
    # A resumable hibernation image begins with "hibr".
    (root / "hiberfil.sys").write_bytes(b"hibr" + b"\0" * 65532)


# --- The disks of one multi-OS VM, built in a single appliance launch ---


def _tar(tree: Path, tarball: Path) -> None:
    subprocess.run(["tar", "-C", str(tree), "-cf", str(tarball), "."], check=True)


def build_guest_disks(workdir: Path) -> dict[str, Path]:
    """linux.qcow2 (MBR, ext4 Debian tree), windows.qcow2 (GPT: ESP, NTFS with the
    Windows tree, a BitLocker-signed partition), luks.raw (LUKS2 by the host's
    cryptsetup) and big-mbr.qcow2 (3 TiB, empty MBR label)."""
    from vmshift.host import new_guestfs

    for name, writer in (("linux", write_linux_tree), ("windows", write_windows_tree)):
        (workdir / name).mkdir()
        writer(workdir / name)
        _tar(workdir / name, workdir / f"{name}.tar")
    disks = {"linux": workdir / "linux.qcow2", "windows": workdir / "windows.qcow2",
             "luks": workdir / "luks.raw", "bigmbr": workdir / "big-mbr.qcow2"}
    key = workdir / "luks.key"
    key.write_text("not-a-real-secret")
    subprocess.run(["truncate", "-s", "32M", str(disks["luks"])], check=True)
    subprocess.run(["cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf",
                    "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", str(key),
                    str(disks["luks"])], check=True)
    g = new_guestfs()
    try:
        g.disk_create(str(disks["linux"]), "qcow2", 300 * 2**20)
        g.disk_create(str(disks["windows"]), "qcow2", 400 * 2**20)
        g.disk_create(str(disks["bigmbr"]), "qcow2", 3 * 2**40)
        for name in ("linux", "windows", "bigmbr"):
            g.add_drive_opts(str(disks[name]), format="qcow2")
        g.launch()
        g.part_disk("/dev/sda", "mbr")
        g.mkfs("ext4", "/dev/sda1")
        g.mount("/dev/sda1", "/")
        g.tar_in(str(workdir / "linux.tar"), "/")
        g.umount_all()
        _windows_disk(g, workdir / "windows.tar")
        g.part_init("/dev/sdc", "msdos")
        g.shutdown()
    finally:
        g.close()
    return disks


def _windows_disk(g: object, tarball: Path) -> None:
    dev = "/dev/sdb"
    g.part_init(dev, "gpt")  # type: ignore[attr-defined]
    g.part_add(dev, "p", 2048, 206847)  # type: ignore[attr-defined]
    g.part_add(dev, "p", 206848, 718847)  # type: ignore[attr-defined]
    g.part_add(dev, "p", 718848, 782335)  # type: ignore[attr-defined]
    g.part_set_gpt_type(dev, 1, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")  # type: ignore
    g.part_set_gpt_type(dev, 2, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7")  # type: ignore
    g.mkfs("vfat", f"{dev}1")  # type: ignore[attr-defined]
    g.mkfs("ntfs", f"{dev}2")  # type: ignore[attr-defined]
    g.mount(f"{dev}2", "/")  # type: ignore[attr-defined]
    g.tar_in(str(tarball), "/")  # type: ignore[attr-defined]
    g.umount_all()  # type: ignore[attr-defined]
    # A BitLocker volume's boot sector carries "-FVE-FS-" as its OEM id.
    g.pwrite_device(f"{dev}3", b"\xeb\x58\x90-FVE-FS-" + b"\0" * 500, 0)  # type: ignore


def sha256(path: Path) -> str:
    """A source's digest, to prove inspection left it unchanged."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
