"""The VMDK descriptor parser, on descriptors qemu-img and we write for real."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.disks_support import make_esxi, make_raw_source, qemu_img
from vmshift.convert import vmdk
from vmshift.convert.vmdk_sparse import check_sparse_extent
from vmshift.errors import BadInput

MiB = 1024**2
SIZE = 2 * 1024**3 + 3 * MiB  # > 2 GiB: the split forms get two extents


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("vmdkraw")
    return make_raw_source(d / "src.raw", SIZE, [(0, MiB), (2 * 1024**3 + MiB, MiB)])


def _vmdk(raw: Path, d: Path, sub: str) -> Path:
    out = d / f"{sub}.vmdk"
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", f"subformat={sub}", str(raw), str(out))
    return out


def test_embedded_descriptor_of_monolithic_sparse(raw: Path, tmp_path: Path) -> None:
    d = vmdk.parse_descriptor(_vmdk(raw, tmp_path, "monolithicSparse"))
    assert d.embedded and d.create_type == "monolithicSparse"
    assert d.header is not None and d.header.grain_sectors == 128
    assert d.parent_cid == vmdk.NO_PARENT and not d.is_delta
    assert [(e.type, e.filename) for e in d.extents] == [("SPARSE", "monolithicSparse.vmdk")]
    assert d.capacity_bytes == SIZE and d.adapter_type == "ide" and d.geometry is not None


def test_stream_optimized_header_says_compressed(raw: Path, tmp_path: Path) -> None:
    d = vmdk.parse_descriptor(_vmdk(raw, tmp_path, "streamOptimized"))
    assert d.create_type == "streamOptimized" and d.header and d.header.stream_optimized
    check_sparse_extent(tmp_path / "streamOptimized.vmdk")  # footer GD found and sane


@pytest.mark.parametrize("sub,etype", [("twoGbMaxExtentSparse", "SPARSE"),
                                       ("twoGbMaxExtentFlat", "FLAT"),
                                       ("monolithicFlat", "FLAT")])
def test_text_descriptor_extents(raw: Path, tmp_path: Path, sub: str, etype: str) -> None:
    d = vmdk.parse_descriptor(_vmdk(raw, tmp_path, sub))
    assert not d.embedded and d.create_type == sub
    assert {e.type for e in d.extents} == {etype}
    assert all(e.path is not None and e.path.parent == tmp_path for e in d.extents)
    assert d.capacity_bytes == SIZE
    assert len(d.extents) == (1 if sub == "monolithicFlat" else 2)
    assert vmdk.missing_extents(d) == []
    vmdk.check_consistency(d)


def test_esxi_descriptor_and_missing_flat(raw: Path, tmp_path: Path) -> None:
    desc = make_esxi(raw, tmp_path)
    d = vmdk.parse_descriptor(desc)
    assert d.create_type == "vmfs" and d.adapter_type == "lsilogic"
    assert d.geometry == (1024, 255, 63) and d.hw_version == "13"
    (tmp_path / "disk-flat.vmdk").unlink()
    missing = vmdk.missing_extents(d)
    assert [m.filename for m in missing] == ["disk-flat.vmdk"] and missing[0].line == 9


def test_snapshot_chain_and_cid_check(raw: Path, tmp_path: Path) -> None:
    base = _vmdk(raw, tmp_path, "monolithicSparse")
    child = tmp_path / "monolithicSparse-000001.vmdk"
    qemu_img("create", "-f", "vmdk", "-b", base.name, "-F", "vmdk", str(child))
    chain = vmdk.resolve_chain(child)
    assert [c.path.name for c in chain] == [child.name, base.name]
    assert chain[0].is_delta and chain[0].parent_cid == chain[1].cid
    # The parent changed after the snapshot: its CID no longer matches.
    text = (tmp_path / "desc.vmdk")
    text.write_text(f'# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=0badcafe\n'
                    f'createType="monolithicSparse"\nparentFileNameHint="{base.name}"\n'
                    f'RW {SIZE // 512} SPARSE "{child.name}"\n')
    with pytest.raises(BadInput, match=r"desc\.vmdk:4: parentCID 0badcafe does not match"):
        vmdk.resolve_chain(text)


def test_extent_climbing_out_is_refused_with_file_and_line(tmp_path: Path) -> None:
    d = tmp_path / "vm"
    d.mkdir()
    desc = d / "evil.vmdk"
    desc.write_text('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                    'createType="vmfs"\n\nRW 2048 VMFS "sub/../../../etc/shadow"\n')
    with pytest.raises(BadInput, match=r"evil\.vmdk:7: extent path .* climbs out"):
        vmdk.parse_descriptor(desc)
    desc.write_text('CID=fffffffe\nparentCID=ffffffff\ncreateType="vmfs"\n'
                    'RW 2048 VMFS "/dev/sda"\n')
    with pytest.raises(BadInput, match=r"evil\.vmdk:4: extent path '/dev/sda' is absolute"):
        vmdk.parse_descriptor(desc)
    # Going down and back up inside the directory is fine.
    desc.write_text('CID=fffffffe\nparentCID=ffffffff\ncreateType="vmfs"\n'
                    'RW 2048 VMFS "a/../disk-flat.vmdk"\n')
    assert vmdk.parse_descriptor(desc).extents[0].path == d / "disk-flat.vmdk"


def test_parent_hint_climbing_out_is_refused(tmp_path: Path) -> None:
    desc = tmp_path / "d-000001.vmdk"
    desc.write_text('CID=00000002\nparentCID=00000001\ncreateType="vmfsSparse"\n'
                    'parentFileNameHint="../other/base.vmdk"\n'
                    'RW 2048 VMFSSPARSE "d-000001-delta.vmdk"\n')
    with pytest.raises(BadInput, match=r"d-000001\.vmdk:4: parentFileNameHint path"):
        vmdk.parse_descriptor(desc)


def test_malformed_lines_name_file_and_line(tmp_path: Path) -> None:
    desc = tmp_path / "bad.vmdk"
    desc.write_text('# Disk DescriptorFile\nCID=zzzz\ncreateType="vmfs"\n')
    with pytest.raises(BadInput, match=r"bad\.vmdk:2: CID is not hexadecimal"):
        vmdk.parse_descriptor(desc)
    desc.write_text('# Disk DescriptorFile\ncreateType="vmfs"\nRW 10 BOGUS "x"\n')
    with pytest.raises(BadInput, match=r"bad\.vmdk:3: unknown extent type BOGUS"):
        vmdk.parse_descriptor(desc)
    desc.write_text('# Disk DescriptorFile\ncreateType="vmfs"\nthis is not a key\n')
    with pytest.raises(BadInput, match=r"bad\.vmdk:3: unparsable"):
        vmdk.parse_descriptor(desc)
    desc.write_text('# Disk DescriptorFile\ncreateType="monolithicFlat"\n'
                    'RW 10 SPARSE "x.vmdk"\n')
    with pytest.raises(BadInput, match=r"bad\.vmdk:2: createType monolithicFlat but extents"):
        vmdk.check_consistency(vmdk.parse_descriptor(desc))


def test_binary_non_vmdk_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.vmdk"
    junk.write_bytes(b"\x00\x01binary" * 10000)
    with pytest.raises(BadInput, match="not a VMDK descriptor"):
        vmdk.parse_descriptor(junk)


def test_corrupted_grain_table_and_directory_detected(raw: Path, tmp_path: Path) -> None:
    good = _vmdk(raw, tmp_path, "monolithicSparse")
    check_sparse_extent(good)
    data = bytearray(good.read_bytes())
    gd = struct.unpack_from("<Q", data, 56)[0]
    gt0 = struct.unpack_from("<I", data, gd * 512)[0]
    bad_gt = bytearray(data)
    struct.pack_into("<I", bad_gt, gt0 * 512, 0x7FFFFF00)
    (tmp_path / "gt.vmdk").write_bytes(bad_gt)
    with pytest.raises(BadInput, match=r"gt\.vmdk: grain table 0 entry 0 .*corrupt grain table"):
        check_sparse_extent(tmp_path / "gt.vmdk")
    bad_gd = bytearray(data)
    struct.pack_into("<I", bad_gd, gd * 512, 0x7FFFFF00)
    (tmp_path / "gd.vmdk").write_bytes(bad_gd)
    with pytest.raises(BadInput, match="corrupt grain directory"):
        check_sparse_extent(tmp_path / "gd.vmdk")


def test_absolute_parent_hint_is_looked_up_beside_and_cid_checked(raw: Path,
                                                                  tmp_path: Path) -> None:
    base = _vmdk(raw, tmp_path, "monolithicSparse")
    cid = vmdk.parse_descriptor(base).cid
    assert cid is not None
    child = tmp_path / "child.vmdk"
    for parent_cid, ok in ((cid, True), (cid ^ 1, False)):
        # What a Workstation linked clone copied from a Windows host carries.
        child.write_text(f'CID=00000042\nparentCID={parent_cid:08x}\n'
                         'createType="twoGbMaxExtentSparse"\n'
                         'parentFileNameHint="C:\\\\VMs\\\\base\\\\monolithicSparse.vmdk"\n'
                         f'RW {SIZE // 512} SPARSE "child-s001.vmdk"\n')
        if ok:
            assert [d.path for d in vmdk.resolve_chain(child)] == [child, base]
        else:
            with pytest.raises(BadInput, match=r"child\.vmdk:2: parentCID"):
                vmdk.resolve_chain(child)
