"""Round trips: every input form made with qemu-img from one raw source
(random data, long zero runs, data beyond 2 GiB, a size that is not a
multiple of the cluster size), converted by `vmshift convert disk`, then
compared with `qemu-img compare` against the raw source."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.disks_support import (
    ISLANDS,
    SOURCE_SIZE,
    GiB,
    MiB,
    apply_writes,
    fingerprint,
    identical,
    make_esxi,
    make_form,
    make_hosted_delta,
    make_raw_source,
    make_vmfs_sparse_delta,
)
from vmshift.cli import main
from vmshift.convert import vmdk

FORMS = ["monolithicSparse", "streamOptimized", "monolithicFlat", "twoGbMaxExtentSparse",
         "twoGbMaxExtentFlat", "esxi", "raw", "qcow2", "vdi", "vpc", "vhdx"]
DELTA_WRITES = [(100 * MiB, b"\xab" * 65536), (2 * GiB + 12288, b"\xcd" * 8192)]


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = make_raw_source(tmp_path_factory.mktemp("src") / "src.raw")
    assert SOURCE_SIZE % 65536 != 0 and SOURCE_SIZE > 2 * GiB
    return src


EVENTS: list[dict] = []  # JSON progress lines of the last convert() call


def convert(*args: str, capsys: pytest.CaptureFixture[str] | None = None) -> dict:
    code = main(["convert", "disk", "--json", *args])
    captured = capsys.readouterr() if capsys else None
    out = captured.out if captured else ""
    assert code == 0, (captured.err[-2000:] if captured else code, sources(args))
    EVENTS[:] = [json.loads(line) for line in (captured.err if captured else "").splitlines()
                 if line.startswith("{")]
    return json.loads(out) if out else {}


def sources(args: tuple[str, ...]) -> dict[str, str]:
    """What the source files held when a conversion failed: sizes and first bytes."""
    def head(f: Path) -> str:
        with open(f, "rb") as fh:
            return f"{f.stat().st_size} B {fh.read(120)!r}"
    dirs = {Path(a).parent for a in args if Path(a).is_file()}
    return {str(f): head(f) for d in dirs for f in sorted(d.iterdir()) if f.is_file()}


def info(path: Path) -> dict:
    proc = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                          capture_output=True, text=True)
    return json.loads(proc.stdout)


@pytest.mark.parametrize("form", FORMS)
def test_round_trip_every_input_form(raw: Path, tmp_path: Path, form: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    src = make_form(raw, form, tmp_path / "in")
    if form.startswith("twoGb"):
        assert len(vmdk.parse_descriptor(src).extents) >= 2  # really split
    before = fingerprint(src.parent)
    out = tmp_path / "out.qcow2"
    doc = convert(str(src), str(out), capsys=capsys)
    assert doc["disks"][0]["verified"] is True
    assert identical(raw, out, "raw", "qcow2"), f"{form}: output differs from the source"
    meta = info(out)
    assert meta["format"] == "qcow2" and meta["virtual-size"] == SOURCE_SIZE
    assert meta["format-specific"]["data"]["compat"] == "1.1"
    assert fingerprint(src.parent) == before, "the source was modified"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out.qcow2"]  # no temp left


def test_raw_output_is_sparse_and_identical(raw: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    src = make_form(raw, "twoGbMaxExtentSparse", tmp_path / "in")
    out = tmp_path / "out.raw"
    doc = convert("--format", "raw", str(src), str(out), capsys=capsys)
    assert "-W" in doc["disks"][0]["qemu_img"]  # out-of-order writes are safe for raw
    assert identical(raw, out, "raw", "raw")
    data = sum(length for _, length in ISLANDS)
    assert out.stat().st_size == SOURCE_SIZE
    assert out.stat().st_blocks * 512 < data + 16 * MiB  # holes stayed holes


def test_compressed_and_cluster_size_and_preallocation(raw: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    src = make_form(raw, "monolithicSparse", tmp_path / "in")
    small = tmp_path / "c.qcow2"
    doc = convert("--compress", "--cluster-size", "128k", str(src), str(small), capsys=capsys)
    assert "-c" in doc["disks"][0]["qemu_img"] and "-W" not in doc["disks"][0]["qemu_img"]
    assert info(small)["cluster-size"] == 128 * 1024
    assert identical(raw, small, "raw", "qcow2")
    full = tmp_path / "p.qcow2"
    doc = convert("--preallocation", "metadata", str(src), str(full), capsys=capsys)
    assert "-W" in doc["disks"][0]["qemu_img"]  # preallocated: clusters have fixed places
    assert identical(raw, full, "raw", "qcow2")


def test_hosted_snapshot_delta_and_snapshot_point(raw: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    base = make_form(raw, "monolithicSparse", tmp_path / "in")
    child = make_hosted_delta(base, DELTA_WRITES)
    expected = apply_writes(raw, tmp_path / "expected.raw", DELTA_WRITES)
    current = tmp_path / "current.qcow2"
    convert(str(child), str(current), capsys=capsys)
    assert identical(expected, current, "raw", "qcow2")
    assert "backing-filename" not in info(current)  # flattened: no chain to the source
    at_base = tmp_path / "base.qcow2"
    doc = convert("--snapshot", base.name, str(child), str(at_base), capsys=capsys)
    assert doc["disks"][0]["read"].endswith("disk.vmdk")
    assert identical(raw, at_base, "raw", "qcow2")


def test_esxi_vmfs_sparse_delta(raw: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "ds"
    d.mkdir()
    parent = make_esxi(raw, d)
    delta = make_vmfs_sparse_delta(parent, SOURCE_SIZE, DELTA_WRITES)
    expected = apply_writes(raw, tmp_path / "expected.raw", DELTA_WRITES)
    out = tmp_path / "out.qcow2"
    doc = convert(str(delta), str(out), capsys=capsys)
    assert doc["disks"][0]["source_format"] == "vmdk (vmfsSparse)"
    assert identical(expected, out, "raw", "qcow2")


def test_several_disks_in_parallel_into_a_directory(raw: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    a = make_form(raw, "monolithicSparse", tmp_path / "a")
    b = make_form(raw, "vhdx", tmp_path / "b").rename(tmp_path / "b" / "data.vhdx")
    outdir = tmp_path / "out"
    outdir.mkdir()
    doc = convert("--parallel-disks", "2", str(a), str(b), str(outdir), capsys=capsys)
    assert [Path(d["output"]).name for d in doc["disks"]] == ["disk.qcow2", "data.qcow2"]
    outputs = sorted(outdir.iterdir())
    assert [o.name for o in outputs] == ["data.qcow2", "disk.qcow2"]
    assert all(identical(raw, o, "raw", "qcow2") for o in outputs)
    # --json progress: per disk and phase, plus a total across both disks, in bytes.
    tasks = {e["task"] for e in EVENTS if e["event"] == "progress"}
    assert {"convert disk.vmdk", "convert data.vhdx", "verify disk.vmdk", "verify data.vhdx",
            "convert (total)"} <= tasks
    total = [e for e in EVENTS if e.get("task") == "convert (total)"]
    assert total[-1]["done"] == total[-1]["total"] == 2 * SOURCE_SIZE


def test_qcow2_backing_chain_and_unknown_snapshot(raw: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    base = make_form(raw, "qcow2", tmp_path / "in")
    top = tmp_path / "in" / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base.name, "-F", "qcow2",
                    str(top)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 171 {100 * MiB} 65536",
                    str(top)], check=True, capture_output=True)
    expected = apply_writes(raw, tmp_path / "expected.raw", [(100 * MiB, b"\xab" * 65536)])
    convert(str(top), str(tmp_path / "now.qcow2"), capsys=capsys)
    assert identical(expected, tmp_path / "now.qcow2", "raw", "qcow2")
    convert("--snapshot", "base", str(top), str(tmp_path / "then.qcow2"), capsys=capsys)
    assert identical(raw, tmp_path / "then.qcow2", "raw", "qcow2")
    code = main(["convert", "disk", "--snapshot", "nope.qcow2", str(top),
                 str(tmp_path / "x.qcow2")])
    err = capsys.readouterr().err
    assert code == 2 and "'nope.qcow2' is not in the chain" in err and "top.qcow2" in err
    assert not (tmp_path / "x.qcow2").exists()
