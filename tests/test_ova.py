"""OVA input: manifest checked, disks read in place, nothing extracted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ovabuild import build_ova, envelope, rewrite_manifest, tamper_manifest
from vmshift.convert import libvirt_xml as lx
from vmshift.convert.ova import read_package
from vmshift.convert.writer import build_domain_xml, validate
from vmshift.errors import BadInput

VMSHIFT = str(Path(sys.executable).parent / "vmshift")


@pytest.fixture(scope="module")
def small_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64 MiB raw image with a recognisable pattern at 1 MiB."""
    path = tmp_path_factory.mktemp("img") / "small.raw"
    with open(path, "wb") as handle:
        handle.truncate(64 * 1024 * 1024)
        handle.seek(1024 * 1024)
        handle.write(b"vmshift-ova-pattern" * 1000)
    return path


@pytest.fixture(scope="module")
def small_ova(small_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_ova(tmp_path_factory.mktemp("ova"), small_image, name="small")


def listing(*dirs: Path) -> dict[str, list[str]]:
    return {str(d): sorted(os.listdir(d)) for d in dirs}


def run_isolated(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str],
                                                           Path, Path]:
    """Run vmshift with an empty cwd and an empty TMPDIR, to see what it leaves behind."""
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    result = subprocess.run([VMSHIFT, *args], capture_output=True, text=True, cwd=cwd, env=env,
                            check=False, timeout=120)
    return result, cwd, tmp


def test_ova_reads_facts_and_slices(small_ova: Path, small_image: Path, tmp_path: Path) -> None:
    package = read_package(small_ova)
    vm = package.vm
    assert vm.name == "small" and vm.memory_mib == 1024 and vm.cpu.vcpus == 2
    assert [n.mac for n in vm.nics or []] == ["00:50:56:aa:bb:01"]
    assert package.verified_files == ["small.ovf", "small-disk1.vmdk"]
    (disk,) = vm.disks or []
    assert disk.source == str(small_ova) and disk.capacity_bytes == 64 * 1024 * 1024
    assert disk.source_offset and disk.source_offset % 512 == 0
    # The byte range really is the VMDK: qemu-img reads the disk out of the tar.
    opts = (f"driver=vmdk,file.driver=raw,file.offset={disk.source_offset},"
            f"file.size={disk.source_size},file.file.driver=file,"
            f"file.file.filename={small_ova}")
    out = tmp_path / "back.raw"
    subprocess.run(["qemu-img", "convert", "-q", "--image-opts", opts, "-O", "raw", str(out)],
                   check=True)
    assert out.read_bytes() == small_image.read_bytes()
    xml = build_domain_xml(vm, virt_type="qemu").xml
    validate(xml)
    xml_disk = lx.Domain.from_xml(xml).disks[0]
    assert xml_disk.slice_offset == disk.source_offset and xml_disk.readonly


def test_ova_cli_json_extracts_nothing(small_ova: Path, tmp_path: Path) -> None:
    before = listing(small_ova.parent)
    result, cwd, tmp = run_isolated(["ova", "xml", "--json", "--virt-type", "qemu",
                                     str(small_ova)], tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema_version"] and doc["kind"] == "domain_xml"
    assert doc["verified"] == ["small.ovf", "small-disk1.vmdk"]
    assert "<slice" in doc["xml"]
    assert listing(small_ova.parent) == before and not os.listdir(cwd) and not os.listdir(tmp)


def test_tampered_manifest_fails_clearly_and_extracts_nothing(small_ova: Path,
                                                              tmp_path: Path) -> None:
    bad_dir = tmp_path / "pkg"
    bad_dir.mkdir()
    tampered = tamper_manifest(small_ova, bad_dir)
    before = listing(bad_dir)
    result, cwd, tmp = run_isolated(["ova", "xml", "--virt-type", "qemu", str(tampered)],
                                    tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    error = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "Traceback" not in result.stderr
    assert "small-disk1.vmdk: SHA256 digest does not match the manifest" in error[0]
    assert listing(bad_dir) == before and not os.listdir(cwd) and not os.listdir(tmp)


def test_disk_left_out_of_the_manifest_is_refused(small_ova: Path, tmp_path: Path) -> None:
    """Removing a disk's line must not turn its check off."""
    dropped = rewrite_manifest(small_ova, tmp_path, lambda lines: lines[:1], prefix="dropped")
    with pytest.raises(BadInput, match="small-disk1.vmdk is not covered by the manifest"):
        read_package(dropped)


def test_bare_ovf_beside_its_disk(small_ova: Path, tmp_path: Path) -> None:
    parts = small_ova.parent / "small-parts"
    package = read_package(parts / "small.ovf")
    (disk,) = package.vm.disks or []
    assert disk.source == str(parts / "small-disk1.vmdk") and disk.source_offset is None


@pytest.mark.parametrize("href", ["../outside.vmdk", "/etc/shadow", "link.vmdk"])
def test_ovf_disk_outside_its_folder_is_refused(href: str, tmp_path: Path) -> None:
    folder = tmp_path / "pkg"
    folder.mkdir()
    (tmp_path / "outside.vmdk").write_bytes(b"secret")
    (folder / "link.vmdk").symlink_to(tmp_path / "outside.vmdk")
    ovf = folder / "vm.ovf"
    ovf.write_bytes(envelope("vm", href, 6, 1 << 20, memory_mib=512, vcpus=1,
                             mac="00:50:56:00:00:01", network="VM Network"))
    with pytest.raises(BadInput) as info:
        read_package(ovf)
    assert href in str(info.value)


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 4096, b"<notovf/>", b"<Envelope"])
def test_bad_ovf_is_bad_input(garbage: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bad.ovf"
    path.write_bytes(garbage)
    with pytest.raises(BadInput) as info:
        read_package(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_ova_domain_boots_from_the_tar_slice(two_hosts, small_image: Path) -> None:  # type: ignore[no-untyped-def]
    """A real QEMU (test-bed host, TCG) opens the disk by offset inside the OVA."""
    import libvirt

    # Host A's private pool directory: the machine writes it at private_pool_outside,
    # the host's QEMU reads it at private_pool_path.
    host = two_hosts.hosta
    name = f"defs-ova-{os.getpid()}"
    work = Path(host.private_pool_outside) / name
    work.mkdir()
    try:
        ova = build_ova(work, small_image, name="slice")
        before = ova.read_bytes()
        vm = read_package(ova).vm
        (disk,) = vm.disks or []
        disk.source = str(Path(host.private_pool_path) / name / ova.name)
        vm.name = f"vmshift-defs-ova-{os.getpid()}"
        xml = build_domain_xml(vm, virt_type="qemu", default_network=two_hosts.network).xml
        dom = host.connect().defineXML(xml)
        try:
            dom.create()
            assert dom.isActive()
            live = lx.Domain.from_xml(dom.XMLDesc(0))
            assert live.disks[0].slice_offset == disk.source_offset
        finally:
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        assert ova.read_bytes() == before  # the package is never written
    finally:
        for path in sorted(work.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        work.rmdir()


@pytest.fixture(scope="module")
def reference_ova(vmware_guest, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """The reference guest's streamOptimized disk packaged with its own facts."""
    return build_ova(tmp_path_factory.mktemp("refova"), vmware_guest.vmdk_stream,
                     name=vmware_guest.name, memory_mib=1024, vcpus=2, mac=vmware_guest.mac,
                     stream_ready=True)


def test_reference_guest_ova(vmware_guest, reference_ova: Path) -> None:  # type: ignore[no-untyped-def]
    package = read_package(reference_ova)
    vm = package.vm
    assert vm.name == vmware_guest.name and [n.mac for n in vm.nics or []] == [vmware_guest.mac]
    (disk,) = vm.disks or []
    # The slice of the tar is byte for byte the guest's disk: read in place, not copied.
    with open(reference_ova, "rb") as handle:
        handle.seek(disk.source_offset or 0)
        inside_tar = handle.read(disk.source_size or 0)
    assert inside_tar == Path(vmware_guest.vmdk_stream).read_bytes()
    xml = build_domain_xml(vm, virt_type="qemu").xml
    validate(xml)
    assert vmware_guest.mac in xml


def test_reference_guest_ova_tampered(reference_ova: Path, tmp_path: Path) -> None:
    bad_dir = tmp_path / "pkg"
    bad_dir.mkdir()
    tampered = tamper_manifest(reference_ova, bad_dir)
    before = listing(bad_dir)
    result, cwd, tmp = run_isolated(["ova", "xml", "--virt-type", "qemu", str(tampered)],
                                    tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert "digest does not match the manifest" in result.stderr
    assert listing(bad_dir) == before and not os.listdir(cwd) and not os.listdir(tmp)
