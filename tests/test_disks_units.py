"""Small pieces of the disk engine: progress parsing, the hole-independent hash,
option checks, destination planning. Fast; no large images."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.disks_support import MiB, make_raw_source
from vmshift.convert import qemuimg
from vmshift.convert.disks import ConvertOptions, check_options, out_of_order
from vmshift.convert.safety import Undo, temp_name
from vmshift.errors import BadInput
from vmshift.volumes import ContentHash, data_segments, file_hash


def test_progress_lines_as_qemu_img_prints_them() -> None:
    assert qemuimg.parse_progress(b"    (12.34/100%)") == pytest.approx(0.1234)
    assert qemuimg.parse_progress(b"    (100.00/100%)") == 1.0
    assert qemuimg.parse_progress(b"Images are identical.") is None


def test_progress_is_pumped_from_a_real_qemu_img(tmp_path: Path) -> None:
    src = make_raw_source(tmp_path / "s.raw", 8 * MiB, [(0, 8 * MiB)])
    seen: list[float] = []
    proc = qemuimg.run_with_progress(["convert", "-p", "-f", "raw", "-O", "qcow2", str(src),
                                      str(tmp_path / "o.qcow2")], seen.append, what="t")
    assert proc.returncode == 0 and seen[0] == 0.0 and seen[-1] == 1.0
    assert seen == sorted(seen)


def test_compare_reports_a_difference_with_its_offset(tmp_path: Path) -> None:
    a = make_raw_source(tmp_path / "a.raw", 4 * MiB, [(0, MiB)], seed=1)
    b = make_raw_source(tmp_path / "b.raw", 4 * MiB, [(0, MiB)], seed=2)
    same, message = qemuimg.compare(a, "raw", b, "raw", None)
    assert not same and "offset" in message.lower()
    assert qemuimg.compare(a, "raw", a, "raw", None) == (True, "")


def test_image_opts_double_commas() -> None:
    opts = qemuimg.image_opts(Path("/x/a,b.qcow2"), "qcow2")
    assert "file.filename=/x/a,,b.qcow2" in opts and "l2-cache-entry-size=512" in opts


def test_content_hash_ignores_how_zeroes_are_stored(tmp_path: Path) -> None:
    sparse = make_raw_source(tmp_path / "sparse.raw", 5 * MiB + 512, [(MiB, 4096)])
    dense = tmp_path / "dense.raw"
    subprocess.run(["cp", "--sparse=never", str(sparse), str(dense)], check=True)
    assert dense.stat().st_blocks > sparse.stat().st_blocks
    assert file_hash(sparse) == file_hash(dense)
    # Same bytes fed as holes and data in odd pieces: same hash.
    h = ContentHash()
    h.hole(MiB - 100)
    h.data(b"\0" * 100 + sparse.read_bytes()[MiB:MiB + 4096])
    h.hole(4 * MiB - 4096 + 512)
    assert h.hexdigest() == file_hash(sparse)
    fd = os.open(sparse, os.O_RDONLY)
    try:
        runs = data_segments(fd, sparse.stat().st_size)
    finally:
        os.close(fd)
    assert any(is_data for _, _, is_data in runs) and runs[0] == (0, MiB, False)


def test_option_checks() -> None:
    check_options(ConvertOptions())
    for bad, msg in [(ConvertOptions(out_format="vmdk"), "--format"),
                     (ConvertOptions(out_format="raw", compress=True), "--compress"),
                     (ConvertOptions(compress=True, preallocation="full"), "exclude"),
                     (ConvertOptions(cluster_size=3000), "--cluster-size"),
                     (ConvertOptions(coroutines=64), "--coroutines"),
                     (ConvertOptions(pool="p"), "--pool and --connect"),
                     (ConvertOptions(bandwidth=0), "--bandwidth")]:
        with pytest.raises(BadInput, match=msg):
            check_options(bad)


def test_out_of_order_writes_only_where_safe() -> None:
    assert not out_of_order(ConvertOptions())  # sparse qcow2 would fragment
    assert out_of_order(ConvertOptions(out_format="raw"))
    assert out_of_order(ConvertOptions(preallocation="metadata"))
    assert not out_of_order(ConvertOptions(out_format="raw", out_of_order="off"))


def test_temp_names(tmp_path: Path) -> None:
    t = temp_name(tmp_path / "disk.qcow2")
    assert t.parent == tmp_path and t.name.startswith(".disk.qcow2.vmshift-")


def test_undo_runs_newest_first_and_reports_failures(tmp_path: Path) -> None:
    order: list[str] = []
    undo = Undo()
    undo.add("a", lambda: order.append("a"))
    keep = undo.add("b", lambda: order.append("b"))
    undo.add("boom", lambda: 1 / 0)
    undo.discard(keep)
    failures = undo.run()
    assert order == ["a"] and len(failures) == 1 and failures[0].startswith("boom")
