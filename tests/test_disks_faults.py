"""Faults: refusals, a filesystem filled mid-copy, corrupt input, signals,
verification mismatch. Every case: clear message, right exit code, nothing
partial left behind, source unchanged."""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.disks_support import (
    MiB,
    fingerprint,
    identical,
    make_form,
    make_raw_source,
    qemu_img,
    start,
    wait_mid_copy,
)
from vmshift.cli import main
from vmshift.convert.disk_plan import plan
from vmshift.convert.disks import ConvertOptions, Run
from vmshift.convert.verify import VerificationFailed, verify_image
from vmshift.errors import OperationFailed


@pytest.fixture
def dense(tmp_path: Path) -> Path:
    """64 MiB of random data: fully allocated, so copying it takes real writes.

    qemu-img -p reports a request when it starts and its rate limiter lets a
    first burst through: 64 MiB at 8 MiB/s shows ~12-37% at once, then about
    7 s of copying, a wide window in which to act mid-run."""
    d = tmp_path / "src"
    d.mkdir()
    return make_raw_source(d / "dense.raw", 64 * MiB, [(0, 64 * MiB)], seed=3)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        mnt = tmp_path / f"mnt{len(mounts)}"
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                       check=True)
        mounts.append(mnt)
        return mnt

    yield mount
    for mnt in mounts:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def run_cli(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["convert", "disk", *args])
    return code, capsys.readouterr().err


def test_target_too_small_is_refused_before_anything_is_created(
        dense: Path, tmpfs: Callable[[str], Path], capsys: pytest.CaptureFixture[str]) -> None:
    mnt = tmpfs("16M")
    code, err = run_cli("--format", "raw", str(dense), str(mnt / "out.raw"), capsys=capsys)
    assert code == 1
    assert f"not enough free space in {mnt}" in err and "nothing was written" in err
    assert list(mnt.iterdir()) == []


def test_filesystem_filled_by_another_writer_mid_copy(dense: Path,
                                                      tmpfs: Callable[[str], Path]) -> None:
    mnt = tmpfs("96M")
    before = fingerprint(dense.parent)
    proc = start("--bandwidth", "8M", "--format", "raw", str(dense), str(mnt / "out.raw"))
    wait_mid_copy(proc)
    # Another writer takes every free byte while qemu-img is still copying.
    with open(mnt / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\xff" * MiB)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "no space left in" in err and "partial output removed" in err
    assert sorted(p.name for p in mnt.iterdir()) == ["filler"]  # no partial file
    assert fingerprint(dense.parent) == before  # source unchanged


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_run_leaves_nothing(dense: Path, tmp_path: Path, signum: int) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = start("--bandwidth", "8M", str(dense), str(out / "disk.qcow2"))
    fraction = wait_mid_copy(proc)
    assert proc.poll() is None and 0 < fraction < 0.9  # really mid-run
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert f"interrupted by {signal.Signals(signum).name}" in err
    assert list(out.iterdir()) == []
    assert not _qemu_img_writing(out)  # the child was killed, not orphaned


def _qemu_img_writing(directory: Path) -> bool:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-img" in cmd and str(directory).encode() in cmd:
            return True
    return False


def test_corrupted_grain_table_gives_clear_error(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    raw = make_raw_source(tmp_path / "s.raw", 64 * MiB, [(0, MiB), (40 * MiB, MiB)])
    src = make_form(raw, "monolithicSparse", tmp_path / "in")
    data = bytearray(src.read_bytes())
    gd = struct.unpack_from("<Q", data, 56)[0]
    gt0 = struct.unpack_from("<I", data, gd * 512)[0]
    struct.pack_into("<I", data, gt0 * 512, 0x7FFFFF00)  # grain 0 now points past EOF
    src.write_bytes(data)
    code, err = run_cli(str(src), str(tmp_path / "out.qcow2"), capsys=capsys)
    assert code == 2
    assert f"{src}: grain table 0 entry 0 points to sector" in err and "corrupt" in err
    assert not (tmp_path / "out.qcow2").exists()


def test_descriptor_pointing_outside_its_directory(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "secret-flat.vmdk").write_bytes(b"\x42" * 1024 * 1024)
    vm = tmp_path / "vm"
    vm.mkdir()
    desc = vm / "disk.vmdk"
    desc.write_text('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                    'createType="vmfs"\nRW 2048 VMFS "../secret-flat.vmdk"\n')
    code, err = run_cli(str(desc), str(tmp_path / "out.qcow2"), capsys=capsys)
    assert code == 2 and f"{desc}:6: extent path '../secret-flat.vmdk' climbs out" in err
    assert not (tmp_path / "out.qcow2").exists()


def test_existing_target_needs_force_and_source_is_never_a_target(
        dense: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.qcow2"
    out.write_bytes(b"keep me")
    code, err = run_cli(str(dense), str(out), capsys=capsys)
    assert code == 2 and "exists; refusing to overwrite it (use --force)" in err
    assert out.read_bytes() == b"keep me"
    code, err = run_cli("--force", "--no-verify", str(dense), str(out), capsys=capsys)
    assert code == 0 and identical(dense, out, "raw", "qcow2")
    code, err = run_cli("--force", "--format", "raw", str(dense), str(dense), capsys=capsys)
    assert code == 2 and "is one of the source's own files" in err


def test_content_extension_and_unsupported_checks(dense: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "looks.vmdk"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(dense), str(fake))
    code, err = run_cli(str(fake), str(tmp_path / "o1.qcow2"), capsys=capsys)
    assert code == 2 and "content is qcow2 but the extension says vmdk" in err
    flat = tmp_path / "disk-flat.vmdk"
    flat.write_bytes(b"\x01" * 4096)
    code, err = run_cli(str(flat), str(tmp_path / "o2.qcow2"), capsys=capsys)
    assert code == 2 and "looks like a flat extent; pass the descriptor" in err
    empty = tmp_path / "empty.vmdk"
    empty.touch()
    code, err = run_cli(str(empty), str(tmp_path / "o5.qcow2"), capsys=capsys)
    assert code == 2 and f"{empty}: is empty (0 bytes), not a disk image" in err
    # ...unless the user says so; --source-format must still agree with the content.
    code, _ = run_cli("--dry-run", "--source-format", "raw", str(flat),
                      str(tmp_path / "o2.qcow2"), capsys=capsys)
    assert code == 0
    code, err = run_cli("--dry-run", "--source-format", "vdi", str(flat),
                        str(tmp_path / "o2.qcow2"), capsys=capsys)
    assert code == 2 and "--source-format vdi but the content is raw" in err
    rdm = tmp_path / "rdm.vmdk"
    rdm.write_text('CID=fffffffe\nparentCID=ffffffff\ncreateType="vmfsRawDeviceMap"\n'
                   'RW 2048 VMFSRDM "rdm-rdm.vmdk"\n')
    code, err = run_cli(str(rdm), str(tmp_path / "o3.qcow2"), capsys=capsys)
    assert code == 2 and "unsupported VMDK type vmfsRawDeviceMap" in err
    # An seSparse delta qemu-img 7.2 cannot read (bad constant header): "unsupported".
    (tmp_path / "s-sesparse.vmdk").write_bytes(struct.pack("<QQ", 0xCAFEBABE, 99) * 256)
    ses = tmp_path / "s.vmdk"
    ses.write_text('CID=fffffffe\nparentCID=ffffffff\ncreateType="seSparse"\n'
                   'RW 2048 SESPARSE "s-sesparse.vmdk"\n')
    code, err = run_cli(str(ses), str(tmp_path / "o4.qcow2"), capsys=capsys)
    assert code == 2 and "unsupported seSparse VMDK (qemu-img cannot read it)" in err
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("o")) == []


def test_dry_run_creates_nothing(dense: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["convert", "disk", "--dry-run", "--json", str(dense),
                 str(tmp_path / "x.qcow2")])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["dry_run"] is True and doc["disks"][0]["qemu_img"][1] == "convert"
    assert not (tmp_path / "x.qcow2").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


def _flip_first_data_byte(image: Path) -> None:
    """Flip one byte of guest data inside a qcow2 file (found via qemu-img map)."""
    extents = json.loads(qemu_img("map", "--output=json", str(image)).stdout)
    host = next(e["offset"] for e in extents if e.get("data"))
    with open(image, "r+b") as f:
        f.seek(host + 4321)
        byte = f.read(1)
        f.seek(host + 4321)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_flipped_byte_fails_verification(dense: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.qcow2"
    code, _ = run_cli("--no-verify", str(dense), str(out), capsys=capsys)
    assert code == 0
    verify_image(dense, "raw", out, "qcow2")  # identical: passes
    _flip_first_data_byte(out)
    with pytest.raises(VerificationFailed, match="differs from"):
        verify_image(dense, "raw", out, "qcow2")


def test_mismatch_during_a_run_is_a_failure_and_leaves_nothing(dense: Path,
                                                               tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # Test hook (not a fake): a real byte flip in the real output between the copy
    # and the real `qemu-img compare`.
    o = ConvertOptions(after_convert=_flip_first_data_byte)
    jobs, target = plan([dense], str(out_dir / "disk.qcow2"), o)
    with pytest.raises(OperationFailed, match="verification failed"):
        Run(jobs, o, target).execute()
    assert list(out_dir.iterdir()) == []


def test_one_failing_disk_of_several_leaves_no_output_at_all(dense: Path,
                                                              tmp_path: Path) -> None:
    other = make_raw_source(tmp_path / "src" / "other.raw", 8 * MiB, [(0, MiB)], seed=9)
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def corrupt_only_dense(staging: Path) -> None:  # test hook: a real flip in one output
        if ".dense." in staging.name:
            _flip_first_data_byte(staging)

    o = ConvertOptions(parallel_disks=2, after_convert=corrupt_only_dense)
    jobs, target = plan([dense, other], str(out_dir), o)
    with pytest.raises(OperationFailed, match="dense"):
        Run(jobs, o, target).execute()
    assert list(out_dir.iterdir()) == []  # other.qcow2 converted fine, but is gone too


@pytest.mark.parametrize(("flags", "sync"), [
    ((), True), (("--no-verify",), False), (("--no-verify", "--sync"), True),
    (("--no-sync",), False)])
def test_output_is_fsynced_before_its_rename_when_asked(
        dense: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], sync: bool) -> None:
    """The verified default makes the output durable before it gets its name
    (the file, then its directory); --no-verify leaves that to the kernel, as
    plain qemu-img does, unless --sync asks for it. A spy on the one fsync
    helper records what was flushed."""
    from vmshift.convert import safety

    flushed: list[Path] = []
    real = safety.fsync_file
    monkeypatch.setattr(safety, "fsync_file", lambda p: (flushed.append(Path(p)), real(p)))
    out = tmp_path / "out.qcow2"
    code, _ = run_cli(*flags, str(dense), str(out), capsys=capsys)
    assert code == 0 and identical(dense, out, "raw", "qcow2")
    if sync:
        assert len(flushed) == 2 and flushed[0].name.startswith(".out.qcow2.")
        assert flushed[1] == tmp_path
    else:
        assert flushed == []


def test_exact_estimate_is_reported_though_the_copy_did_not_wait_for_it(
        dense: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With room to spare, the space check passes on a bound and `qemu-img
    measure` runs beside the copy; the report still gives measure's figure."""
    out = tmp_path / "out.qcow2"
    assert main(["convert", "disk", "--no-verify", "--json", str(dense), str(out)]) == 0
    (disk,) = json.loads(capsys.readouterr().out)["disks"]
    measured = json.loads(subprocess.run(
        ["qemu-img", "measure", "--output=json", "-f", "raw", "-O", "qcow2", "-o",
         "compat=1.1", str(dense)], capture_output=True, text=True, check=True).stdout)
    assert disk["estimated_bytes"] == measured["required"]  # the figure, not the bound
