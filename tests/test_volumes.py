"""vmshift.volumes between two test-bed hosts: sparse streams, one content hash."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from tests.disks_support import make_raw_source
from vmshift import volumes

MiB = 1 << 20
SIZE = 64 * MiB
ISLANDS = [(MiB, 100 * 1024), (40 * MiB, 64 * 1024 + 3)]  # the file ends in a long hole


@pytest.fixture
def pools(two_hosts: object) -> Iterator[tuple[object, object, list]]:
    """(hosta, hostb, made): volumes appended to MADE are deleted afterwards."""
    a, b = two_hosts.hosta, two_hosts.hostb  # type: ignore[attr-defined]
    made: list[libvirt.virStorageVol] = []
    yield a, b, made
    for vol in made:
        vol.delete(0)


def _pool(host: object) -> tuple[libvirt.virConnect, libvirt.virStoragePool]:
    conn = host.connect()  # type: ignore[attr-defined]
    return conn, conn.storagePoolLookupByName(host.private_pool)  # type: ignore[attr-defined]


@pytest.mark.parametrize("empty_target", [False, True], ids=["zero-filled", "empty"])
def test_copy_between_hosts_keeps_holes_and_hashes_like_the_local_file(
        pools: tuple, tmp_path: Path, empty_target: bool) -> None:
    a, b, made = pools
    local = make_raw_source(tmp_path / "src.raw", SIZE, ISLANDS)
    (ca, pa), (cb, pb) = _pool(a), _pool(b)
    name = f"vmshift-vol-{os.getpid()}-{empty_target}.raw"
    src = volumes.create(pa, name, SIZE, "raw")
    made.append(src)
    sent = volumes.upload(ca, src, local)
    assert sent == volumes.file_hash(local)
    # A target of length 0 (how state files are made) must grow to the trailing hole.
    dst = volumes.create(pb, name, 0, "raw") if empty_target else \
        volumes.create_for_copy(pb, src, name)
    made.append(dst)
    n, digest, ok = volumes.copy(ca, src, cb, dst, "copy", json_mode=True)
    assert ok and n == SIZE and digest == sent
    assert dst.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2] == SIZE
    assert dst.info()[2] < 8 * MiB, "holes were sent as holes, not as zeroes"
    # The same bytes stored densely hash the same; one byte more of zeroes does not.
    dense = tmp_path / "dense.raw"
    subprocess.run(["cp", "--sparse=never", str(local), str(dense)], check=True)
    assert volumes.file_hash(dense) == sent
    with open(dense, "ab") as f:
        f.write(b"\0")
    assert volumes.file_hash(dense) != sent


def test_qcow2_copied_as_a_file_reads_back_as_the_same_image(
        pools: tuple, tmp_path: Path) -> None:
    """A qcow2 file with holes, copied into a fresh volume: none of a new
    image's own header may survive where the source has holes."""
    a, b, made = pools
    raw = make_raw_source(tmp_path / "src.raw", SIZE, ISLANDS)
    local = tmp_path / "src.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", "-o", "cluster_size=2M",
                    str(raw), str(local)], check=True)
    (ca, pa), (cb, pb) = _pool(a), _pool(b)
    name = f"vmshift-vol-{os.getpid()}.qcow2"
    src = volumes.create(pa, name, local.stat().st_size, "raw")
    made.append(src)
    volumes.upload(ca, src, local)
    pa.refresh(0)
    src = pa.storageVolLookupByName(name)
    assert volumes.format_of(src) == "qcow2"
    dst = volumes.create_for_copy(pb, src, name)
    made.append(dst)
    _, _, ok = volumes.copy(ca, src, cb, dst, "copy", json_mode=True)
    assert ok and volumes.format_of(pb.storageVolLookupByName(name)) == "qcow2"
    copied = Path(b.private_pool_outside) / name
    same = subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", str(copied),
                           str(raw)], capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr
