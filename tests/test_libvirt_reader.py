"""libvirt domain XML -> the neutral model (vmshift.convert.libvirt_reader), and
migrate's views of it (DiskFacts, NicFacts), against libvirt's own test driver."""

from __future__ import annotations

import pytest

from vmshift.convert import libvirt_reader as reader
from vmshift.libvirtconn import connect
from vmshift.migrate import facts as F
from vmshift.migrate import statefiles
from vmshift.model import (
    BusType,
    CdRom,
    ConnectionType,
    Disk,
    DiskMode,
    DiskSharing,
    FirmwareType,
    Floppy,
    RdmMode,
    Tpm,
)

DOM = """<domain type='kvm'><name>web</name><uuid>6f2c5a4e-0000-4000-8000-000000000001</uuid>
<memory unit='GiB'>2</memory>
<os firmware='efi'><type arch='x86_64' machine='pc-q35-7.2'>hvm</type>
<firmware><feature enabled='yes' name='secure-boot'/></firmware>
<nvram type='file'><source file='/var/lib/libvirt/qemu/nvram/web_VARS.fd'/></nvram></os>
<cpu mode='custom' match='exact'><model>Haswell</model></cpu>
<devices>
<disk type='file' device='cdrom'><source file='/iso/d.iso'/><target dev='sda' bus='sata'/>
<readonly/></disk>
<disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='writeback'/>
<source file='/img/top.qcow2'/>
<backingStore type='file'><format type='qcow2'/><source file='/img/mid.qcow2'/>
<backingStore type='file'><format type='raw'/><source file='/img/base.raw'/>
<backingStore/></backingStore></backingStore>
<target dev='vda' bus='virtio'/><boot order='1'/></disk>
<disk type='block' device='lun'><source dev='/dev/sdz'/><target dev='sdb' bus='scsi'/>
<shareable/></disk>
<disk type='volume' device='disk'><source pool='p1' volume='v1'/><target dev='vdb'/>
<transient/></disk>
<disk type='network' device='disk'><source protocol='rbd' name='rbd/img'/>
<target dev='vdc' bus='virtio'/></disk>
<disk type='file' device='floppy'><source file='/fd/a.img'/><target dev='fda' bus='fdc'/>
</disk>
<interface type='bridge'><mac address='52:54:00:00:00:01'/><source network='prod' bridge='virbr1'/>
<model type='virtio'/></interface>
<interface type='bridge'><mac address='52:54:00:00:00:02'/><source bridge='br0'/></interface>
<interface type='direct'><mac address='52:54:00:00:00:03'/><source dev='eth0' mode='bridge'/>
</interface>
<interface type='user'><mac address='52:54:00:00:00:04'/></interface>
<interface type='hostdev'><mac address='52:54:00:00:00:05'/><source><address type='pci'
 domain='0' bus='3' slot='0' function='1'/></source></interface>
<hostdev mode='subsystem' type='usb'><source><vendor id='0x1'/><product id='0x2'/></source>
</hostdev>
<tpm model='tpm-crb'><backend type='emulator' version='2.0'><source type='dir' path='/s/t'/>
</backend></tpm>
<lease><lockspace>ls</lockspace><key>web</key><target path='/leases/ls'/></lease>
</devices></domain>"""


def test_disks_cdroms_and_floppies_in_the_model():
    vm = reader.read_domain(DOM)
    assert (vm.name, vm.uuid, vm.memory_mib, vm.source_kind) == (
        "web", "6f2c5a4e-0000-4000-8000-000000000001", 2048, "libvirt")
    [cd] = vm.cdroms or []
    assert cd == CdRom(source="/iso/d.iso", controller=cd.controller, device_type="iso",
                       target_dev="sda", source_type="file", readonly=True)
    assert cd.controller is not None and cd.controller.bus == BusType.SATA
    top, lun, vol, net = vm.disks or []
    assert (top.source, top.format, top.cache, top.target_dev, top.boot_order) == (
        "/img/top.qcow2", "qcow2", "writeback", "vda", 1)
    assert top.snapshot_chain == ["/img/base.raw", "/img/mid.qcow2", "/img/top.qcow2"]
    assert (top.mode, top.sharing, top.passthrough, top.rdm) == (
        DiskMode.PERSISTENT, DiskSharing.NONE, False, None)
    assert (lun.source, lun.source_type, lun.passthrough, lun.rdm, lun.sharing) == (
        "/dev/sdz", "block", True, RdmMode.PHYSICAL, DiskSharing.MULTI_WRITER)
    assert (vol.source, vol.datastore, vol.volume, vol.mode) == (
        None, "p1", "v1", DiskMode.NONPERSISTENT)
    assert (net.source, net.source_type) == ("rbd/img", "network")
    assert vm.floppies == [Floppy(source="/fd/a.img", device_type="image", target_dev="fda",
                                  source_type="file", readonly=False)]


def test_nics_passthrough_firmware_and_leases_in_the_model():
    vm = reader.read_domain(DOM)
    assert [(n.connection, n.network, n.mac) for n in vm.nics or []] == [
        (ConnectionType.NETWORK, "prod", "52:54:00:00:00:01"),  # a live XML's type='bridge'
        (ConnectionType.BRIDGE, "br0", "52:54:00:00:00:02"),
        (ConnectionType.DIRECT, "eth0", "52:54:00:00:00:03"),
        (ConnectionType.USER, None, "52:54:00:00:00:04"),
        (ConnectionType.CUSTOM, None, "52:54:00:00:00:05")]
    assert [(p.kind, p.label) for p in vm.passthrough or []] == [
        ("sriov", "SR-IOV interface 52:54:00:00:00:05"),
        ("usb", "hostdev type=usb mode=subsystem")]
    fw = vm.firmware
    assert (fw.type, fw.secure_boot, fw.nvram_path, fw.tpm_present) == (
        FirmwareType.EFI, True, "/var/lib/libvirt/qemu/nvram/web_VARS.fd", True)
    assert fw.tpms == [Tpm("emulator", "2.0", "/s/t")]
    assert vm.leases == ["ls/web"]
    bios = reader.read_domain("<domain><name>b</name><os><type>hvm</type></os></domain>")
    assert (bios.firmware.type, bios.firmware.secure_boot, bios.firmware.tpms) == (
        FirmwareType.BIOS, False, [])
    assert (bios.disks, bios.nics, bios.leases) == ([], [], [])


@pytest.fixture(scope="module")
def test_conn():
    """libvirt's built-in test driver: real libvirt, no daemon, no host storage."""
    conn = connect("test:///default")
    yield conn
    conn.close()


def test_migrate_views_are_built_from_the_model(test_conn):
    devices = reader.storage_devices(reader.parse(DOM))
    assert [type(d) for d in devices] == [CdRom, Disk, Disk, Disk, Disk, Floppy]
    views = [F.disk_facts(d, test_conn, test_conn) for d in devices]
    assert [(v.target, v.device, v.kind, v.path, v.readonly, v.shareable, v.cache)
            for v in views] == [
        ("sda", "cdrom", "file", "/iso/d.iso", True, False, None),
        ("vda", "disk", "file", "/img/top.qcow2", False, False, "writeback"),
        ("sdb", "lun", "block", "/dev/sdz", False, True, None),
        ("vdb", "disk", "volume", None, False, False, None),
        ("vdc", "disk", "network", "rbd/img", False, False, None),
        ("fda", "floppy", "file", "/fd/a.img", False, False, None)]
    # The test driver has none of these paths in a pool.
    assert [(v.on_dest, v.pool_volume) for v in views][:2] == [(False, None), (False, None)]
    nics = [F.nic_facts(n) for n in reader.read_domain(DOM).nics or []]
    assert [(n.kind, n.source) for n in nics] == [
        ("network", "prod"), ("bridge", "br0"), ("direct", "eth0"), ("user", None),
        ("custom", None)]


def test_domain_facts_of_a_real_domain(test_conn):
    dom = test_conn.lookupByName("test")  # the test driver's running domain
    d = F.domain_facts(dom, test_conn, None)
    assert (d.name, d.active, d.persistent) == ("test", True, True)
    assert d.memory == dom.maxMemory() * 1024 and d.virt_type == "test"
    assert all(x.on_dest is None for x in d.disks)  # no destination asked
    assert d.hostdevs == [] and d.nvram is None and d.tpm is None and d.leases == 0


def test_state_files_follow_the_model():
    [nvram, tpm] = statefiles.locate(DOM, "u")
    assert nvram.describe() == "/var/lib/libvirt/qemu/nvram/web_VARS.fd"
    assert tpm.describe() == "/s/t/"


def test_connection_errors_name_the_uri_and_role():
    from vmshift.errors import OperationFailed

    with pytest.raises(OperationFailed, match=r"^cannot connect to the source "
                                              r"test:///nonexistent-file\.xml: "):
        connect("test:///nonexistent-file.xml", role="source")
    with pytest.raises(OperationFailed, match=r"^cannot connect to bogus://x: "):
        connect("bogus://x")


def test_what_the_writer_writes_reads_back_as_the_same_vm():
    """model -> libvirt XML (the writer) -> model (this reader): the facts a
    migration depends on survive the round trip."""
    from vmshift.convert.writer import build_domain_xml
    from vmshift.model import CpuTopology, Nic, VirtualMachine

    vm = VirtualMachine(name="rt", uuid="564d1a2b-3c4d-5e6f-7081-92a3b4c5d6e7",
                        memory_mib=1536, cpu=CpuTopology(4, 2, 2, 1),
                        cdroms=[CdRom(source="/iso/x.iso")],
                        disks=[Disk(source="/images/a.qcow2", format="qcow2", readonly=True),
                               Disk(source="/images/b.raw", format="raw",
                                    sharing=DiskSharing.MULTI_WRITER)],
                        nics=[Nic(mac="00:50:56:01:02:03", network="VM Network")])
    back = reader.read_domain(build_domain_xml(vm, virt_type="qemu",
                                               default_network="lan").xml)
    assert (back.name, back.uuid, back.memory_mib) == (vm.name, vm.uuid, vm.memory_mib)
    assert back.cpu == vm.cpu
    assert [(d.source, d.format, d.readonly, d.sharing) for d in back.disks or []] == [
        ("/images/a.qcow2", "qcow2", True, DiskSharing.NONE),
        ("/images/b.raw", "raw", False, DiskSharing.MULTI_WRITER)]
    assert [d.cache for d in back.disks or []] == [None, "none"]  # shared: never cached
    assert [c.source for c in back.cdroms or []] == ["/iso/x.iso"]
    assert [(n.mac, n.connection, n.network) for n in back.nics or []] == [
        ("00:50:56:01:02:03", ConnectionType.NETWORK, "lan")]
