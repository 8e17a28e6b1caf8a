"""The VMX reader: syntax, devices, paths and the facts the model carries."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmshift.cli import main
from vmshift.cliutil import JSON_MODE
from vmshift.convert.maps import StorageMap, parse_storage_map
from vmshift.convert.vmx import read_vmx
from vmshift.convert.vmx import read_vmx_model_from_bytes as read_vmx_bytes
from vmshift.convert.vmx.disks import read_vmx_with_disks, reader
from vmshift.errors import BadInput
from vmshift.model import BusType, ConnectionType, DiskMode, DiskSharing, FirmwareType


def vmx(tmp_path: Path, text: str | bytes, name: str = "vm.vmx") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_syntax_crlf_comments_case_and_escapes(tmp_path: Path) -> None:
    path = vmx(tmp_path, b'#!/usr/bin/vmware\r\n.encoding = "UTF-8"\r\n'
                         b'# a comment\r\n\r\nDISPLAYNAME = "caf|C3|A9 |22q|22 |7C"  # trailing\r\n'
                         b'MemSize = "2048"\r\nnumvcpus = 4\r\n')
    vm = read_vmx(path)
    assert vm.name == 'café "q" |'
    assert vm.memory_mib == 2048 and vm.cpu.vcpus == 4


def test_bom_and_control_characters_in_annotation(tmp_path: Path) -> None:
    vm = read_vmx(vmx(tmp_path, b'\xef\xbb\xbfdisplayName = "x"\nannotation = "a|07b|0Ac"\n'))
    assert vm.name == "x" and vm.annotation == "a\ufffdb\nc"


def test_vmx2xml_json_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = vmx(tmp_path, 'displayName = "j"\nmemSize = "1024"\nethernet0.present = "TRUE"\n'
                         'ethernet0.networkName = "VM Network"\n'
                         'ethernet0.addressType = "static"\n'
                         'ethernet0.address = "00:50:56:01:02:03"\n')
    netmap = tmp_path / "net.map"
    netmap.write_text("VM Network=bridge:br0\n")
    assert main(["vmx2xml", "--json", "--virt-type", "qemu", "--network-map", str(netmap),
                 str(path)]) == 0
    JSON_MODE["on"] = False  # main() leaves this process-global flag set
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and doc["kind"] == "domain_xml"
    assert doc["machine"] == "q35" and doc["virt_type"] == "qemu"
    assert "<source bridge=\"br0\"/>" in doc["xml"]


def test_legacy_encoding(tmp_path: Path) -> None:
    path = vmx(tmp_path, '.encoding = "windows-1252"\nannotation = "Gr\xfc\xdfe"\n'
                         .encode("latin-1"))
    assert read_vmx(path).annotation == "Grüße"


def test_duplicate_key_last_wins_with_warning(tmp_path: Path) -> None:
    vm = read_vmx(vmx(tmp_path, 'memsize = "512"\nmemSize = "1024"\n'))
    assert vm.memory_mib == 1024
    assert any("given again" in n and "line 1" in n for n in vm.notes)


def test_name_defaults_to_stem_and_vmware_defaults(tmp_path: Path) -> None:
    vm = read_vmx(vmx(tmp_path, 'guestOS = "windows2019srv-64"\n', name="web01.vmx"))
    assert vm.name == "web01" and vm.memory_mib == 32 and vm.cpu.vcpus == 1
    assert vm.guest.family == "windows" and vm.guest.arch == "x86_64"
    assert vm.uuid is None and vm.disks == [] and vm.nics == []


def test_topology_and_cookie_form(tmp_path: Path) -> None:
    vm = read_vmx(vmx(tmp_path, 'numvcpus = "8"\ncpuid.coresPerSocket = "4"\n'))
    assert (vm.cpu.sockets, vm.cpu.cores_per_socket) == (2, 4)
    vm = read_vmx(vmx(tmp_path, 'numvcpus = "6"\ncpuid.coresPerSocket.cookie = "3"\n'))
    assert (vm.cpu.sockets, vm.cpu.cores_per_socket) == (2, 3)


def test_firmware_secure_boot_uuid(tmp_path: Path) -> None:
    vm = read_vmx(vmx(tmp_path, 'firmware = "efi"\nuefi.secureBoot.enabled = "TRUE"\n'
                                'uuid.bios = "56 4d 1a 2b 3c 4d 5e 6f-70 81 92 a3 b4 c5 d6 e7"\n'))
    assert vm.firmware.type == FirmwareType.EFI and vm.firmware.secure_boot
    assert vm.uuid == "564d1a2b-3c4d-5e6f-7081-92a3b4c5d6e7"
    with pytest.raises(BadInput, match="secureBoot"):
        read_vmx(vmx(tmp_path, 'uefi.secureBoot.enabled = "TRUE"\n'))


def test_every_disk_bus_and_present_false(tmp_path: Path) -> None:
    text = "\n".join([
        'scsi0.present = "TRUE"', 'scsi0.virtualDev = "pvscsi"',
        'scsi0:0.present = "TRUE"', 'scsi0:0.fileName = "a.vmdk"',
        'scsi0:0.mode = "independent-nonpersistent"',
        'scsi0:1.present = "FALSE"', 'scsi0:1.fileName = "gone.vmdk"',
        'sata0.present = "TRUE"', 'sata0:2.present = "TRUE"', 'sata0:2.fileName = "b.vmdk"',
        'sata0:3.present = "TRUE"', 'sata0:3.deviceType = "cdrom-image"',
        'sata0:3.fileName = "[iso] images/x.iso"',
        'nvme0.present = "TRUE"', 'nvme0:0.present = "TRUE"', 'nvme0:0.fileName = "c.vmdk"',
        'nvme0:0.sharing = "multi-writer"',
        'ide1:0.present = "TRUE"', 'ide1:0.fileName = "/vmfs/volumes/ds1/vm/d.vmdk"',
        'ide1:1.present = "TRUE"', 'ide1:1.deviceType = "atapi-cdrom"',
        'floppy0.present = "TRUE"', 'floppy0.fileType = "file"', 'floppy0.fileName = "f.flp"',
        'scsi1:0.present = "TRUE"', 'scsi1:0.fileName = "no-controller.vmdk"',
    ])
    vm = read_vmx(vmx(tmp_path, text))
    disks = vm.disks or []
    assert [(d.controller.bus, d.unit) for d in disks if d.controller] == [
        (BusType.SCSI, 0), (BusType.SATA, 2), (BusType.NVME, 0), (BusType.IDE, 0)]
    assert disks[0].source == str(tmp_path / "a.vmdk") and disks[0].controller.model == "pvscsi"
    assert disks[0].mode == DiskMode.INDEPENDENT_NONPERSISTENT
    assert disks[2].sharing == DiskSharing.MULTI_WRITER
    assert disks[3].source == "/vmfs/volumes/ds1/vm/d.vmdk" and disks[3].datastore == "ds1"
    assert [c.source for c in vm.cdroms or []] == ["[iso] images/x.iso", None]
    assert [f.source for f in vm.floppies or []] == [str(tmp_path / "f.flp")]
    assert any("scsi1" in n for n in vm.notes)  # the controller-less disk is ignored, said


def test_nics_all_models_macs_and_vds(tmp_path: Path) -> None:
    models = ["vlance", "vmxnet", "vmxnet2", "vmxnet3", "e1000", "e1000e"]
    lines = []
    for i, model in enumerate(models):
        lines += [f'ethernet{i}.present = "TRUE"', f'ethernet{i}.virtualDev = "{model}"',
                  f'ethernet{i}.addressType = "static"',
                  f'ethernet{i}.address = "00:50:56:00:00:0{i}"',
                  f'ethernet{i}.networkName = "net{i}"']
    lines += ['ethernet6.present = "TRUE"', 'ethernet6.addressType = "generated"',
              'ethernet6.generatedAddress = "00:0C:29:AA:BB:CC"',
              'ethernet7.present = "TRUE"', 'ethernet7.addressType = "vpx"',
              'ethernet7.generatedAddress = "00:50:56:87:65:43"',
              'ethernet7.dvs.switchId = "50 34 26 b2 94 e9 3b 16-1d 68 87 bf ff 4a 54 40"',
              'ethernet7.dvs.portgroupId = "dvportgroup-12"']
    vm = read_vmx(vmx(tmp_path, "\n".join(lines)))
    nics = vm.nics or []
    assert [n.model for n in nics[:6]] == models and nics[0].network == "net0"
    assert nics[6].mac == "00:0c:29:aa:bb:cc" and nics[6].mac_type == "generated"
    assert nics[7].connection == ConnectionType.DISTRIBUTED
    assert nics[7].portgroup_key == "dvportgroup-12"
    assert nics[7].distributed_switch == "503426b2-94e9-3b16-1d68-87bfff4a5440"


def test_relative_paths_inside_allowed(tmp_path: Path) -> None:
    vm = read_vmx(vmx(tmp_path, 'scsi0.present = "TRUE"\nscsi0:0.present = "TRUE"\n'
                                'scsi0:0.fileName = "sub/../disk.vmdk"\n'))
    assert (vm.disks or [])[0].source == str(tmp_path / "disk.vmdk")


def test_storage_map_file(tmp_path: Path) -> None:
    mapping = tmp_path / "storage.map"
    mapping.write_text("# datastore or prefix = target\nds1=/srv/ds1\n"
                       "/vmfs/volumes/san=/mnt/san\nds2=pool:images\n")
    smap = parse_storage_map(str(mapping))
    assert smap.resolve("[ds1] vm/a.vmdk").path == "/srv/ds1/vm/a.vmdk"
    assert smap.resolve("/vmfs/volumes/ds1/vm/a.vmdk").path == "/srv/ds1/vm/a.vmdk"
    assert smap.resolve("/vmfs/volumes/san/x/y.vmdk").path == "/mnt/san/x/y.vmdk"
    pooled = smap.resolve("[ds2] vm/b.vmdk")
    assert (pooled.kind, pooled.pool, pooled.volume) == ("volume", "images", "b.vmdk")
    assert smap.resolve("[other] c.vmdk").kind == "unmapped"
    assert StorageMap().resolve("/local/x.vmdk").path == "/local/x.vmdk"


def test_inspect_reader_needs_real_disks(tmp_path: Path) -> None:
    """A missing disk is bad input for inspect, though fine for vmx2xml."""
    path = vmx(tmp_path, 'scsi0.present = "TRUE"\nscsi0:0.present = "TRUE"\n'
                         'scsi0:0.fileName = "disk.vmdk"\n')
    assert reader(str(tmp_path / "x.qcow2")) is None
    with pytest.raises(BadInput, match="does not exist"):
        reader(str(path))
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(tmp_path / "disk.vmdk"),
                    "8M"], check=True)
    vm = read_vmx_with_disks(path)
    disk = (vm.disks or [])[0]
    assert disk.capacity_bytes == 8 * 1024 * 1024
    assert disk.snapshot_chain == [str(tmp_path / "disk.vmdk")]


# Keys the reader interprets, so that random files reach the device code too.
FUZZ_KEYS = ["memSize", "numvcpus", "cpuid.coresPerSocket", "uuid.bios", "firmware",
             "scsi0.present", "scsi0.virtualDev", "scsi0:0.present", "scsi0:0.fileName",
             "scsi0:0.deviceType", "ide0:0.present", "ide0:0.fileName", "sata0.present",
             "sata0:1.present", "ethernet0.present", "ethernet0.addressType",
             "ethernet0.address", "ethernet0.generatedAddress", "ethernet0.virtualDev",
             "serial0.present", "serial0.fileType", "floppy0.present", "floppy3.present",
             "sched.cpu.affinity", "svga.vramSize", "uefi.secureBoot.enabled"]


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(FUZZ_KEYS),
                          st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                                         blacklist_characters='"\n\r'),
                                  max_size=20)), max_size=12))
def test_any_key_values_give_a_model_or_bad_input(tmp_path: Path,
                                                  pairs: list[tuple[str, str]]) -> None:
    """Property: the reader never fails any other way (no crash, no traceback)."""
    text = "".join(f'{k} = "{v}"\n' for k, v in pairs) or 'displayName = "x"\n'
    try:
        read_vmx_bytes(tmp_path / "fuzz.vmx", text.encode())
    except BadInput as exc:
        assert "\n" not in str(exc)


@settings(max_examples=200, deadline=None, database=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_model_or_bad_input(data: bytes) -> None:
    try:
        read_vmx_bytes(Path("fuzz.vmx"), data)
    except BadInput as exc:
        assert "\n" not in str(exc)
