"""Upload into a libvirt pool on the test bed's hostb (a remote qemu+tcp URI),
through the libvirt stream API: no shared filesystem, no SSH."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import libvirt
import pytest

from tests.disks_support import (
    SOURCE_SIZE,
    MiB,
    identical,
    make_form,
    make_raw_source,
    start,
    wait_mid_copy,
)
from vmshift.cli import main


@pytest.fixture
def hostb(two_hosts: object) -> object:
    """hostb of the test bed (helper testbed's `two_hosts` fixture)."""
    return two_hosts.hostb  # type: ignore[attr-defined]


def _volume(host: object, pool: str, name: str) -> libvirt.virStorageVol | None:
    conn = host.connect()  # type: ignore[attr-defined]
    p = conn.storagePoolLookupByName(pool)
    p.refresh(0)
    try:
        return p.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def _delete(host: object, pool: str, name: str) -> None:
    vol = _volume(host, pool, name)
    if vol is not None:
        vol.delete(0)


def test_upload_to_remote_pool_has_right_size_and_content(
        hostb: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pool, name = hostb.private_pool, f"vmshift-upload-{tmp_path.name}.qcow2"
    raw = make_raw_source(tmp_path / "src.raw")
    src = make_form(raw, "streamOptimized", tmp_path / "in")
    _delete(hostb, pool, name)
    try:
        code = main(["convert", "disk", "--json", "--pool", pool, "--connect", hostb.uri,
                     "--tmpdir", str(tmp_path), str(src), name])
        doc = json.loads(capsys.readouterr().out)
        assert code == 0 and doc["disks"][0]["volume"] == name and doc["disks"][0]["verified"]
        vol = _volume(hostb, pool, name)
        assert vol is not None
        kind, capacity, _alloc = vol.info()
        assert capacity == SOURCE_SIZE  # libvirt sees a qcow2 of the source's size
        assert "<format type='qcow2'/>" in vol.XMLDesc(0)
        # Content, read back independently with virsh (sparse download) and compared.
        back = tmp_path / "back.qcow2"
        subprocess.run(["virsh", "-c", hostb.uri, "vol-download", "--sparse", "--pool", pool,
                        name, str(back)], check=True, capture_output=True)
        assert identical(raw, back, "raw", "qcow2")
        subprocess.run(["qemu-img", "check", str(back)], check=True, capture_output=True)
        # No staging file left behind; a second run refuses to overwrite the volume.
        assert sorted(p.name for p in tmp_path.iterdir()) == ["back.qcow2", "in", "src.raw"]
        code = main(["convert", "disk", "--pool", pool, "--connect", hostb.uri, str(src), name])
        assert code == 2 and "refusing to overwrite it (use --force)" in capsys.readouterr().err
    finally:
        _delete(hostb, pool, name)


def test_interrupted_upload_deletes_the_volume_it_created(hostb: object,
                                                          tmp_path: Path) -> None:
    pool, name = hostb.private_pool, f"vmshift-sigint-{tmp_path.name}.raw"
    # 64 MiB of random data uploaded as raw at 32 MiB/s: about 2 s of upload.
    src = make_raw_source(tmp_path / "dense.raw", 64 * MiB, [(0, 64 * MiB)], seed=5)
    _delete(hostb, pool, name)
    proc = start("--format", "raw", "--no-verify", "--bandwidth", "32M", "--pool", pool,
                 "--connect", hostb.uri, "--tmpdir", str(tmp_path), str(src), name)
    try:
        wait_mid_copy(proc, task_prefix="upload")
        assert _volume(hostb, pool, name) is not None  # the run created it...
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1 and "interrupted by SIGINT" in err
        assert _volume(hostb, pool, name) is None  # ...and deleted it again
        assert sorted(p.name for p in tmp_path.iterdir()) == ["dense.raw"]
    finally:
        if proc.poll() is None:
            proc.kill()
        _delete(hostb, pool, name)
