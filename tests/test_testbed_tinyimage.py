"""The tiny guest's boot files: a real newc cpio that an independent reader
(GNU cpio) lists, modules in dependency order, and a cache keyed by recipe."""

from __future__ import annotations

import gzip
import subprocess

import pytest

from vmshift.testbed import tinyimage


def test_modules_come_after_their_dependencies() -> None:
    _, release = tinyimage.host_kernel()
    order = [m.rsplit("/", 1)[-1] for m in tinyimage.module_order(release)]
    assert "virtio_blk.ko" in order and "virtio_pci.ko" in order
    assert order.index("virtio.ko") < order.index("virtio_pci.ko") < order.index("virtio_blk.ko")
    assert order.index("failover.ko") < order.index("net_failover.ko") < \
        order.index("virtio_net.ko")


def test_initramfs_is_a_cpio_gnu_cpio_can_list() -> None:
    boot = tinyimage.boot_files()
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=gzip.decompress(
        boot.initramfs.read_bytes()), capture_output=True, check=True).stdout.decode().split()
    for member in ("init", "bin/busybox", "bin/sh", "bin/memhog", "dev/console",
                   "lib/modules/virtio_blk.ko", "lib/modules/load-order"):
        assert member in listing
    assert boot.kernel.read_bytes()[:4] == b"\x7fELF"


def test_boot_files_are_cached_by_recipe() -> None:
    first = tinyimage.boot_files()
    mtime = first.initramfs.stat().st_mtime_ns
    again = tinyimage.boot_files()
    assert again == first and again.initramfs.stat().st_mtime_ns == mtime
    assert first.recipe in str(first.initramfs)


def test_memhog_rejects_bad_usage(tmp_path) -> None:
    exe = tmp_path / "memhog"
    tinyimage.compile_memhog(exe)
    done = subprocess.run([str(exe)], capture_output=True, text=True)
    assert done.returncode == 2 and "usage" in done.stderr
    # Filling 1 MiB without dirtying prints the marker the guest waits for.
    proc = subprocess.Popen([str(exe), "1", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "FILLED 1"
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("bad", [b"", b"not a kernel"])
def test_kernel_without_xz_payload_is_refused(tmp_path, bad: bytes) -> None:
    from vmshift.errors import OperationFailed
    src = tmp_path / "vmlinuz"
    src.write_bytes(bad)
    with pytest.raises(OperationFailed, match="no xz payload"):
        tinyimage.uncompressed_kernel(src, tmp_path / "out")
