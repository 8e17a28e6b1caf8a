"""Disk conversion speed: vmshift against what an admin runs by hand, side by side.

Three comparisons, each measured as N interleaved pairs (vmshift, by hand,
vmshift, by hand, ...) with a warm page cache and with a cold one:

- ``vmshift convert disk --no-verify SRC DST`` against a plain
  ``qemu-img convert -O qcow2 SRC DST`` (goal: at most 1.1x); like plain
  qemu-img, it returns without waiting for the output to reach the disk;
- ``vmshift convert disk --no-verify --sync`` against the same, compared on
  "durable" time (qemu-img's output fsynced too), so both do the same work;
- ``vmshift convert disk SRC DST`` (verified, the default) against
  ``qemu-img convert -O qcow2 SRC DST`` followed by ``qemu-img compare SRC DST``,
  what a careful admin runs (goal: at most 1.0x).

Input: the reference guest's monolithicSparse VMDK when the test bed has
built it (``vmshift testbed guest build``), otherwise a synthetic disk of the
same kind (4 GiB virtual, ~1.1 GiB of data in extents of 4 KiB to 8 MiB).

Warm: the source is read once before the pairs and stays cached. Cold:
``sync; echo 3 > /proc/sys/vm/drop_caches`` before every command (needs root).
"exit" is the wall time until the command (or the admin's two commands) has
exited: what the user waits for. "durable" adds an fsync of the output: vmshift
fsyncs before its rename when verifying or given --sync, plain qemu-img (cache
'unsafe') leaves the output in the page cache, so "durable" compares the same
work. A ratio is the median of
the per-pair ratios (the two commands of a pair run back to back, under the
same load).

Run: ``python -m benchmarks.bench_disks [--pairs N] [--cache warm|cold|both]
[--stream]`` (``make bench`` runs it with the defaults).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmshift.convert.safety import fsync_file

VMSHIFT = str(Path(sys.executable).parent / "vmshift")
MiB, GiB = 1024**2, 1024**3
RECIPE = "synthetic-v1: 4GiB, seed 11, 1.1GiB data, 4K-8M extents, 50% text"
Times = tuple[float, float]  # (exit, durable) seconds


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


def reference_guest_disks() -> tuple[Path, Path] | None:
    """(monolithicSparse, streamOptimized) of the reference guest, if already built
    (never builds it: that takes minutes)."""
    try:
        from vmshift.testbed.guest import cached_guest

        guest = cached_guest("base")
    except Exception:  # the reference guest is optional for this benchmark
        return None
    if guest is None:
        return None
    disks = (Path(guest.vmdk_sparse), Path(guest.vmdk_stream))
    return disks if all(p.exists() for p in disks) else None


def inputs() -> tuple[str, Path, Path]:
    """(label, monolithicSparse vmdk, streamOptimized vmdk)."""
    ref = reference_guest_disks()
    if ref is not None:
        return ("reference guest disk", *ref)
    d = cache_dir()
    tag = hashlib.sha256(RECIPE.encode()).hexdigest()[:12]
    raw, sparse, stream = d / f"{tag}.raw", d / f"{tag}-sparse.vmdk", d / f"{tag}-stream.vmdk"
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
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o",
                            f"subformat={sub}", str(raw), str(side / out.name)],
                           check=True, capture_output=True)
            (side / out.name).rename(out)
    return "synthetic disk", sparse, stream


def drop_caches() -> None:
    """Write back dirty pages, then drop the page cache (needs root)."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(8 * MiB):
            pass


def timed(commands: list[list[str]], out: Path, cold: bool) -> Times:
    """(exit, durable) seconds of commands run one after the other into ``out``."""
    out.unlink(missing_ok=True)
    if cold:
        drop_caches()
    start = time.monotonic()
    for argv in commands:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    exited = time.monotonic() - start
    fsync_file(out)
    fsync_file(out.parent)
    durable = time.monotonic() - start
    out.unlink()
    return exited, durable


def pairs(a: list[list[str]], b: list[list[str]], out: Path, cold: bool, n: int,
          label: str) -> tuple[list[Times], list[Times]]:
    """n interleaved runs of a and b: a, b, a, b, ..."""
    got_a: list[Times] = []
    got_b: list[Times] = []
    for i in range(n):
        got_a.append(timed(a, out, cold))
        got_b.append(timed(b, out, cold))
        (ae, ad), (be, bd) = got_a[-1], got_b[-1]
        print(f"  {label} pair {i + 1}: vmshift {ae:.2f} s (durable {ad:.2f}), by hand "
              f"{be:.2f} s (durable {bd:.2f}): {ae / be:.2f}x ({ad / bd:.2f}x durable)",
              flush=True)
    return got_a, got_b


def summary(cache: str, what: str, goal: float, a: list[Times], b: list[Times],
            durable: bool = False) -> str:
    """One table row; the goal is judged on exit time, or on durable time when
    both sides fsync (``durable``)."""
    exit_ratio = statistics.median(x[0] / y[0] for x, y in zip(a, b, strict=True))
    durable_ratio = statistics.median(x[1] / y[1] for x, y in zip(a, b, strict=True))
    med = [statistics.median(t[k] for t in ts) for ts in (a, b) for k in (0, 1)]
    judged = durable_ratio if durable else exit_ratio
    verdict = "met" if judged <= goal else "NOT met"
    ex, du = (f"{exit_ratio:.2f}x", f"**{durable_ratio:.2f}x**") if durable else \
        (f"**{exit_ratio:.2f}x**", f"{durable_ratio:.2f}x")
    return (f"| {cache} | {what} | {med[0]:.2f} / {med[1]:.2f} | {med[2]:.2f} / {med[3]:.2f} "
            f"| {ex} | {du} | <= {goal:.1f}x: {verdict} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5, help="interleaved pairs per comparison")
    ap.add_argument("--cache", choices=["warm", "cold", "both"], default="both")
    ap.add_argument("--stream", action="store_true",
                    help="read the streamOptimized VMDK instead of the monolithicSparse one")
    args = ap.parse_args(argv)
    label, sparse, stream = inputs()
    # Time the program as installed (make setup compiles it): sources edited
    # since then would otherwise be recompiled on every run.
    subprocess.run([sys.executable, "-m", "compileall", "-q",
                    str(Path(__file__).resolve().parents[1] / "vmshift")], check=True)
    src = stream if args.stream else sparse
    info = subprocess.run(["qemu-img", "info", str(src)], capture_output=True, text=True)
    print(f"input: {label}: {src}\n" + "\n".join(info.stdout.splitlines()[1:4]))
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    work = Path(tempfile.mkdtemp(prefix="bench-disks-", dir=cache_dir()))
    out = work / "out.qcow2"
    convert = ["qemu-img", "convert", "-O", "qcow2", str(src), str(out)]
    compare = ["qemu-img", "compare", str(src), str(out)]
    vmshift = [VMSHIFT, "convert", "disk", str(src), str(out)]
    no_verify = [VMSHIFT, "convert", "disk", "--no-verify", str(src), str(out)]
    synced = [VMSHIFT, "convert", "disk", "--no-verify", "--sync", str(src), str(out)]
    rows = []
    try:
        for cache in ("warm", "cold") if args.cache == "both" else (args.cache,):
            cold = cache == "cold"
            warm(src)
            for argvs in ([no_verify], [synced], [convert], [vmshift], [convert, compare]):
                timed(argvs, out, cold=False)  # once untimed: binaries and source cached
            print(f"{cache} cache:", flush=True)
            a, b = pairs([no_verify], [convert], out, cold, args.pairs, "--no-verify")
            rows.append(summary(cache, "`--no-verify` vs `qemu-img convert`", 1.1, a, b))
            a, b = pairs([synced], [convert], out, cold, args.pairs, "--sync")
            rows.append(summary(cache, "`--no-verify --sync` vs `qemu-img convert` + fsync",
                                1.1, a, b, durable=True))
            a, b = pairs([vmshift], [convert, compare], out, cold, args.pairs, "verified")
            rows.append(summary(cache, "verified vs `qemu-img convert` + `compare`", 1.0, a, b))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'streamOptimized' if args.stream else 'monolithicSparse'} VMDK -> qcow2, "
          f"{label}, median of {args.pairs} interleaved pairs; load average at the end "
          f"{os.getloadavg()[0]:.1f}")
    print("| cache | comparison | vmshift s (exit / durable) | by hand s (exit / durable) "
          "| ratio (exit) | ratio (durable) | goal |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
