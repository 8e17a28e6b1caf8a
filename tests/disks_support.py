"""Helpers for the disk conversion tests: build real images with qemu-img."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from vmshift.volumes import file_hash  # hole-independent content hash

MiB = 1024**2
GiB = 1024**3
# > 2 GiB so that the twoGbMaxExtent forms have several extents, a multiple of
# the sector size (VMDK sizes are in sectors) but not of the 64 KiB cluster.
SOURCE_SIZE = 2 * GiB + 5 * MiB + 3 * 4096 + 512
# (offset, length): random data islands separated by long zero runs, some
# beyond 2 GiB, one straddling the 2 GiB extent boundary, one in the last
# partial cluster.
ISLANDS = [(0, 1 * MiB), (7 * MiB + 1234 * 512, 300 * 1024), (1 * GiB, 2 * MiB),
           (2 * GiB - 64 * 1024, 128 * 1024), (2 * GiB + 3 * MiB, 1 * MiB),
           (SOURCE_SIZE - 8192 - 512, 8192 + 512)]
# A run of explicitly written zeroes (allocated in the raw file, zero in content).
WRITTEN_ZEROES = (512 * MiB, 4 * MiB)


def qemu_img(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True)


def make_raw_source(path: Path, size: int = SOURCE_SIZE,
                    islands: list[tuple[int, int]] | None = None, seed: int = 7) -> Path:
    """A sparse raw file with random data islands and long zero runs."""
    import random

    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, length in islands if islands is not None else ISLANDS:
            f.seek(offset)
            for done in range(0, length, 16 * MiB):  # randbytes() has a size limit
                f.write(rnd.randbytes(min(16 * MiB, length - done)))
        if islands is None:
            f.seek(WRITTEN_ZEROES[0])
            f.write(b"\0" * WRITTEN_ZEROES[1])
    return path


def make_form(raw: Path, form: str, directory: Path) -> Path:
    """Make one input form from ``raw``; return the file to hand to vmshift."""
    directory.mkdir(parents=True, exist_ok=True)
    if form in ("monolithicSparse", "streamOptimized", "monolithicFlat",
                "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"):
        out = directory / "disk.vmdk"
        qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", f"subformat={form}", str(raw),
                 str(out))
        return out
    if form == "esxi":
        return make_esxi(raw, directory)
    if form in ("qcow2", "vdi", "vhdx", "raw"):
        out = directory / f"disk.{form}"
        qemu_img("convert", "-f", "raw", "-O", form, str(raw), str(out))
        return out
    if form == "vpc":
        out = directory / "disk.vhd"
        # force_size keeps the exact size instead of rounding to a CHS geometry.
        qemu_img("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic,force_size=on",
                 str(raw), str(out))
        return out
    raise ValueError(form)


def make_esxi(raw: Path, directory: Path, name: str = "disk") -> Path:
    """What ESXi stores: a text descriptor (createType vmfs) plus NAME-flat.vmdk."""
    flat = directory / f"{name}-flat.vmdk"
    subprocess.run(["cp", "--sparse=always", str(raw), str(flat)], check=True)
    sectors = raw.stat().st_size // 512
    (directory / f"{name}.vmdk").write_text(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=fffffffe\n"
        "parentCID=ffffffff\ncreateType=\"vmfs\"\n\n# Extent description\n"
        f"RW {sectors} VMFS \"{name}-flat.vmdk\"\n\n# The Disk Data Base\n#DDB\n\n"
        "ddb.adapterType = \"lsilogic\"\nddb.geometry.cylinders = \"1024\"\n"
        "ddb.geometry.heads = \"255\"\nddb.geometry.sectors = \"63\"\n"
        "ddb.virtualHWVersion = \"13\"\n")
    return directory / f"{name}.vmdk"


def identical(a: Path, b: Path, a_fmt: str | None = None, b_fmt: str | None = None) -> bool:
    args = ["qemu-img", "compare"]
    args += (["-f", a_fmt] if a_fmt else []) + (["-F", b_fmt] if b_fmt else [])
    proc = subprocess.run([*args, str(a), str(b)], capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(directory: Path) -> dict[str, tuple[int, int, str]]:
    """name -> (size, mtime_ns, sha256 of allocated content) of every file."""
    out = {}
    for p in sorted(directory.iterdir()):
        if p.is_file():
            st = p.stat()
            out[p.name] = (st.st_size, st.st_mtime_ns, file_hash(p))
    return out


def has_tool(name: str) -> bool:
    return shutil.which(name) is not None


def make_hosted_delta(base: Path, writes: list[tuple[int, bytes]]) -> Path:
    """A Workstation-style snapshot: NAME-000001.vmdk (monolithicSparse with a parent)."""
    child = base.with_name(base.stem + "-000001.vmdk")
    qemu_img("create", "-f", "vmdk", "-b", base.name, "-F", "vmdk", str(child))
    for offset, data in writes:
        pattern = data[0]
        assert data == bytes([pattern]) * len(data)
        subprocess.run(["qemu-io", "-f", "vmdk", "-c",
                        f"write -P {pattern} {offset} {len(data)}", str(child)],
                       check=True, capture_output=True)
    return child


def make_vmfs_sparse_delta(parent: Path, size: int, writes: list[tuple[int, bytes]],
                           name: str = "disk-000001") -> Path:
    """An ESXi 'vmfsSparse' snapshot: descriptor + COWD delta extent, written by hand
    (qemu-img can read COWD but not create it). Grains are 4 KiB (8 sectors)."""
    import struct

    grain, l2_entries = 8, 4096
    sectors = size // 512
    l1_size = -(-sectors // (l2_entries * grain))
    l1_offset = 4  # sectors
    l2_start = l1_offset + -(-l1_size * 4 // 512)
    tables: dict[int, list[int]] = {}
    grains: list[tuple[int, int, bytes]] = []  # (l1 index, l2 index, data)
    for offset, data in writes:
        assert offset % 4096 == 0 and len(data) % 4096 == 0
        for i in range(0, len(data), 4096):
            g = (offset + i) // 4096
            grains.append((g // l2_entries, g % l2_entries, data[i:i + 4096]))
            tables.setdefault(g // l2_entries, [0] * l2_entries)
    l2_at = {idx: l2_start + n * (l2_entries * 4 // 512) for n, idx in enumerate(sorted(tables))}
    next_sector = l2_start + len(tables) * (l2_entries * 4 // 512)
    blobs = []
    for l1i, l2i, data in grains:
        tables[l1i][l2i] = next_sector
        blobs.append((next_sector, data))
        next_sector += grain
    l1 = [l2_at.get(i, 0) for i in range(l1_size)]
    delta = parent.parent / f"{name}-delta.vmdk"
    with open(delta, "wb") as f:
        f.write(b"COWD" + struct.pack("<10I", 1, 3, sectors, grain, l1_offset, l1_size,
                                      next_sector, 0, 0, 0))
        f.seek(l1_offset * 512)
        f.write(struct.pack(f"<{l1_size}I", *l1))
        for idx, table in tables.items():
            f.seek(l2_at[idx] * 512)
            f.write(struct.pack(f"<{l2_entries}I", *table))
        for sector, data in blobs:
            f.seek(sector * 512)
            f.write(data)
        f.truncate(next_sector * 512)
    parent_cid = _cid_of(parent)
    desc = parent.parent / f"{name}.vmdk"
    desc.write_text(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\nCID=5eed0001\n"
        f"parentCID={parent_cid}\ncreateType=\"vmfsSparse\"\n"
        f"parentFileNameHint=\"{parent.name}\"\n\n# Extent description\n"
        f"RW {sectors} VMFSSPARSE \"{delta.name}\"\n\n#DDB\nddb.adapterType = \"lsilogic\"\n")
    return desc


def _cid_of(descriptor: Path) -> str:
    for line in descriptor.read_text(errors="replace").splitlines():
        if line.startswith("CID="):
            return line[4:].strip()
    raise ValueError(descriptor)


def apply_writes(raw: Path, out: Path, writes: list[tuple[int, bytes]]) -> Path:
    """``out`` = ``raw`` with ``writes`` applied: the expected content of a delta."""
    subprocess.run(["cp", "--sparse=always", str(raw), str(out)], check=True)
    with open(out, "r+b") as f:
        for offset, data in writes:
            f.seek(offset)
            f.write(data)
    return out


VMSHIFT = [str(Path(sys.executable).parent / "vmshift")]


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*VMSHIFT, "convert", "disk", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_mid_copy(proc: subprocess.Popen[str], task_prefix: str = "convert") -> float:
    """Read JSON progress lines until the copy is under way; return the fraction done."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "progress" and event["task"].startswith(task_prefix):
            fraction = event["done"] / event["total"]
            if 0 < fraction < 0.9:
                return fraction
    raise AssertionError(f"never saw the copy under way (exit {proc.poll()})")
