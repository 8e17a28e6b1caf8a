"""The Windows driver's planning pieces, without an appliance: the catalogue,
the virtio-win reader (a real directory and a real ISO made by xorriso), NIC
matching, the first-boot steps and the registry encoding. The conversion of
real NTFS images is in test_convert_windows.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vmshift.drivers import registry as reg
from vmshift.drivers.edits import Edit
from vmshift.drivers.windows import _ordered
from vmshift.drivers.windows.catalogue import is_server, os_folders
from vmshift.drivers.windows.firstboot import match_nics, network_step, tools_step
from vmshift.drivers.windows.virtiowin import open_virtio_win
from vmshift.errors import BadInput
from vmshift.inspect.result import WindowsNic
from vmshift.model import Nic


@pytest.mark.parametrize("version, server, folders", [
    ((6, 1, 7601), True, ("2k8R2",)),
    ((6, 1, 7601), False, ("w7",)),
    ((6, 3, 9600), True, ("2k12R2",)),
    ((6, 3, 9600), False, ("w8.1",)),
    ((10, 0, 14393), True, ("2k16",)),
    ((10, 0, 17763), True, ("2k19", "2k16")),
    ((10, 0, 20348), True, ("2k22", "2k19")),
    ((10, 0, 26100), True, ("2k25", "2k22")),
    ((10, 0, 19045), False, ("w10",)),
    ((10, 0, 22631), False, ("w11", "w10")),
    ((6, 0, 6002), True, ()),  # Vista / 2008: not in virtio-win any more
])
def test_catalogue_picks_the_release_folder_by_build(version, server, folders):
    assert os_folders(*version, server) == folders


def test_server_is_told_by_installation_type_then_product_name():
    assert is_server("Server", None) and is_server("Server Core", None)
    assert not is_server("Client", "Windows Server 2019")  # the type wins
    assert is_server(None, "Windows Server 2008 R2 Standard")
    assert not is_server(None, "Windows 7 Professional")


def _tree(root: Path) -> Path:
    for rel in ("viostor/2k19/amd64/viostor.sys", "viostor/2k19/amd64/viostor.inf",
                "viostor/2k16/amd64/viostor.sys", "NetKVM/2k16/amd64/netkvm.sys",
                "NetKVM/2k16/amd64/netkvm.inf", "vioscsi/2k19/x86/vioscsi.sys",
                "guest-agent/qemu-ga-x86_64.msi"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"fake {rel}\n")
    return root


@pytest.fixture(params=["directory", "iso"])
def virtio_win(request, tmp_path) -> Path:
    root = _tree(tmp_path / "tree")
    if request.param == "directory":
        return root
    iso = tmp_path / "virtio-win.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-r", "-J", "-V", "virtio-win", "-o",
                    str(iso), str(root)], check=True, capture_output=True)
    return iso


def test_virtio_win_selects_per_driver_with_fallback_and_extracts(virtio_win, tmp_path):
    tree = open_virtio_win(virtio_win)
    sel = tree.select(("2k19", "2k16"), "x86_64")
    assert sel.drivers["viostor"][1:] == ("2k19", ["viostor/2k19/amd64/viostor.inf",
                                                   "viostor/2k19/amd64/viostor.sys"])
    assert sel.drivers["netkvm"][1] == "2k16"  # NetKVM matched case-insensitively, older folder
    assert "vioscsi" in sel.missing  # only an x86 folder: not for an x86_64 guest
    assert sel.qemu_ga == "guest-agent/qemu-ga-x86_64.msi"
    host = tree.extract(["viostor/2k19/amd64/viostor.sys"], tmp_path / "out")
    assert host["viostor/2k19/amd64/viostor.sys"].read_text() == \
        "fake viostor/2k19/amd64/viostor.sys\n"


def test_virtio_win_bad_sources_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match="no such file"):
        open_virtio_win(tmp_path / "absent.iso")
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"not an iso" * 100)
    with pytest.raises(BadInput, match="junk.iso: not a readable ISO"):
        open_virtio_win(junk)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="holds no files"):
        open_virtio_win(tmp_path / "empty")


def _wnic(guid: str, mac: str | None = None, dhcp: bool = False) -> WindowsNic:
    return WindowsNic(guid, "vmxnet3 Ethernet Adapter", "pci\\ven_15ad&dev_07b0", mac, dhcp,
                      ["192.168.50.10/24"], ["192.168.50.1"], ["192.168.50.2"])


def test_nics_pair_by_network_address_then_alone_then_in_order():
    vm = [Nic(label="ethernet0", mac="00:50:56:aa:00:01"),
          Nic(label="ethernet1", mac="00:50:56:aa:00:02")]
    got, notes = match_nics([_wnic("{A}", "00:50:56:aa:00:02"), _wnic("{B}")], vm)
    assert [(r.guid, r.mac, r.matched_by) for r in got] == [
        ("{A}", "00:50:56:aa:00:02", "network_address"), ("{B}", "00:50:56:aa:00:02", "order")]
    got, _ = match_nics([_wnic("{A}")], vm[:1])
    assert (got[0].mac, got[0].matched_by) == ("00:50:56:aa:00:01", "only_nic")
    got, notes = match_nics([_wnic("{A}")], vm)  # one NIC in Windows, two in the VM
    assert got == [] and "cannot tell which NIC had {A}" in notes[0]


def test_network_step_sets_addresses_masks_gateway_and_dns_by_mac():
    (r,), _ = match_nics([WindowsNic("{A}", None, "pci\\x", None, False,
                                     ["10.1.2.3/24", "10.1.2.4/25"], ["10.1.2.1"],
                                     ["10.1.2.53"], ["2001:db8::53"])],
                         [Nic(label="e0", mac="00:50:56:aa:00:01")])
    what, code = network_step(r)
    assert code == ("Restore-Nic '00:50:56:AA:00:01' @('10.1.2.3','10.1.2.4') "
                    "@('255.255.255.0','255.255.255.128') @('10.1.2.1') @('10.1.2.53') "
                    "@('2001:db8::53')")
    assert "10.1.2.3/24, 10.1.2.4/25 via 10.1.2.1" in what and "matched by only_nic" in what


def test_tools_uninstall_is_made_silent_for_msi_only():
    what, code = tools_step("MsiExec.exe /X{4C5B9D5E-7A0E-4E0B-8F0B-1C2D3E4F5A6B}")
    assert code == ("Run 'msiexec.exe' '/x {4C5B9D5E-7A0E-4E0B-8F0B-1C2D3E4F5A6B} /qn "
                    "/norestart REBOOT=ReallySuppress'")
    _, code = tools_step("C:\\Program Files\\VMware\\uninstall.exe")
    assert code == "Run 'cmd.exe' '/c C:\\Program Files\\VMware\\uninstall.exe'"


def test_registry_values_encode_as_windows_stores_them():
    assert reg.encode(reg.REG_SZ, "ab") == b"a\0b\0\0\0"
    assert reg.encode(reg.REG_MULTI_SZ, ["a", "b"]) == b"a\0\0\0b\0\0\0\0\0"
    assert reg.encode(reg.REG_DWORD, 0x10) == b"\x10\0\0\0"
    assert reg.show(reg.binary("", b"\x01\xff"))["name"] == "(default)"


def test_plan_order_puts_files_first_and_groups_each_hive():
    e = [Edit("r", "registry", "/W/SOFTWARE", "x"), Edit("d", "upload", "/f", "y", source="h"),
         Edit("r", "registry", "/W/SYSTEM", "z"), Edit("r", "registry", "/W/SOFTWARE", "w")]
    assert [(x.action, x.path, x.why) for x in _ordered(e)] == [
        ("upload", "/f", "y"), ("registry", "/W/SOFTWARE", "x"),
        ("registry", "/W/SOFTWARE", "w"), ("registry", "/W/SYSTEM", "z")]
