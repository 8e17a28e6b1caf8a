"""libvirt acceptance: every converted corpus domain is accepted by a real
libvirtd (a test-bed host) with defineXML, then undefined. Disks point, via a
storage map, at small placeholder images in a directory of host A's storage
(its private pool directory, which the machine sees at ``private_pool_outside``
and the host at ``private_pool_path``). Two of them (BIOS, and EFI with Secure
Boot) are also started under TCG, to show that the CPU, firmware and device
choices run, not only parse.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.conftest import CORPUS
from tests.test_corpus import EXPECTED_ERRORS
from vmshift.convert import libvirt_xml as lx
from vmshift.convert.maps import StorageMap
from vmshift.convert.vmx import read_vmx
from vmshift.convert.writer import build_domain_xml
from vmshift.model import VirtualMachine

VMX_DIR = CORPUS / "vmx"
DATASTORES = ("ds", "missing")  # the datastores the corpus names
STARTED = {"vmx2xml-harddisk-scsi-file": False, "vmx2xml-firmware-efi": True}


class HostDir:
    """One directory seen from two mount namespaces: the host's and the machine's."""

    def __init__(self, inside: Path, outside: Path) -> None:
        self.inside, self.outside = inside, outside

    def outside_of(self, inside_path: str) -> Path:
        return self.outside / Path(inside_path).relative_to(self.inside)


@pytest.fixture(scope="module")
def pool_dir(two_hosts) -> Iterator[HostDir]:  # type: ignore[no-untyped-def]
    host = two_hosts.hosta
    name = f"defs-accept-{os.getpid()}"
    where = HostDir(Path(host.private_pool_path) / name,
                    Path(host.private_pool_outside) / name)
    where.outside.mkdir()
    yield where
    for child in where.outside.iterdir():
        child.unlink()
    where.outside.rmdir()


def storage_map(pool: HostDir) -> StorageMap:
    mapping = {ds: ("dir", str(pool.inside)) for ds in DATASTORES}
    return StorageMap(datastores=mapping, prefixes={str(VMX_DIR): ("dir", str(pool.inside))})


def placeholders(vm: VirtualMachine, smap: StorageMap, pool: HostDir) -> None:
    """Small real images where the converted domain's disks point."""
    for disk in vm.disks or []:
        assert disk.source
        target = smap.resolve(disk.source)
        assert target.kind == "file" and target.path
        image = pool.outside_of(target.path)
        if not image.exists():
            subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(image), "16M"],
                           check=True)
    for media in [*(vm.cdroms or []), *(vm.floppies or [])]:
        if media.source:
            target = smap.resolve(media.source)
            assert target.path
            with open(pool.outside_of(target.path), "ab") as handle:
                handle.truncate(1024 * 1024)


def converted_corpus() -> list[Path]:
    """The corpus files vmshift converts; the ones it refuses (and why) are
    tests/test_corpus.py's EXPECTED_ERRORS, where the refusal itself is checked."""
    if not VMX_DIR.is_dir():
        return [VMX_DIR / "MISSING"]
    return [p for p in sorted(VMX_DIR.glob("*.vmx")) if p.stem not in EXPECTED_ERRORS]


def undefine(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        dom.destroy()
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


@pytest.mark.parametrize("path", converted_corpus(), ids=lambda p: p.stem)
def test_define_converted_domain(path: Path, two_hosts, pool_dir: HostDir) -> None:  # type: ignore[no-untyped-def]
    assert path.is_file(), f"corpus missing: {path}"
    vm = read_vmx(path)  # a refusal here is a failure: converted_corpus() left those out
    vm.name = f"vmshift-defs-{path.stem}"  # never clobber another test's domain
    if path.stem == "vmx2xml-firmware-efi":
        vm.firmware.secure_boot = True  # exercise the Secure Boot path for real
    smap = storage_map(pool_dir)
    placeholders(vm, smap, pool_dir)
    xml = build_domain_xml(vm, virt_type="qemu", storage_map=smap,
                           default_network=two_hosts.network).xml
    conn = two_hosts.hosta.connect()
    dom = conn.defineXML(xml)
    try:
        defined = lx.Domain.from_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        assert defined.name == vm.name
        assert [i.mac for i in defined.interfaces] == [n.mac for n in vm.nics or []]
        assert [Path(d.source_file or "").name for d in defined.disks if d.device == "disk"] == \
            [Path(d.source or "").name for d in vm.disks or []]
        if vm.uuid:
            assert defined.uuid == vm.uuid
        if path.stem in STARTED:
            dom.create()
            time.sleep(1)
            assert dom.isActive()
            if STARTED[path.stem]:
                live = lx.Domain.from_xml(dom.XMLDesc(0))
                loader = live.node.find("os/loader")
                # libvirt picked a Secure Boot build of OVMF (Debian's has MS keys enrolled).
                assert loader is not None and loader.get("secure") == "yes", loader.attrib
                assert live.node.find("os/nvram") is not None
    finally:
        undefine(dom)


def test_windows_profile_starts_under_tcg(two_hosts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Windows choices (SATA, e1000e, localtime, EFI + Secure Boot) run for real; under
    TCG the Hyper-V enlightenments must be left out, or QEMU refuses to start."""
    vmx = tmp_path / "win.vmx"
    vmx.write_text('displayName = "w"\nmemSize = "512"\nnumvcpus = "2"\n'
                   'guestOS = "windows2019srv-64"\nfirmware = "efi"\n'
                   'uefi.secureBoot.enabled = "TRUE"\nethernet0.present = "TRUE"\n'
                   'ethernet0.virtualDev = "vmxnet3"\nethernet0.addressType = "static"\n'
                   'ethernet0.address = "00:50:56:3a:00:01"\n')
    vm = read_vmx(vmx)
    vm.name = f"vmshift-defs-win-{os.getpid()}"
    xml = build_domain_xml(vm, virt_type="qemu", default_network=two_hosts.network).xml
    dom = two_hosts.hosta.connect().defineXML(xml)
    try:
        dom.create()
        assert dom.isActive()
        live = lx.Domain.from_xml(dom.XMLDesc(0))
        assert live.clock_offset == "localtime" and live.interfaces[0].model == "e1000e"
    finally:
        undefine(dom)
