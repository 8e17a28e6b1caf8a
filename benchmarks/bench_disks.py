"""Disk conversion speed: vmshift vs plain qemu-img vs the sparse-copy limit.

Input: a monolithicSparse VMDK of several GiB with a realistic mix of data
and zeroes: the reference guest's disk when the test bed has built it,
otherwise a synthetic one (4 GiB virtual, ~1.1 GiB of data in extents of
4 KiB to 8 MiB, half compressible text, half random, like a used root fs).

Every command starts with a cold page cache (sync + drop_caches), commands
alternate within each round, and the median of the rounds is reported.
Run: `python -m benchmarks.bench_disks [--rounds N]` (or `make bench`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

VMSHIFT = str(Path(sys.executable).parent / "vmshift")
STEPS: dict[str, list[float]] = {}  # vmshift's own per-disk step times, from --json
MiB, GiB = 1024**2, 1024**3
RECIPE = "synthetic-v1: 4GiB, seed 11, 1.1GiB data, 4K-8M extents, 50% text"


def cache_dir() -> Path:
    d = Path(os.environ.get("VMSHIFT_CACHE", "/var/cache/vmshift")) / "bench-disks"
    d.mkdir(parents=True, exist_ok=True)
    return d


def synthetic_raw(path: Path) -> None:
    """A used-filesystem-like raw disk: clustered data islands, long zero runs."""
    rnd = random.Random(11)
    text = (b"Lorem ipsum dolor sit amet, /usr/lib/x86_64-linux-gnu/libc.so.6 "
            b"\x00\x00\x01\x00ELF\x02\x01\x01 config=true\n") * 4096
    with open(path, "wb") as f:
        f.truncate(4 * GiB)
        written, offset = 0, 1 * MiB
        while written < 1100 * MiB and offset < 4 * GiB - 16 * MiB:
            length = rnd.choice([4096, 65536, 256 * 1024, MiB, 4 * MiB, 8 * MiB])
            f.seek(offset)
            blob = os.urandom(length) if rnd.random() < 0.5 else (text * 8)[:length]
            f.write(blob)
            written += length
            offset += length + rnd.choice([0, 0, 4096, 128 * 1024, MiB, 6 * MiB])


def reference_guest_disks() -> tuple[Path, Path, Path] | None:
    """(monolithicSparse, streamOptimized, raw) of the test bed's reference
    guest, if it is already built (never builds it: that takes minutes)."""
    try:
        from vmshift.testbed.guest import cached_guest

        guest = cached_guest("base")
    except Exception:  # the reference guest is optional for this benchmark
        return None
    if guest is None:
        return None
    disks = (Path(guest.vmdk_sparse), Path(guest.vmdk_stream), Path(guest.raw))
    return disks if all(p.exists() for p in disks) else None


def inputs() -> tuple[str, Path, Path, Path]:
    """(label, monolithicSparse vmdk, streamOptimized vmdk, raw equivalent)."""
    ref = reference_guest_disks()
    if ref is not None:
        return ("reference guest disk", *ref)
    d = cache_dir()
    tag, label = hashlib.sha256(RECIPE.encode()).hexdigest()[:12], "synthetic disk"
    sparse, raw, stream = d / f"{tag}-sparse.vmdk", d / f"{tag}.raw", d / f"{tag}-stream.vmdk"
    if not raw.exists():
        print(f"building {RECIPE} ...", flush=True)
        synthetic_raw(raw.with_suffix(".tmp"))
        raw.with_suffix(".tmp").rename(raw)
    for out, sub in ((sparse, "monolithicSparse"), (stream, "streamOptimized")):
        if not out.exists():
            # Built under its final name (a VMDK names itself in its descriptor),
            # in a side directory, then moved in: no half-built input is ever used.
            side = d / ".build"
            side.mkdir(exist_ok=True)
            _qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", f"subformat={sub}",
                      str(raw), str(side / out.name))
            (side / out.name).rename(out)
    return label, sparse, stream, raw


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def cold_cache() -> None:
    """Write back dirty pages, then drop the page cache (needs root)."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as exc:
        print(f"warning: cannot drop caches ({exc}); results are warm-cache", flush=True)


def timed(argv: list[str], out: Path) -> tuple[float, float]:
    """(exit, durable) wall times of one command, cold cache.

    vmshift fsyncs its output before renaming it into place; qemu-img (cache
    'unsafe' by default) and cp leave it in the page cache. 'durable' adds the
    `sync` that makes everyone's output safe on disk, so the three are compared
    doing the same work; 'exit' is what a user sees at the prompt.
    """
    _remove(out)
    cold_cache()
    start = time.monotonic()
    proc = subprocess.run(argv, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True)
    exited = time.monotonic() - start
    os.sync()
    durable = time.monotonic() - start
    _remove(out)
    if "--json" in argv:  # vmshift: also record its qemu-img step alone
        key = ("--no-verify " if "--no-verify" in argv else "") + Path(argv[-2]).name
        STEPS.setdefault(key, []).append(
            json.loads(proc.stdout)["disks"][0]["seconds"])
    return exited, durable


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


Medians = dict[str, tuple[float, float]]


def run_set(commands: dict[str, Callable[[], tuple[float, float]]], rounds: int) -> Medians:
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for r in range(rounds):
        # Alternate the order each round so no command always runs after the same one.
        order = list(commands) if r % 2 == 0 else list(reversed(commands))
        for name in order:
            times[name].append(commands[name]())
            exited, durable = times[name][-1]
            print(f"  round {r + 1}: {name}: exit {exited:.2f} s, durable {durable:.2f} s",
                  flush=True)
    return {name: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v))
            for name, v in times.items()}


def table(title: str, medians: Medians, ref: str, limit: str | None) -> str:
    head = f"| command | exit s | durable s | durable vs {ref} |"
    head += f" durable vs {limit} |" if limit else ""
    lines = [f"\n{title}", head, "|---|---|---|---|" + ("---|" if limit else "")]
    for name, (exited, durable) in medians.items():
        row = f"| {name} | {exited:.2f} | {durable:.2f} | {durable / medians[ref][1]:.2f}x |"
        if limit:
            row += f" {durable / medians[limit][1]:.2f}x |"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    label, sparse, stream, raw = inputs()
    info = subprocess.run(["qemu-img", "info", str(sparse)], capture_output=True, text=True)
    print(f"input: {label}: {sparse}\n" + "\n".join(info.stdout.splitlines()[1:4]))
    work = Path(tempfile.mkdtemp(prefix="bench-disks-", dir=cache_dir()))
    out_q, out_r = work / "out.qcow2", work / "out.raw"
    try:
        vmshift = [VMSHIFT, "convert", "disk", "--force", "--json"]
        main_set = {
            "vmshift convert disk --no-verify": lambda: timed(
                [*vmshift, "--no-verify", str(sparse), str(out_q)], out_q),
            "qemu-img convert -O qcow2": lambda: timed(
                ["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(sparse), str(out_q)],
                out_q),
            "cp --sparse=always (raw)": lambda: timed(
                ["cp", "--sparse=always", str(raw), str(out_r)], out_r),
            "vmshift convert disk (default: + verify)": lambda: timed(
                [*vmshift, str(sparse), str(out_q)], out_q),
        }
        print("monolithicSparse -> qcow2", flush=True)
        m1 = run_set(main_set, args.rounds)
        stream_set = {
            "vmshift convert disk --no-verify": lambda: timed(
                [*vmshift, "--no-verify", str(stream), str(out_q)], out_q),
            "qemu-img convert -O qcow2": lambda: timed(
                ["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(stream), str(out_q)],
                out_q),
        }
        print("streamOptimized -> qcow2", flush=True)
        m2 = run_set(stream_set, args.rounds)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(f"monolithicSparse VMDK -> qcow2 ({label}, cold cache, median of "
                f"{args.rounds})", m1, "qemu-img convert -O qcow2", "cp --sparse=always (raw)"))
    print(table(f"streamOptimized VMDK -> qcow2 (median of {args.rounds})", m2,
                "qemu-img convert -O qcow2", None))
    print("\nvmshift's own conversion step (qemu-img convert inside vmshift, from --json "
          "'seconds'; the rest is start-up, checks and the fsync):")
    for key, values in STEPS.items():
        print(f"  {key}: median {statistics.median(values):.2f} s over {len(values)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
