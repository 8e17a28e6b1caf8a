"""The Linux readers on a hand-made directory tree (fast, no appliance).

The same tree goes into a real image in test_inspect_images.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.inspect_images import (
    BARE_KERNEL,
    CRYPTTAB,
    FSTAB,
    GOOD_KERNEL,
    VIRTIO_KOS,
    make_initramfs,
    write_linux_tree,
)
from vmshift.inspect.files import DirFiles
from vmshift.inspect.initramfs import scan_initramfs_file
from vmshift.inspect.linux import classify_device, kernel_facts, parse_crypttab, parse_fstab
from vmshift.inspect.network import network_configs

# --- Readers over a directory tree (fast, no appliance) ---

@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("linux-tree")
    write_linux_tree(root)
    return root


def test_fstab_device_naming_and_rewrite_flags() -> None:
    entries = {e.mountpoint: e.device for e in parse_fstab(FSTAB, {"/dev/vg0/home"})}
    assert (entries["/"].kind, entries["/"].needs_rewrite) == ("device_path", True)
    assert (entries["/boot"].kind, entries["/boot"].needs_rewrite) == ("uuid", False)
    assert entries["/srv"].kind == "label"
    assert (entries["/home"].kind, entries["/home"].needs_rewrite) == ("lvm", False)
    # by-id names carry the VMware disk serial: they break on KVM too.
    assert (entries["/opt"].kind, entries["/opt"].needs_rewrite) == ("by_id", True)
    assert (entries["/proc"].kind, entries["/proc"].needs_rewrite) == ("special", False)


def test_device_classification_edge_cases() -> None:
    assert classify_device("/dev/vg-data/lv").kind == "lvm"
    assert classify_device("/dev/mapper/luks-1234", {"/dev/vg0/root"}).kind == "mapper"
    assert classify_device("/dev/mapper/my--vg-root", {"/dev/my-vg/root"}).kind == "lvm"
    assert classify_device("PARTUUID=abcd-01").kind == "partuuid"
    assert classify_device("server:/export").kind == "network"
    assert classify_device("/dev/hda2").needs_rewrite


def test_crypttab_entries() -> None:
    [entry] = parse_crypttab(CRYPTTAB)
    assert (entry.name, entry.device.kind, entry.keyfile, entry.options) == \
        ("cryptdata", "uuid", None, "luks")


def test_network_configs_of_every_kind(tree: Path) -> None:
    found = {(c.source, c.interface, c.mac, c.method) for c in network_configs(DirFiles(tree))}
    assert ("ifupdown", "ens192", None, "dhcp") in found
    assert ("netplan", "ens192", "00:50:56:aa:bb:cc", "dhcp") in found
    assert ("netplan", "ens224", None, "static") in found
    assert ("networkmanager", "ens160", "00:50:56:11:22:33", "dhcp") in found
    assert ("ifcfg", "eth0", "00:50:56:44:55:66", "dhcp") in found
    assert ("systemd-networkd", "lan0", "00:50:56:77:88:99", "rename") in found
    assert ("systemd-networkd", "lan0", None, "dhcp") in found
    assert not any(c.interface == "lo" and c.method for c in network_configs(DirFiles(tree))
                   if c.source != "ifupdown")


def test_initramfs_early_microcode_then_zstd(tmp_path: Path) -> None:
    image = tmp_path / "initrd.img"
    make_initramfs(image, VIRTIO_KOS[:2], "6.1.0-x")
    result = scan_initramfs_file("/boot/initrd.img", image, {"virtio_pci"})
    assert result.compression == ["none", "zstd"]
    assert result.virtio == {"virtio_blk": True, "virtio_scsi": True, "virtio_net": False,
                             "virtio_pci": True}  # virtio_pci counted from modules.builtin


def test_initramfs_garbage_reports_error_not_crash(tmp_path: Path) -> None:
    image = tmp_path / "initrd.img"
    image.write_bytes(b"\x13\x37" * 500)
    result = scan_initramfs_file("/boot/initrd.img", image, set())
    assert result.virtio is None and "unknown data" in (result.error or "")


def test_kernel_facts_from_tree(tree: Path) -> None:
    files = DirFiles(tree)
    good, bare = kernel_facts(files, GOOD_KERNEL), kernel_facts(files, BARE_KERNEL)
    assert good.virtio_ready() is True
    assert bare.initramfs is not None and bare.initramfs.virtio == {
        "virtio_blk": False, "virtio_scsi": False, "virtio_net": False, "virtio_pci": True}
    assert bare.builtin == ["virtio_pci"] and bare.virtio_ready() is False


def test_dirfiles_confines_absolute_symlinks(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    os.symlink("/etc/shadow", tmp_path / "etc/passwd")
    assert DirFiles(tmp_path).read("/etc/passwd") is None  # not the host's /etc/shadow


