"""Every pre-flight rule fires, passes, and is not_evaluable on hand-built facts.

No appliance: the models and inspection results are built by hand, exactly
as a reader and inspect_disks would produce them. A rule added to rules.json
without all three cases here fails test_every_rule_has_three_cases.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from vmshift.cli import main
from vmshift.inspect.report import render_findings
from vmshift.inspect.result import (
    DeviceRef,
    DiskInfo,
    EncryptedVolume,
    Filesystem,
    FstabEntry,
    Guest,
    Initramfs,
    Inspection,
    Kernel,
    WindowsInfo,
    WindowsService,
)
from vmshift.inspect.rules import Outcome, RuleOptions, blockers, evaluate, load_rules
from vmshift.model import (
    Disk,
    DiskMode,
    DiskSharing,
    Firmware,
    GuestHints,
    Nic,
    PassthroughDevice,
    RdmMode,
    Snapshot,
    VirtualMachine,
)

GiB = 2**30


def insp(**kw: object) -> Inspection:
    base: dict = {"disks": [], "filesystems": [], "encrypted": [], "guests": []}
    base.update(kw)
    return Inspection(**base)


def disk(**kw: object) -> Disk:
    base: dict = {"source": "[ds1] vm/vm.vmdk", "capacity_bytes": 10 * GiB, "datastore": "ds1",
                  "mode": DiskMode.PERSISTENT, "sharing": DiskSharing.NONE, "passthrough": False,
                  "cbt_enabled": True}
    base.update(kw)
    return Disk(**base)


def linux(**kw: object) -> Guest:
    base: dict = {"root": "/dev/sda1", "type": "linux", "distro": "debian", "major": 12,
                  "minor": 0, "hostname": "web01", "kernels": [], "fstab": [], "crypttab": [],
                  "vmware_tools": False}
    base.update(kw)
    return Guest(**base)


def windows(info: WindowsInfo | None = None, **kw: object) -> Guest:
    base: dict = {"root": "/dev/sda2", "type": "windows", "major": 10, "minor": 0,
                  "product_name": "Windows Server 2019", "windows": info or win_info(),
                  "vmware_tools": False}
    base.update(kw)
    return Guest(**base)


def win_info(**kw: object) -> WindowsInfo:
    info = WindowsInfo("C:\\Windows", "/Windows", "Windows Server 2019", "10.0", "17763",
                       "ServerStandard", "Server", "ControlSet001")
    info.services = {n: WindowsService(n, n == "viostor") for n in ("viostor", "vioscsi",
                                                                      "netkvm")}
    info.device_install_restrictions, info.device_install_blocked = {}, False
    info.hiberboot_enabled, info.hiberfil_present, info.hiberfil_hibernated = False, False, False
    for k, v in kw.items():
        setattr(info, k, v)
    return info


def kernel(version: str, virtio: dict[str, bool] | None) -> Kernel:
    return Kernel(version, f"/boot/vmlinuz-{version}", f"/lib/modules/{version}",
                  initramfs=Initramfs(f"/boot/initrd.img-{version}", ["zstd"], virtio))


ALL_VIRTIO = dict.fromkeys(("virtio_blk", "virtio_scsi", "virtio_net", "virtio_pci"), True)
NO_VIRTIO = dict.fromkeys(ALL_VIRTIO, False)


def fs(mp: str, free_mib: int | None, dev: str = "/dev/sda1") -> Filesystem:
    return Filesystem(dev, "ext4", free_bytes=None if free_mib is None else free_mib * 2**20,
                      mountpoint=mp)


def blank_disk(boot_signature: bool | None) -> DiskInfo:
    """A whole disk with no partition table (what else is on it, the caller says)."""
    return DiskInfo("data.qcow2", "/dev/sda", "qcow2", 64 * 2**20,
                    boot_signature=boot_signature)


@dataclass
class Case:
    vm: VirtualMachine
    inspection: Inspection | None = None
    options: RuleOptions | None = None


V = VirtualMachine
C = Case
CASES: dict[str, dict[str, Callable[[], Case]]] = {
    "vsphere.cbt_disabled": {
        "fired": lambda: C(V(cbt_enabled=False)),
        "passed": lambda: C(V(cbt_enabled=True, disks=[disk(cbt_enabled=True)])),
        "not_evaluable": lambda: C(V(disks=[Disk(source="a.qcow2")])),  # a bare disk
    },
    "vsphere.snapshots_present": {
        "fired": lambda: C(V(snapshots=[Snapshot("before-upgrade")])),
        "passed": lambda: C(V(snapshots=[])),
        "not_evaluable": lambda: C(V()),
    },
    "vsphere.consolidation_needed": {
        "fired": lambda: C(V(consolidation_needed=True)),
        "passed": lambda: C(V(consolidation_needed=False)),
        "not_evaluable": lambda: C(V()),
    },
    "vsphere.shared_disk": {
        "fired": lambda: C(V(disks=[disk(), disk(sharing=DiskSharing.MULTI_WRITER)])),
        "passed": lambda: C(V(disks=[disk()])),
        "not_evaluable": lambda: C(V(disks=[Disk(source="a.qcow2")])),
    },
    "vsphere.rdm_disk": {
        "fired": lambda: C(V(disks=[disk(rdm=RdmMode.PHYSICAL)])),
        "passed": lambda: C(V(disks=[disk()])),
        "not_evaluable": lambda: C(V(disks=[Disk(source="a.qcow2")])),
    },
    "vsphere.independent_disk": {
        "fired": lambda: C(V(disks=[disk(mode=DiskMode.INDEPENDENT_PERSISTENT)])),
        "passed": lambda: C(V(disks=[disk()])),
        "not_evaluable": lambda: C(V(disks=[Disk(source="a.qcow2")])),
    },
    "vsphere.invalid_disk_capacity": {
        "fired": lambda: C(V(disks=[disk(capacity_bytes=0)])),
        "passed": lambda: C(V(disks=[disk()])),
        "not_evaluable": lambda: C(V(disks=[Disk(source="[ds1] x.vmdk")])),
    },
    "vsphere.disk_not_on_datastore": {
        "fired": lambda: C(V(source_kind="vsphere", disks=[disk(datastore=None)])),
        "passed": lambda: C(V(source_kind="vsphere", disks=[disk()])),
        "not_evaluable": lambda: C(V(disks=[disk()])),  # the source kind is unknown
    },
    "vsphere.passthrough_device": {
        "fired": lambda: C(V(passthrough=[PassthroughDevice("pci", "0000:3b:00.0")])),
        "passed": lambda: C(V(passthrough=[])),
        "not_evaluable": lambda: C(V()),
    },
    "vsphere.sriov_device": {
        "fired": lambda: C(V(passthrough=[PassthroughDevice("sriov", label="vf0")])),
        "passed": lambda: C(V(passthrough=[], nics=[Nic(model="vmxnet3")])),
        "not_evaluable": lambda: C(V(nics=[Nic(model="vmxnet3")])),
    },
    "vsphere.usb_device": {
        "fired": lambda: C(V(passthrough=[PassthroughDevice("usb", label="dongle")])),
        "passed": lambda: C(V(passthrough=[PassthroughDevice("pci")])),
        "not_evaluable": lambda: C(V()),
    },
    "vsphere.tpm_present": {
        "fired": lambda: C(V(firmware=Firmware(tpm_present=True))),
        "passed": lambda: C(V(firmware=Firmware(tpm_present=False))),
        "not_evaluable": lambda: C(V()),
    },
    "vsphere.cpu_hotplug": {
        "fired": lambda: C(V(cpu_hotadd=True)),
        "passed": lambda: C(V(cpu_hotadd=False)),
        "not_evaluable": lambda: C(V()),
    },
    "vsphere.memory_hotplug": {
        "fired": lambda: C(V(memory_hotadd=True)),
        "passed": lambda: C(V(memory_hotadd=False)),
        "not_evaluable": lambda: C(V()),
    },
    "vsphere.affinity": {
        "fired": lambda: C(V(cpu_affinity=[], affinity_rules=["keep-apart-db"])),
        "passed": lambda: C(V(cpu_affinity=[], affinity_rules=[])),
        "not_evaluable": lambda: C(V()),  # a bare disk has no affinity facts
    },
    "vsphere.hostname_default": {
        "fired": lambda: C(V(guest=GuestHints(hostname="localhost.localdomain"))),
        "passed": lambda: C(V(), insp(guests=[linux(hostname="web01")])),  # from inspection
        "not_evaluable": lambda: C(V()),
    },
    "vsphere.name_not_rfc1123": {
        "fired": lambda: C(V(name="Web_Server 01")),
        "passed": lambda: C(V(name="web-server-01")),
        "not_evaluable": lambda: C(V()),
    },
    "vsphere.unsupported_os": {
        "fired": lambda: C(V(guest=GuestHints(vmware_guest_id="winXPProGuest"))),
        "passed": lambda: C(V(guest=GuestHints(vmware_guest_id="winXPProGuest")),
                            insp(guests=[windows()])),  # what is on the disk wins
        "not_evaluable": lambda: C(V()),
    },
    "guest.free_space": {
        "fired": lambda: C(V(), insp(filesystems=[fs("/", 5000), fs("/boot", 20, "/dev/sda2")])),
        "passed": lambda: C(V(), insp(filesystems=[fs("/", 101), fs("/boot", 51, "/dev/sda2"),
                                                   fs("/srv", 11, "/dev/sdb1")])),
        "not_evaluable": lambda: C(V(), insp(filesystems=[fs("/", None)])),
    },
    "guest.encrypted_volume": {
        "fired": lambda: C(V(), insp(encrypted=[EncryptedVolume("/dev/sda3", "luks")])),
        "passed": lambda: C(V(), insp()),
        "not_evaluable": lambda: C(V(), None),
    },
    "guest.windows_hibernation": {
        "fired": lambda: C(V(), insp(guests=[windows(win_info(hiberboot_enabled=True))])),
        "passed": lambda: C(V(), insp(guests=[windows()])),
        "not_evaluable": lambda: C(V(), insp(guests=[windows(win_info(
            hiberboot_enabled=None, hiberfil_hibernated=None))])),
    },
    "guest.mbr_over_2tib": {
        "fired": lambda: C(V(), insp(disks=[DiskInfo("big.qcow2", "/dev/sda", "qcow2",
                                                     3 * 2**40, None, "msdos")])),
        "passed": lambda: C(V(), insp(disks=[DiskInfo("big.qcow2", "/dev/sda", "qcow2",
                                                      3 * 2**40, None, "gpt")])),
        "not_evaluable": lambda: C(V(), None),
    },
    "guest.virtio_missing_windows": {
        "fired": lambda: C(V(), insp(guests=[windows(win_info(services={
            "viostor": WindowsService("viostor", False),
            "vioscsi": WindowsService("vioscsi", False)}))])),
        "passed": lambda: C(V(), insp(guests=[windows(win_info(services={
            "viostor": WindowsService("viostor", False)}))]),
            RuleOptions(driver_source="/srv/virtio-win.iso")),
        "not_evaluable": lambda: C(V(), insp(guests=[windows(win_info(services={}))])),
    },
    "guest.virtio_missing_linux": {
        "fired": lambda: C(V(), insp(guests=[linux(kernels=[kernel("6.1.0-9", NO_VIRTIO)])])),
        "passed": lambda: C(V(), insp(guests=[linux(kernels=[kernel("6.1.0-9", ALL_VIRTIO)])])),
        "not_evaluable": lambda: C(V(), insp(guests=[linux(kernels=[kernel("6.1.0-9", None)])])),
    },
    "guest.no_os": {
        "fired": lambda: C(V(), insp()),
        "passed": lambda: C(V(), insp(guests=[linux()])),
        "not_evaluable": lambda: C(V(), None),
    },
    "guest.unrecognised_disk": {
        "fired": lambda: C(V(), insp(disks=[blank_disk(boot_signature=False)],
                                     filesystems=[Filesystem("/dev/sda", "unknown")])),
        "passed": lambda: C(V(), insp(disks=[blank_disk(boot_signature=False)],
                                      filesystems=[Filesystem("/dev/sda", "ext4")])),
        "not_evaluable": lambda: C(V(), insp(disks=[blank_disk(boot_signature=None)])),
    },
    "guest.fstab_device_names": {
        "fired": lambda: C(V(), insp(guests=[linux(fstab=[FstabEntry(
            2, DeviceRef("/dev/sda1", "device_path", True), "/", "ext4", "defaults")])])),
        "passed": lambda: C(V(), insp(guests=[linux(fstab=[FstabEntry(
            2, DeviceRef("UUID=1234", "uuid", False), "/", "ext4", "defaults")])])),
        "not_evaluable": lambda: C(V(), insp(guests=[linux(fstab=None)])),
    },
    "guest.device_install_restricted": {
        "fired": lambda: C(V(), insp(guests=[windows(win_info(
            device_install_blocked=True, device_install_restrictions={"DenyUnspecified": 1}))])),
        "passed": lambda: C(V(), insp(guests=[windows()])),
        "not_evaluable": lambda: C(V(), insp(guests=[windows(win_info(
            device_install_blocked=None))])),
    },
    "guest.vmware_tools": {
        "fired": lambda: C(V(), insp(guests=[linux(vmware_tools=True)])),
        "passed": lambda: C(V(), insp(guests=[linux(vmware_tools=False)])),
        "not_evaluable": lambda: C(V(), None),
    },
}
PARAMS = [(rid, outcome) for rid, cases in CASES.items() for outcome in cases]


def test_every_rule_has_three_cases() -> None:
    assert {r.id for r in load_rules()} == set(CASES)
    assert all(set(c) == {"fired", "passed", "not_evaluable"} for c in CASES.values())


@pytest.mark.parametrize(("rule_id", "outcome"), PARAMS, ids=[f"{r}-{o}" for r, o in PARAMS])
def test_rule_outcome(rule_id: str, outcome: str) -> None:
    case = CASES[rule_id][outcome]()
    findings = {f.rule_id: f for f in evaluate(case.vm, case.inspection, options=case.options)}
    finding = findings[rule_id]
    assert finding.outcome == Outcome(outcome), finding.details
    assert bool(finding.details) == (outcome == "fired")


def test_metadata_is_data_with_valid_categories() -> None:
    rules = load_rules()
    assert len(rules) >= 28
    assert all(r.category in ("blocker", "warning", "info") and r.message and r.remedy
               for r in rules)
    by_id = {r.id: r for r in rules}
    assert by_id["guest.virtio_missing_windows"].category == "blocker"
    assert by_id["guest.virtio_missing_linux"].category == "warning"
    assert by_id["guest.free_space"].params["min_bytes"]["/boot"] == 50 * 2**20


def test_free_space_minimums_per_mountpoint() -> None:
    # C: needs 100 MiB, a data filesystem only 10 MiB.
    findings = evaluate(V(), insp(filesystems=[fs("C:", 99, "/dev/sda2"),
                                               fs("/data", 11, "/dev/sdb1")]))
    [f] = [f for f in findings if f.rule_id == "guest.free_space"]
    assert f.outcome == Outcome.FIRED and len(f.details) == 1 and f.details[0].startswith("C:")


def test_blockers_and_rules_only_rendering() -> None:
    findings = evaluate(V(), insp(encrypted=[EncryptedVolume("/dev/sdb2", "bitlocker")],
                                  guests=[linux()]))
    assert [f.rule_id for f in blockers(findings)] == ["guest.encrypted_volume"]
    lines = "\n".join(render_findings(findings, verbose=False))
    assert "guest.encrypted_volume" in lines and "bitlocker on /dev/sdb2" in lines
    assert "guest.no_os" not in lines  # passed rules are left out of --rules-only


def test_list_rules_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--list-rules", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "rules" and doc["schema_version"] >= 1
    assert {r["id"] for r in doc["rules"]} == set(CASES)
    assert main(["inspect", "--list-rules"]) == 0
    out = capsys.readouterr().out
    assert "vsphere.cbt_disabled" in out and "blocker" in out


def test_inspect_without_image_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect"]) == 2
    assert "IMAGE" in capsys.readouterr().err
