"""The neutral model: unknown is None, known-empty is [], and it serialises."""

import dataclasses
import json

from vmshift.model import (
    BusType,
    Controller,
    CpuTopology,
    Disk,
    DiskMode,
    Firmware,
    FirmwareType,
    Nic,
    VirtualMachine,
)
from vmshift.output import to_jsonable


def test_a_fresh_model_knows_nothing():
    vm = VirtualMachine()
    unknown = {f.name for f in dataclasses.fields(vm)
               if getattr(vm, f.name) is None}
    # Every collection and every scalar fact starts unknown, not empty or guessed.
    for name in ("name", "uuid", "memory_mib", "disks", "nics", "cdroms", "serials",
                 "snapshots", "cbt_enabled", "cpu_hotadd", "memory_hotadd",
                 "cpu_affinity", "passthrough", "usb_controllers"):
        assert name in unknown, name
    assert vm.firmware == Firmware(None, None, None, None)
    assert vm.cpu == CpuTopology()
    assert vm.notes == []


def test_nested_defaults_are_not_shared_between_instances():
    a, b = VirtualMachine(), VirtualMachine()
    a.firmware.type = FirmwareType.EFI
    a.notes.append("x")
    assert b.firmware.type is None and b.notes == []


def test_disk_paths_keep_source_order_and_skip_unknown():
    vm = VirtualMachine(disks=[Disk("b.vmdk"), Disk(None), Disk("a.vmdk")])
    assert vm.disk_paths() == ["b.vmdk", "a.vmdk"]
    assert VirtualMachine().disk_paths() == []


def test_model_serialises_to_plain_json():
    vm = VirtualMachine(
        name="web01", memory_mib=2048, firmware=Firmware(FirmwareType.EFI, True),
        disks=[Disk("/x/web01.vmdk", "vmdk", Controller(BusType.SCSI, 0, "pvscsi"), unit=0,
                    capacity_bytes=10 << 30, mode=DiskMode.INDEPENDENT_PERSISTENT)],
        nics=[Nic(mac="00:50:56:01:02:03", model="vmxnet3", network="VM Network")],
    )
    doc = json.loads(json.dumps(to_jsonable(vm)))
    assert doc["firmware"] == {"type": "efi", "secure_boot": True,
                               "nvram_present": None, "tpm_present": None,
                               "nvram_path": None, "tpms": None}
    assert doc["disks"][0]["controller"] == {"bus": "scsi", "index": 0, "model": "pvscsi"}
    assert doc["disks"][0]["mode"] == "independent_persistent"
    assert doc["nics"][0]["mac"] == "00:50:56:01:02:03"
    assert doc["cdroms"] is None  # unknown stays unknown through serialisation
