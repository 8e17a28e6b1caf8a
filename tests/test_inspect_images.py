"""`vmshift inspect` on real built images: a Debian-like Linux disk, a Windows
disk (NTFS, hives made with hivex, GPT with an ESP, a BitLocker volume), a
LUKS2 disk and an empty 3 TiB MBR disk, inspected as ONE VM.

Cost: one appliance launch to build the disks, one for the inspection (the
same `vmshift inspect --json` process answers every test in this module).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.inspect_images import BARE_KERNEL, GOOD_KERNEL, build_guest_disks, sha256

ORDER = ("linux", "windows", "luks", "bigmbr")


@pytest.fixture(scope="module")
def disks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_guest_disks(tmp_path_factory.mktemp("inspect-images"))


@pytest.fixture(scope="module")
def run(disks: dict[str, Path]) -> dict:
    """One real `vmshift inspect --json` process, with libguestfs' call trace on."""
    before = {n: sha256(p) for n, p in disks.items()}
    env = {**os.environ, "LIBGUESTFS_TRACE": "1"}
    exe = Path(sys.executable).parent / "vmshift"
    proc = subprocess.run([str(exe), "inspect", "--json", *(str(disks[n]) for n in ORDER)],
                          capture_output=True, text=True, env=env, timeout=1200)
    after = {n: sha256(p) for n, p in disks.items()}
    return {"rc": proc.returncode, "doc": json.loads(proc.stdout), "stderr": proc.stderr,
            "before": before, "after": after}


def guest(run: dict, ostype: str) -> dict:
    [g] = [g for g in run["doc"]["inspection"]["guests"] if g["type"] == ostype]
    return g


def test_exactly_one_appliance_launch(run: dict) -> None:
    # libguestfs traces every API call of the process: launch appears once.
    assert run["stderr"].count("libguestfs: trace: launch\n") == 1
    # ... and its LAUNCH_DONE event fired once (counted by the session).
    assert run["doc"]["inspection"]["appliance_launches"] == 1


def test_sources_unchanged(run: dict) -> None:
    assert run["before"] == run["after"]


def test_exit_3_and_blockers_listed(run: dict) -> None:
    assert run["rc"] == 3
    assert set(run["doc"]["blockers"]) == {"guest.encrypted_volume", "guest.windows_hibernation"}
    assert run["doc"]["schema_version"] >= 1 and run["doc"]["inspection"]["schema"] == 1


def test_linux_guest_facts(run: dict) -> None:
    g = guest(run, "linux")
    assert (g["distro"], g["major"], g["hostname"]) == ("debian", 12, "esxi-web01")
    assert (g["package_format"], g["package_management"]) == ("deb", "apt")
    assert (g["bootloader"], g["firmware_needed"]) == ("grub2", "bios")
    assert g["vmware_tools"] is True
    assert {"name": "open-vm-tools", "version": "2:12.2.0-1+deb12u1", "vmware_tools": True} \
        in g["applications"]
    root = next(e for e in g["fstab"] if e["mountpoint"] == "/")
    assert root["device"] == {"spec": "/dev/sda1", "kind": "device_path", "needs_rewrite": True}
    assert {"source": "ifupdown", "file": "/etc/network/interfaces", "interface": "ens192",
            "mac": None, "method": "dhcp"} in g["network"]
    assert {"source": "netplan", "file": "/etc/netplan/01-netcfg.yaml", "interface": "ens192",
            "mac": "00:50:56:aa:bb:cc", "method": "dhcp"} in g["network"]


def test_linux_initramfs_virtio(run: dict) -> None:
    kernels = {k["version"]: k for k in guest(run, "linux")["kernels"]}
    good, bare = kernels[GOOD_KERNEL], kernels[BARE_KERNEL]
    assert good["initramfs"]["compression"] == ["none", "zstd"]  # early microcode, then zstd
    assert all(good["initramfs"]["virtio"].values())
    assert bare["initramfs"]["virtio"] == {"virtio_blk": False, "virtio_scsi": False,
                                           "virtio_net": False, "virtio_pci": True}
    assert bare["builtin"] == ["virtio_pci"]


def test_windows_guest_facts(run: dict) -> None:
    g = guest(run, "windows")
    w = g["windows"]
    assert g["product_name"] == w["product_name"] == "Windows Server 2019 Standard"
    assert (w["version"], w["build"], w["edition"]) == ("10.0", "17763", "ServerStandard")
    assert (w["system_root"], w["current_control_set"]) == ("C:\\Windows", "ControlSet001")
    assert g["hostname"] == "WIN-PAYROLL" and g["arch"] == "x86_64"
    present = {n: s["present"] for n, s in w["services"].items()}
    assert present == {"viostor": True, "vioscsi": False, "netkvm": True}
    assert w["services"]["viostor"]["start"] == 0
    assert g["vmware_tools"] is True and w["vmware_tools"] is True
    assert any(a["name"] == "VMware Tools" and a["vmware_tools"] for a in g["applications"])
    assert w["device_install_blocked"] is True
    assert w["device_install_restrictions"] == {"DenyUnspecified": 1}
    assert (w["hiberboot_enabled"], w["hiberfil_present"], w["hiberfil_hibernated"]) == \
        (True, True, True)
    assert g["firmware_needed"] == "uefi" and g["bootloader"] == "windows-bootmgr"


def test_disks_filesystems_and_encryption(run: dict) -> None:
    insp = run["doc"]["inspection"]
    tables = [(Path(d["source"]).name, d["partition_table"]) for d in insp["disks"]]
    assert tables == [("linux.qcow2", "msdos"), ("windows.qcow2", "gpt"), ("luks.raw", None),
                      ("big-mbr.qcow2", "msdos")]
    esp = insp["disks"][1]["partitions"][0]
    assert esp["esp"] is True and esp["start_bytes"] == 2048 * 512
    assert {(e["device"], e["kind"]) for e in insp["encrypted"]} == \
        {("/dev/sdc", "luks"), ("/dev/sdb3", "bitlocker")}
    by_mp = {f["mountpoint"]: f for f in insp["filesystems"] if f["mountpoint"]}
    assert by_mp["/"]["type"] == "ext4" and by_mp["C:"]["type"] == "ntfs"
    assert 150 * 2**20 < by_mp["/"]["free_bytes"] < 300 * 2**20
    assert 150 * 2**20 < by_mp["C:"]["free_bytes"] < 250 * 2**20
    vfat = next(f for f in insp["filesystems"] if f["type"] == "vfat")
    assert vfat["free_bytes"] > 90 * 2**20  # measured though no guest mounts it


def test_rules_on_the_inspection(run: dict) -> None:
    out = {f["rule_id"]: f for f in run["doc"]["findings"]}
    fired = {r for r, f in out.items() if f["outcome"] == "fired"}
    assert fired == {"guest.encrypted_volume", "guest.windows_hibernation", "guest.mbr_over_2tib",
                     "guest.virtio_missing_linux", "guest.fstab_device_names",
                     "guest.device_install_restricted", "guest.vmware_tools"}
    assert out["guest.virtio_missing_windows"]["outcome"] == "passed"  # viostor is there
    assert out["guest.free_space"]["outcome"] == "passed"
    assert out["vsphere.cbt_disabled"]["outcome"] == "not_evaluable"  # bare disks: no CBT facts
    assert any(BARE_KERNEL in d for d in out["guest.virtio_missing_linux"]["details"])


def test_human_table_from_the_same_facts(run: dict) -> None:
    from vmshift.inspect.report import render_inspection
    from vmshift.inspect.result import Inspection

    # The human renderer must cope with every field the JSON carries.
    text = "\n".join(render_inspection(_inspection_from(run["doc"]["inspection"])))
    assert "ens192" in text and "NEEDS REWRITE" in text and "hibernated" in text
    assert isinstance(_inspection_from(run["doc"]["inspection"]), Inspection)


def _inspection_from(doc: dict):  # type: ignore[no-untyped-def]
    """Rebuild the dataclasses from the JSON document (round trip of the schema)."""
    from vmshift.inspect import result as r

    def guest_from(g: dict) -> r.Guest:
        g = dict(g)
        g["kernels"] = None if g["kernels"] is None else [
            r.Kernel(**{**k, "initramfs": r.Initramfs(**k["initramfs"]) if k["initramfs"]
                        else None}) for k in g["kernels"]]
        g["fstab"] = [r.FstabEntry(**{**e, "device": r.DeviceRef(**e["device"])})
                      for e in g["fstab"] or []]
        g["crypttab"] = [r.CrypttabEntry(**{**e, "device": r.DeviceRef(**e["device"])})
                         for e in g["crypttab"] or []]
        g["network"] = [r.NetConfig(**n) for n in g["network"] or []]
        g["applications"] = [r.Application(**a) for a in g["applications"] or []]
        if g["windows"]:
            w = dict(g["windows"])
            w["services"] = {k: r.WindowsService(**v) for k, v in w["services"].items()}
            g["windows"] = r.WindowsInfo(**w)
        return r.Guest(**g)

    return r.Inspection(
        disks=[r.DiskInfo(**{**d, "partitions": [r.Partition(**p) for p in d["partitions"]]})
               for d in doc["disks"]],
        filesystems=[r.Filesystem(**f) for f in doc["filesystems"]],
        encrypted=[r.EncryptedVolume(**e) for e in doc["encrypted"]],
        guests=[guest_from(g) for g in doc["guests"]],
        appliance_launches=doc["appliance_launches"], notes=doc["notes"], schema=doc["schema"])
