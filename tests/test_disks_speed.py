"""What keeps `convert disk` fast without costing safety: the verification reads
through io_uring only where qemu-img 7.2 cannot hang on it, falls back for real
when the kernel refuses io_uring, and the command imports only what it needs."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.disks_support import MiB, identical, make_esxi, make_raw_source
from vmshift.convert import qemuimg

VMSHIFT = [sys.executable, "-m", "vmshift"]


def convert_json(*args: str, preexec: object = None) -> dict:
    # A timeout: a regression here is a qemu-img that never returns.
    proc = subprocess.run([*VMSHIFT, "convert", "disk", "--json", *args], capture_output=True,
                          text=True, timeout=120, preexec_fn=preexec)  # type: ignore[arg-type]
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def compare_in_child(a: Path, b: Path, preexec: object = None) -> tuple[str, str]:
    """qemuimg.compare() in a fresh process: (its result, the I/O engine it ended with)."""
    script = ("import sys; from pathlib import Path; from vmshift.convert import qemuimg; "
              "r = qemuimg.compare(Path(sys.argv[1]), 'raw', Path(sys.argv[2]), 'qcow2', None); "
              "print(r, qemuimg.AIO['engine'])")
    proc = subprocess.run([sys.executable, "-c", script, str(a), str(b)], capture_output=True,
                          text=True, timeout=120, preexec_fn=preexec)  # type: ignore[arg-type]
    assert proc.returncode == 0, proc.stderr[-2000:]
    result, engine = proc.stdout.strip().rsplit(" ", 1)
    return result, engine


def test_io_uring_only_for_files_qemu_reads_whole(tmp_path: Path) -> None:
    whole = make_raw_source(tmp_path / "whole.raw", MiB + 512, [(0, MiB)])
    ragged = make_raw_source(tmp_path / "ragged.raw", MiB + 100, [(0, MiB + 100)])
    assert "file.aio=io_uring" in qemuimg.image_opts(whole, "raw")
    assert "aio" not in qemuimg.image_opts(ragged, "raw")
    # O_DIRECT reads whole 4 KiB blocks: a 512-byte multiple is not enough.
    assert "aio" not in qemuimg.image_opts(whole, "raw", "none")


@pytest.mark.parametrize("form", ["ragged raw", "esxi descriptor"])
def test_files_with_a_partial_last_sector_convert_and_verify(tmp_path: Path,
                                                             form: str) -> None:
    """qemu-img 7.2 with io_uring hangs forever reading up to such a file's end."""
    raw = make_raw_source(tmp_path / "s.raw", 4 * MiB + 100, [(0, MiB), (3 * MiB, MiB + 100)])
    src = raw if form == "ragged raw" else make_esxi(
        make_raw_source(tmp_path / "e.raw", 4 * MiB, [(0, MiB)]), tmp_path)
    assert src.stat().st_size % 512 != 0
    assert "aio" not in qemuimg.image_opts(src, "raw" if form == "ragged raw" else "vmdk")
    doc = convert_json(str(src), str(tmp_path / "out.qcow2"))
    assert doc["disks"][0]["verified"]
    assert identical(src, tmp_path / "out.qcow2", None, "qcow2")


def _refuse_io_uring() -> None:
    """In the child: a seccomp filter failing io_uring_setup with EPERM, as container
    runtimes' default profiles do (x86_64; other architectures pass untouched)."""
    def op(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)
    allow, load, jeq, ret = 0x7FFF0000, 0x20, 0x15, 0x06
    prog = b"".join([op(load, 0, 0, 4), op(jeq, 1, 0, 0xC000003E), op(ret, 0, 0, allow),
                     op(load, 0, 0, 0), op(jeq, 0, 1, 425),  # __NR_io_uring_setup
                     op(ret, 0, 0, 0x00050000 | errno.EPERM), op(ret, 0, 0, allow)])
    code = ctypes.create_string_buffer(prog)
    fprog = ctypes.create_string_buffer(struct.pack("HxxxxxxQ", len(prog) // 8,
                                                    ctypes.addressof(code)))
    libc, ulong = ctypes.CDLL(None, use_errno=True), ctypes.c_ulong
    if libc.prctl(38, ulong(1), ulong(0), ulong(0), ulong(0)) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(22, ulong(2), ulong(ctypes.addressof(fprog)), ulong(0), ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the filter is written for x86_64")
def test_io_uring_refused_by_the_kernel_falls_back_to_threads(tmp_path: Path) -> None:
    src = make_raw_source(tmp_path / "s.raw", 8 * MiB, [(0, MiB), (5 * MiB, 2 * MiB)])
    out = tmp_path / "out.qcow2"
    doc = convert_json(str(src), str(out), preexec=_refuse_io_uring)
    assert doc["disks"][0]["verified"] and identical(src, out, "raw", "qcow2")
    probe = subprocess.run(["qemu-img", "info", "--image-opts", qemuimg.image_opts(src, "raw")],
                           capture_output=True, text=True, preexec_fn=_refuse_io_uring)
    assert probe.returncode != 0 and "Unable to use io_uring" in probe.stderr  # really refused
    assert compare_in_child(src, out) == ("(True, '')", "io_uring")
    assert compare_in_child(src, out, _refuse_io_uring) == ("(True, '')", "threads")
    _flip_last_byte(out)
    result, engine = compare_in_child(src, out, _refuse_io_uring)
    assert result.startswith("(False, 'Content mismatch") and engine == "threads"


def _flip_last_byte(image: Path) -> None:
    """A real change of guest data at the end of the image (via qemu-img map)."""
    extents = json.loads(subprocess.run(["qemu-img", "map", "--output=json", str(image)],
                                        check=True, capture_output=True, text=True).stdout)
    last = [e for e in extents if e.get("data")][-1]
    with open(image, "r+b") as f:
        f.seek(last["offset"] + last["length"] - 1)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0xFF]))


def test_convert_disk_imports_only_what_it_needs(tmp_path: Path) -> None:
    src = make_raw_source(tmp_path / "s.raw", 4 * MiB, [(0, MiB)])
    script = ("import sys; from vmshift.cli import main; "
              f"code = main(['convert', 'disk', '--json', {str(src)!r}, "
              f"{str(tmp_path / 'o.qcow2')!r}]); "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "('libvirt', 'guestfs', 'lxml', 'pyVmomi', 'tqdm', 'hivex', 'multiprocessing')"
              " or m.startswith(('vmshift.migrate', 'vmshift.inspect'))), file=sys.stderr); "
              "sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == "[]"
