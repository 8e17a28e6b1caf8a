"""Network and storage maps: one syntax (a file or inline SRC=DST,...), one parser,
one option declaration for every command that takes a map."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from lxml import etree

from tests.conftest import CORPUS
from tests.ovabuild import build_ova
from vmshift.cli import cli, main
from vmshift.convert.maps import (
    MapParam,
    NetTarget,
    NetworkMap,
    StorageMap,
    StorageTarget,
    parse_network_map,
    parse_storage_map,
)
from vmshift.errors import BadInput
from vmshift.migrate import xmlmap
from vmshift.model import ConnectionType, Nic

VMSHIFT = str(Path(sys.executable).parent / "vmshift")
VMX = CORPUS / "vmx"


def write(tmp_path: Path, text: str, name: str = "x.map") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def run(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """vmshift's entry point in this process (what the installed command runs)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --- the syntax ---------------------------------------------------------------

def test_network_inline_kinds_and_macs() -> None:
    netmap = parse_network_map("VM Network=default, dvportgroup-1285=bridge:br0,"
                               "00:50:56:AA:BB:01=network:dmz:a, nat = Bridge:br1")
    assert netmap.entries == {
        "VM Network": NetTarget("default", "network"),
        "dvportgroup-1285": NetTarget("br0", "bridge"),
        "00:50:56:aa:bb:01": NetTarget("dmz:a", "network"),  # an explicit kind keeps the ':'
        "nat": NetTarget("br1", "bridge"),
    }
    # The MAC names one NIC and wins over its network's name.
    assert netmap.target_for(Nic(mac="00:50:56:aa:bb:01", network="VM Network")) == \
        NetTarget("dmz:a")
    assert netmap.target_for(Nic(mac="00:50:56:aa:bb:02", network="VM Network")) == \
        NetTarget("default")
    assert netmap.target_for(Nic(connection=ConnectionType.NAT)) == NetTarget("br1", "bridge")
    assert netmap.target_for(Nic(network="other")) is None


def test_file_and_inline_forms_are_the_same_map(tmp_path: Path) -> None:
    text = ("\ufeff# where the networks go\n\n   # indented comment\n"
            "VM Network = default\n\tdvportgroup-1285=bridge:br0  \n")
    assert parse_network_map(write(tmp_path, text)) == \
        parse_network_map("VM Network=default,dvportgroup-1285=bridge:br0")
    storage = "# datastores\ndatastore1=/srv/images\n[san] web/=dir:/mnt/san//web/\nds2=pool:p\n"
    assert parse_storage_map(write(tmp_path, storage, "s.map")) == \
        parse_storage_map("[datastore1]=/srv/images,[san] web=/mnt/san/web,ds2=pool:p")


def test_storage_sources_targets_and_longest_prefix() -> None:
    smap = parse_storage_map("ds1=/srv/ds1,[ds1] big=dir:/mnt/big,/vmfs/volumes/san=/mnt/san,"
                             "/local/vms/=/srv/local,ds2=pool:images")
    assert smap.resolve("[ds1] vm/a.vmdk") == StorageTarget("file", "/srv/ds1/vm/a.vmdk")
    assert smap.resolve("/vmfs/volumes/ds1/vm/a.vmdk").path == "/srv/ds1/vm/a.vmdk"
    assert smap.resolve("[ds1] big/b.vmdk").path == "/mnt/big/b.vmdk"  # longest prefix
    assert smap.resolve("/vmfs/volumes/san/x/y.vmdk").path == "/mnt/san/x/y.vmdk"
    assert smap.resolve("/local/vms/c.vmdk").path == "/srv/local/c.vmdk"
    assert smap.resolve("[ds2] vm/d.vmdk") == StorageTarget("volume", pool="images",
                                                            volume="d.vmdk")
    assert smap.resolve("[other] e.vmdk") == StorageTarget("unmapped",
                                                           "/vmfs/volumes/other/e.vmdk")
    # A '..' that climbs out of the mapped datastore is not mapped into the target.
    assert smap.resolve("[ds1] ../ds9/f.vmdk").kind == "unmapped"
    assert smap.directories() == ["/mnt/big", "/mnt/san", "/srv/ds1", "/srv/local"]
    assert StorageMap().resolve("/local/x.vmdk").path == "/local/x.vmdk"


BAD_NETWORK = [
    ("a=b,oops", "--network-map: entry 2: expected SRC=DST, found 'oops'"),
    ("a=b,", "--network-map: entry 2: expected SRC=DST"),
    ("=b", "--network-map: entry 1: expected SRC=DST"),
    ("a=b,a=c", "--network-map: entry 2: 'a' maps twice"),
    ("00:50:56:AA:BB:01=x,00:50:56:aa:bb:01=y", "entry 2: '00:50:56:aa:bb:01' maps twice"),
    ("a=brige:br0", "entry 1: 'brige:br0': unknown kind 'brige'"),
    ("a=bridge:", "entry 1: 'bridge:': no bridge name"),
    ("a=bridge:much-too-long-bridge", "is not a valid bridge name"),
    ("a=x/y", "'x/y' is not a valid network name"),
    ("not-a-file", "--network-map: no map file 'not-a-file'"),
]
BAD_STORAGE = [
    ("ds=images", "--storage-map: entry 1: target 'images': a directory must be an absolute"),
    ("ds=/srv/../etc", "without '..'"),
    ("ds=pool:a/b", "pool 'a/b'"),
    ("ds=file:/x", "unknown kind 'file': expected dir: or pool:"),
    ("ds/vm=/x", "source 'ds/vm': expected a datastore name"),
    ("/a/../b=/x", "source '/a/../b': '..' in a path prefix"),
    ("[ds] ../x=/x", "'..' in a path prefix"),
    ("ds=/x,[ds]=/y", "entry 2: '[ds]' maps twice"),
    ("ds=/x,/vmfs/volumes/ds/=/y", "entry 2: '/vmfs/volumes/ds/' maps twice"),
]


@pytest.mark.parametrize(("value", "message"), BAD_NETWORK)
def test_bad_network_entries_name_the_entry(value: str, message: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_network_map(value)
    assert message in info.value.message


@pytest.mark.parametrize(("value", "message"), BAD_STORAGE)
def test_bad_storage_entries_name_the_entry(value: str, message: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_storage_map(value)
    assert message in info.value.message


def test_file_errors_name_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "# nets\n\nVM Network=default\nVM Network=bridge:br1\n", "nets.map")
    with pytest.raises(BadInput, match=f"^{path}:4: 'VM Network' maps twice$"):
        parse_network_map(path)
    old = write(tmp_path, "# source,target,kind\ndatastore1,/srv/images\n", "old.csv")
    with pytest.raises(BadInput, match=rf"^{old}:2: expected SRC=DST.*old CSV form"):
        parse_storage_map(old)
    binary = tmp_path / "bin.map"
    binary.write_bytes(b"a=b\x00\n")
    with pytest.raises(BadInput, match="binary"):
        parse_network_map(str(binary))
    with pytest.raises(BadInput, match="not a map file"):
        parse_storage_map(str(tmp_path))


# --- through the commands -----------------------------------------------------------

def test_bad_map_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "VM Network=default\nVM Network=bridge:br1\n", "nets.map")
    code, out, err = run("vmx2xml", "--network-map", path, str(VMX / "ethernet-bridged.vmx"),
                         capsys=capsys)
    assert (code, out, err) == (2, "", f"vmshift: error: {path}:2: 'VM Network' maps twice\n")
    code, out, err = run("vmx2xml", "--storage-map", "ds=pool:", str(VMX / "ethernet-vds.vmx"),
                         capsys=capsys)
    assert (code, out) == (2, "")
    assert err == "vmshift: error: --storage-map: entry 1: 'pool:': no pool name\n"
    # The installed command, in its own process: the same one line.
    real = subprocess.run([VMSHIFT, "ova", "xml", "--network-map", "a=b,oops", "x.ova"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert (real.returncode, real.stdout) == (2, "")
    assert real.stderr == "vmshift: error: --network-map: entry 2: expected SRC=DST, " \
                          "found 'oops'\n"


def vmx2xml(capsys: pytest.CaptureFixture[str], vmx: Path, *args: str) -> str:
    code, out, err = run("vmx2xml", "--virt-type", "qemu", *args, str(vmx), capsys=capsys)
    assert code == 0, err
    return out


CORPUS_CASES = [  # corpus VMX, the map, what it must change in the XML
    ("ethernet-vds.vmx", "--network-map", "dvportgroup-1285=bridge:br0",
     "devices/interface/source", {"bridge": "br0"}),
    ("ethernet-bridged.vmx", "--network-map", "# a comment\n00:50:56:11:22:33=network:lab",
     "devices/interface/source", {"network": "lab"}),
    ("harddisk-scsi-file-missing-file.vmx", "--storage-map", "[ds]=pool:images",
     "devices/disk/source", {"pool": "images", "volume": "missing.vmdk"}),
]


@pytest.mark.parametrize(("name", "option", "mapping", "xpath", "attrs"), CORPUS_CASES)
def test_vmx2xml_inline_and_file_give_the_same_domain(
        name: str, option: str, mapping: str, xpath: str, attrs: dict[str, str],
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    vmx = VMX / name
    from_file = vmx2xml(capsys, vmx, option, write(tmp_path, mapping + "\n"))
    inline = ",".join(line for line in mapping.splitlines() if not line.startswith("#"))
    assert vmx2xml(capsys, vmx, option, inline) == from_file
    assert etree.fromstring(from_file.encode()).find(xpath).attrib == attrs
    assert vmx2xml(capsys, vmx) != from_file  # the map did change the domain


def test_storage_map_directory_target_through_vmx2xml(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "images"
    target.mkdir()
    (target / "missing.vmdk").touch()
    vmx = VMX / "harddisk-scsi-file-missing-file.vmx"
    from_file = vmx2xml(capsys, vmx, "--storage-map", write(tmp_path, f"ds={target}\n"))
    assert vmx2xml(capsys, vmx, "--storage-map", f"ds=dir:{target}") == from_file
    disk = etree.fromstring(from_file.encode()).find("devices/disk/source")
    assert disk is not None and disk.get("file") == str(target / "missing.vmdk")


def test_ova_xml_inline_and_file_give_the_same_domain(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "small.raw"
    image.write_bytes(b"\0" * 1024 * 1024)
    ova = build_ova(tmp_path, image, name="maps", network="VM Network")
    outputs = []
    map_file = write(tmp_path, "# OVF networks\nVM Network=bridge:br7\n")
    for value in ("VM Network=bridge:br7", map_file):
        code, out, err = run("ova", "xml", "--virt-type", "qemu", "--network-map", value,
                             str(ova), capsys=capsys)
        assert code == 0, err
        outputs.append(out)
    assert outputs[0] == outputs[1]
    iface = etree.fromstring(outputs[0].encode()).find("devices/interface")
    assert iface is not None and iface.get("type") == "bridge"
    assert iface.find("source").attrib == {"bridge": "br7"}  # type: ignore[union-attr]


def test_migrate_rewrites_the_domain_with_the_same_map(tmp_path: Path) -> None:
    dom = ("<domain><devices>"
           "<interface type='network'><mac address='52:54:00:00:00:01'/>"
           "<source network='prod' portgroup='web'/></interface>"
           "<interface type='network'><mac address='52:54:00:00:00:02'/>"
           "<source network='prod'/></interface>"
           "<interface type='bridge'><source bridge='br0'/></interface>"
           "<interface type='direct'><source dev='prod' mode='bridge'/></interface>"
           "</devices></domain>")
    netmap = parse_network_map(write(tmp_path, "prod=stage\n52:54:00:00:00:02=bridge:br9\n"
                                               "br0=network:lab\n"))
    out = etree.fromstring(xmlmap.map_networks(dom, netmap).encode())
    got = [(i.get("type"), dict(i.find("source").attrib)) for i in out.iter("interface")]
    assert got == [("network", {"network": "stage", "portgroup": "web"}),
                   ("bridge", {"bridge": "br9"}),
                   ("network", {"network": "lab"}),
                   ("direct", {"dev": "prod", "mode": "bridge"})]  # a host device: not mapped
    assert xmlmap.map_networks(dom, NetworkMap()) == dom


def commands(group: click.Group, ctx: click.Context, path: str = "") -> dict[str, click.Command]:
    found = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            found |= commands(command, ctx, f"{path}{name} ")
        else:
            found[f"{path}{name}"] = command
    return found


def test_every_map_option_is_the_shared_one() -> None:
    with click.Context(cli) as ctx:
        every = commands(cli, ctx)
    takers: dict[str, set[str]] = {}
    for name, command in every.items():
        for param in command.params:
            if any(opt in ("--network-map", "--storage-map") for opt in param.opts):
                assert isinstance(param.type, MapParam), (name, param.opts)
                takers.setdefault(param.opts[0], set()).add(name)
    assert {"vmx2xml", "ova xml", "vsphere xml", "migrate check", "migrate live",
            "migrate suspended", "migrate offline"} <= takers["--network-map"]
    assert {"vmx2xml", "ova xml", "vsphere xml"} <= takers["--storage-map"]


def test_vsphere_xml_inline_and_file_give_the_same_domain(vcenter, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Against the vCenter simulator: its VM's NIC is on DC0_DVPG0, its disk on LocalDS_0."""
    def xml(*maps: str) -> str:
        env = {**os.environ, "VMSHIFT_VSPHERE_PASSWORD": vcenter.password}
        result = subprocess.run(
            [VMSHIFT, "vsphere", "xml", "--vm", "DC0_H0_VM1", "--virt-type", "qemu", *maps,
             "--url", vcenter.url, "--user", vcenter.user, "--ca-file", str(vcenter.ca_path)],
            env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120,
            check=False)
        assert result.returncode == 0, result.stderr
        return result.stdout

    inline = xml("--network-map", "DC0_DVPG0=bridge:br5", "--storage-map", "LocalDS_0=pool:img")
    assert inline == xml("--network-map", write(tmp_path, "DC0_DVPG0=bridge:br5\n", "n.map"),
                         "--storage-map", write(tmp_path, "[LocalDS_0]=pool:img\n", "s.map"))
    dom = etree.fromstring(inline.encode())
    assert dom.find("devices/interface/source").attrib == {"bridge": "br5"}  # type: ignore[union-attr]
    assert dom.find("devices/disk/source").get("pool") == "img"  # type: ignore[union-attr]
