"""Linux guest changes on small filesystems built with libguestfs (issue 14).

One appliance for the module: two disks (root and swap on the first, /data
on the second), whose /etc and /boot each test lays out afresh. Each test
plans the changes from the guest's files exactly as a conversion does
(inspection's own readers feed the plan), applies the file edits through the
appliance, and asserts the exact files written. Running the guest's tools
(update-grub, dpkg) is proved by the boot tests in test_convert_vm.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from vmshift.drivers.edits import BACKUP_SUFFIX, EditPlan, apply_edits
from vmshift.drivers.linux import LinuxOptions, plan_linux
from vmshift.inspect import linux as inspect_linux
from vmshift.inspect import network as inspect_network
from vmshift.inspect.files import GuestfsFiles
from vmshift.inspect.result import Application, Filesystem, Guest, Initramfs, Kernel
from vmshift.model import Nic

MAC1, MAC2 = "00:50:56:3a:5e:01", "00:50:56:3a:5e:02"
NICS = [Nic(mac=MAC1, pci_slot=192), Nic(mac=MAC2, pci_slot=224)]
LINK = "/etc/systemd/network/10-vmshift-{}.link"


@pytest.fixture(scope="module")
def appliance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from vmshift.host import new_guestfs

    tmp = tmp_path_factory.mktemp("drivers")
    g = new_guestfs()
    for name in ("sda.img", "sdb.img", "sdc.img"):
        g.disk_create(str(tmp / name), "raw", 64 * 1024 * 1024)
        g.add_drive_opts(str(tmp / name), format="raw", readonly=0)
    g.launch()
    g.part_init("/dev/sda", "mbr")
    g.part_add("/dev/sda", "p", 2048, 100000)
    g.part_add("/dev/sda", "p", 100001, -2048)
    g.mkfs("ext4", "/dev/sda1")
    g.mkswap("/dev/sda2")
    g.part_disk("/dev/sdb", "mbr")
    g.mkfs("ext4", "/dev/sdb1")
    g.pvcreate("/dev/sdc")  # root on LVM, as many installers lay it out
    g.vgcreate("vg0", ["/dev/sdc"])
    g.lvcreate("root", "vg0", 32)
    g.mkfs("ext4", "/dev/vg0/root")
    g.mount("/dev/sda1", "/")
    yield g
    g.shutdown()
    g.close()


@pytest.fixture
def g(appliance: Any) -> Any:
    """A fresh /etc and /boot (systemd with .link support, unless a test removes it)."""
    for top in ("/etc", "/boot", "/lib"):
        appliance.rm_rf(top)
    for d in ("/etc/network", "/etc/default", "/boot", "/lib/systemd/network",
              "/etc/systemd/system"):
        appliance.mkdir_p(d)
    appliance.write("/lib/systemd/network/99-default.link", b"[Link]\nNamePolicy=path\n")
    return appliance


def filesystems(g: Any) -> list[Filesystem]:
    return [Filesystem(dev, g.vfs_type(dev), g.vfs_uuid(dev) or None, None, None, None)
            for dev in ("/dev/sda1", "/dev/sda2", "/dev/sdb1")]


def guest_of(g: Any, **kw: Any) -> Guest:
    """What inspection would report, read by inspection's own readers."""
    files = GuestfsFiles(g)
    fstab = (files.read("/etc/fstab") or b"").decode()
    guest = Guest(root="/dev/sda1", type="linux", distro="debian", package_format="deb",
                  package_management="apt", bootloader="grub2", firmware_needed="bios",
                  mountpoints={"/": "/dev/sda1", "/data": "/dev/sdb1"},
                  fstab=inspect_linux.parse_fstab(fstab), crypttab=[],
                  network=inspect_network.network_configs(files), kernels=[],
                  applications=[])
    for key, value in kw.items():
        setattr(guest, key, value)
    return guest


def plan(g: Any, nics: list[Nic] = NICS, **kw: Any) -> EditPlan:
    result = plan_linux(GuestfsFiles(g), guest_of(g, **kw), filesystems(g), nics,
                        LinuxOptions(install_agent=False))
    return result.plan


def apply_files(g: Any, p: EditPlan) -> None:
    """The file edits only: the test filesystem has no guest tools to run."""
    apply_edits(g, EditPlan([e for e in p.edits if e.action != "run"]))


def cat(g: Any, path: str) -> str:
    return bytes(g.read_file(path)).decode()


def link(name: str, mac: str) -> str:
    return ("# Written by vmshift: the name this NIC had on VMware, kept on KVM,\n"
            "# so that the guest's network configuration still applies to it.\n"
            f"[Match]\nMACAddress={mac}\nPath=pci-*\n\n[Link]\nName={name}\n")


# --- block devices -------------------------------------------------------------

def test_fstab_device_names_become_uuids(g: Any) -> None:
    g.write("/etc/fstab", b"# static\n/dev/sda1  /  ext4  errors=remount-ro  0 1\n"
                          b"/dev/sda2 none swap sw 0 0\n/dev/sdb1\t/data\text4\tdefaults\t0 2\n"
                          b"tmpfs /tmp tmpfs defaults 0 0\n")
    fs = {f.device: f.uuid for f in filesystems(g)}
    apply_files(g, plan(g))
    assert cat(g, "/etc/fstab") == (
        f"# static\nUUID={fs['/dev/sda1']}  /  ext4  errors=remount-ro  0 1\n"
        f"UUID={fs['/dev/sda2']} none swap sw 0 0\n"
        f"UUID={fs['/dev/sdb1']}\t/data\text4\tdefaults\t0 2\ntmpfs /tmp tmpfs defaults 0 0\n")
    assert cat(g, "/etc/fstab" + BACKUP_SUFFIX).startswith("# static\n/dev/sda1")


def test_fstab_by_id_resolved_through_its_mountpoint(g: Any) -> None:
    by_id = "/dev/disk/by-id/scsi-36000c29e1f3d4a5b6c7d8e9f00112233-part1"
    g.write("/etc/fstab", f"{by_id} /data ext4 defaults 0 2\n".encode())
    apply_files(g, plan(g))
    uuid = g.vfs_uuid("/dev/sdb1")
    assert cat(g, "/etc/fstab") == f"UUID={uuid} /data ext4 defaults 0 2\n"


@pytest.mark.parametrize("line", ["LABEL=root / ext4 defaults 0 1\n",
                                  "UUID=0a1b2c3d-aaaa-bbbb-cccc-123456789abc / ext4 rw 0 1\n",
                                  "/dev/mapper/vg0-root / ext4 defaults 0 1\n"])
def test_stable_names_are_left_alone(g: Any, line: str) -> None:
    g.write("/etc/fstab", line.encode())
    p = plan(g)
    assert "/etc/fstab" not in {e.path for e in p.edits}
    apply_files(g, p)
    assert cat(g, "/etc/fstab") == line


def test_root_on_lvm_with_separate_boot(g: Any) -> None:
    g.write("/etc/fstab", b"/dev/mapper/vg0-root / ext4 defaults 0 1\n"
                          b"/dev/sda1 /boot ext4 defaults 0 2\n")
    mounts = {"/": "/dev/vg0/root", "/boot": "/dev/sda1"}
    apply_files(g, plan(g, mountpoints=mounts))
    assert cat(g, "/etc/fstab") == ("/dev/mapper/vg0-root / ext4 defaults 0 1\n"
                                    f"UUID={g.vfs_uuid('/dev/sda1')} /boot ext4 defaults 0 2\n")


def test_resume_device_by_uuid(g: Any) -> None:
    g.mkdir_p("/etc/initramfs-tools/conf.d")
    g.write("/etc/initramfs-tools/conf.d/resume", b"RESUME=/dev/sda2\n")
    p = plan(g)
    edit = next(e for e in p.edits if e.path == "/etc/initramfs-tools/conf.d/resume")
    swap = g.vfs_uuid("/dev/sda2")
    assert edit.content == f"RESUME=UUID={swap}\n".encode()
    assert edit.why == f"RESUME=/dev/sda2 -> UUID={swap}"


def test_grub_default_root_device_rewritten_and_regenerated(g: Any) -> None:
    g.write("/etc/fstab", b"/dev/sda1 / ext4 defaults 0 1\n")
    g.write("/etc/default/grub", b'GRUB_CMDLINE_LINUX="root=/dev/sda1 console=ttyS0"\n'
                                 b"GRUB_DISABLE_LINUX_UUID=true\n")
    g.mkdir_p("/usr/sbin")
    g.write("/usr/sbin/update-grub", b"#!/bin/sh\n")
    p = plan(g)
    uuid = g.vfs_uuid("/dev/sda1")
    grub = [e for e in p.edits if e.path == "/etc/default/grub"]
    # Two edits of one file (the device, then the UUID setting): the last holds both.
    assert grub[-1].content == f'GRUB_CMDLINE_LINUX="root=UUID={uuid} console=ttyS0"\n' \
        "#GRUB_DISABLE_LINUX_UUID=true  # vmshift: root by UUID\n".encode()
    assert [e.argv for e in p.edits if e.action == "run"] == [("update-grub",)]


# --- network -------------------------------------------------------------------

FLAVOURS = {
    "ifupdown": ("/etc/network/interfaces",
                 "auto ens192\niface ens192 inet static\n\taddress 192.168.100.51/24\n"),
    "netplan": ("/etc/netplan/50-cloud.yaml",
                "network:\n  version: 2\n  ethernets:\n    ens192:\n      dhcp4: true\n"),
    "networkmanager": ("/etc/NetworkManager/system-connections/ens192.nmconnection",
                       "[connection]\nid=ens192\ntype=ethernet\ninterface-name=ens192\n\n"
                       "[ipv4]\nmethod=auto\n"),
    "ifcfg": ("/etc/sysconfig/network-scripts/ifcfg-ens192",
              "DEVICE=ens192\nBOOTPROTO=dhcp\nONBOOT=yes\n"),
    "networkd": ("/etc/systemd/network/20-wired.network",
                 "[Match]\nName=ens192\n\n[Network]\nDHCP=yes\n"),
}


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_each_flavour_keeps_its_interface_name(g: Any, flavour: str) -> None:
    path, text = FLAVOURS[flavour]
    g.mkdir_p(path.rsplit("/", 1)[0])
    g.write(path, text.encode())
    apply_files(g, plan(g))
    assert cat(g, LINK.format("ens192")) == link("ens192", MAC1)
    assert cat(g, path) == text  # the configuration itself is not touched
    assert g.ls("/etc/systemd/network") == sorted(
        ["10-vmshift-ens192.link", *(["20-wired.network"] if flavour == "networkd" else [])])


def test_two_nics_pinned_by_pci_slot(g: Any) -> None:
    g.write("/etc/network/interfaces", b"auto ens224\niface ens224 inet dhcp\n"
                                       b"auto ens192\niface ens192 inet dhcp\n")
    apply_files(g, plan(g))
    assert cat(g, LINK.format("ens192")) == link("ens192", MAC1)
    assert cat(g, LINK.format("ens224")) == link("ens224", MAC2)


def test_mac_pinned_config_needs_no_pin(g: Any) -> None:
    g.mkdir_p("/etc/sysconfig/network-scripts")
    g.write("/etc/sysconfig/network-scripts/ifcfg-ens192",
            f"DEVICE=ens192\nHWADDR={MAC1}\nBOOTPROTO=dhcp\n".encode())
    p = plan(g)
    assert not [e for e in p.edits if e.area == "network"]


def test_old_udev_gets_a_rule_and_stale_persistent_net_goes(g: Any) -> None:
    g.rm_rf("/lib/systemd/network")
    g.mkdir_p("/etc/udev/rules.d")
    g.write("/etc/udev/rules.d/70-persistent-net.rules",
            b'# generated\nSUBSYSTEM=="net", DRIVERS=="vmxnet3", ATTR{address}=="'
            + MAC1.encode() + b'", NAME="eth0"\n'
            b'SUBSYSTEM=="net", ATTR{address}=="aa:bb:cc:dd:ee:ff", NAME="eth7"\n')
    g.write("/etc/network/interfaces", b"auto eth0\niface eth0 inet dhcp\n")
    apply_files(g, plan(g, nics=[Nic(mac=MAC1)]))
    assert cat(g, "/etc/udev/rules.d/70-vmshift-net-names.rules") == (
        "# Written by vmshift: the names these NICs had on VMware, kept on KVM.\n"
        f'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{{address}}=="{MAC1}", '
        'ATTR{type}=="1", NAME="eth0"\n')
    assert cat(g, "/etc/udev/rules.d/70-persistent-net.rules") == (
        '# generated\nSUBSYSTEM=="net", ATTR{address}=="aa:bb:cc:dd:ee:ff", NAME="eth7"\n')


# --- boot, drivers, tools, caches ---------------------------------------------------

def test_serial_console_added_when_missing(g: Any) -> None:
    g.write("/etc/default/grub", b'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="quiet"\n')
    edit = next(e for e in plan(g).edits if e.area == "console")
    assert edit.content == b'GRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX="quiet console=tty0 ' \
                          b'console=ttyS0,115200n8"\n'


def test_initramfs_rebuilt_only_for_kernels_without_virtio(g: Any) -> None:
    g.mkdir_p("/usr/sbin")
    g.write("/usr/sbin/update-initramfs", b"#!/bin/sh\n")
    g.mkdir_p("/etc/initramfs-tools")
    g.write("/etc/initramfs-tools/modules", b"# list\nvmw_pvscsi\n")
    ready = Kernel("6.1.0-1", "/boot/vmlinuz-6.1.0-1", None, [], Initramfs(
        "/boot/initrd.img-6.1.0-1", ["zstd"], {"virtio_pci": True, "virtio_blk": True}))
    lacking = Kernel("6.1.0-2", "/boot/vmlinuz-6.1.0-2", None, [], Initramfs(
        "/boot/initrd.img-6.1.0-2", ["zstd"], {"virtio_pci": False, "virtio_blk": False}))
    p = plan(g, kernels=[ready, lacking])
    edits = [e for e in p.edits if e.area == "initramfs"]
    assert edits[0].content == b"# list\nvmw_pvscsi\n# added by vmshift: drivers for KVM's " \
                               b"virtio devices\nvirtio_pci\nvirtio_blk\nvirtio_scsi\nvirtio_net\n"
    assert [e.argv for e in edits[1:]] == [("update-initramfs", "-u", "-k", "6.1.0-2")]


def test_uefi_fallback_loader_copied(g: Any) -> None:
    g.mkdir_p("/boot/efi/EFI/debian")
    g.write("/boot/efi/EFI/debian/shimx64.efi", b"shim")
    g.write("/boot/efi/EFI/debian/grubx64.efi", b"grub")
    apply_files(g, plan(g, firmware_needed="uefi"))
    assert cat(g, "/boot/efi/EFI/BOOT/BOOTX64.EFI") == "shim"
    assert cat(g, "/boot/efi/EFI/BOOT/grubx64.efi") == "grub"


@pytest.mark.parametrize("keep", [False, True])
def test_vmware_tools_purged_unless_kept(g: Any, keep: bool) -> None:
    g.mkdir_p("/etc/apt/sources.list.d")
    g.write("/etc/apt/sources.list.d/vmware-tools.list", b"deb http://packages.vmware/ x main\n")
    guest = guest_of(g, applications=[Application("open-vm-tools", "2:12", True)])
    result = plan_linux(GuestfsFiles(g), guest, filesystems(g), NICS,
                        LinuxOptions(keep_vmware_tools=keep, install_agent=False))
    runs = [e.argv for e in result.plan.edits if e.area == "vmware_tools" and e.argv]
    removed = [e.path for e in result.plan.edits if e.action == "remove"]
    assert runs == ([] if keep else [("dpkg", "--purge", "open-vm-tools")])
    assert removed == ([] if keep else ["/etc/apt/sources.list.d/vmware-tools.list"])


def test_caches_removed_and_selinux_relabelled(g: Any) -> None:
    g.mkdir_p("/etc/lvm/devices")
    g.write("/etc/lvm/devices/system.devices", b"IDTYPE=sys_wwid IDNAME=naa.6000c29\n")
    g.mkdir_p("/etc/selinux")
    g.write("/etc/selinux/config", b"SELINUX=enforcing\n")
    g.write("/etc/network/interfaces", b"auto ens192\niface ens192 inet dhcp\n")
    apply_files(g, plan(g))
    assert not g.exists("/etc/lvm/devices/system.devices")
    assert g.exists("/etc/lvm/devices/system.devices" + BACKUP_SUFFIX)
    assert g.is_file("/.autorelabel")


def test_firstboot_service_enabled(g: Any) -> None:
    result = plan_linux(GuestfsFiles(g), guest_of(g), filesystems(g), NICS,
                        LinuxOptions(install_agent=False))
    assert result.firstboot == ["report interfaces, addresses and failed units on the console"]
    apply_files(g, result.plan)
    wants = "/etc/systemd/system/multi-user.target.wants/vmshift-firstboot.service"
    assert g.readlink(wants) == "/etc/systemd/system/vmshift-firstboot.service"
    script = cat(g, "/usr/local/lib/vmshift/firstboot.sh")
    assert "vmshift-report: $*" in script and "@EARLY@" not in script and "@LATE@" not in script


def test_no_systemd_no_firstboot_promised(g: Any) -> None:
    g.rm_rf("/etc/systemd")
    result = plan_linux(GuestfsFiles(g), guest_of(g), filesystems(g), NICS, LinuxOptions())
    assert result.firstboot == []
    assert not [e for e in result.plan.edits if e.area == "firstboot"]
    assert any(n.startswith("no systemd in the guest: no first-boot service; not done: "
                            "install qemu-guest-agent") for n in result.plan.notes)
