"""OVA manifest check: vmshift in place vs. the plain way (tar -x, then sha256sum).

Both verify the same SHA256 manifest of the same OVA (a 192 MiB
incompressible disk). The plain way writes every byte back to disk before
hashing it; vmshift streams the tar members once and writes nothing. The
page cache is warmed identically before each run (the OVA is read once),
so the ratio compares the work, not the cache state.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.ovabuild import build_ova
from vmshift.convert.ova import read_package

SIZE_MIB = 192
ROUNDS = 3


def warm(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(1 << 20):
            pass


def plain(ova: Path, work: Path) -> float:
    out = work / "extract"
    out.mkdir()
    start = time.monotonic()
    subprocess.run(["tar", "-xf", str(ova), "-C", str(out)], check=True)
    manifest = next(out.glob("*.mf")).read_text()
    sums = "".join(f"{line.split('= ')[1]}  {line[7:line.index(')')]}\n"
                   for line in manifest.splitlines())
    subprocess.run(["sha256sum", "--quiet", "-c", "-"], input=sums.encode(), cwd=out,
                   check=True)
    elapsed = time.monotonic() - start
    subprocess.run(["rm", "-rf", str(out)], check=True)
    return elapsed


def in_place(ova: Path) -> float:
    start = time.monotonic()
    package = read_package(ova)
    assert len(package.verified_files) == 2
    return time.monotonic() - start


def main() -> int:
    with tempfile.TemporaryDirectory(dir=os.environ.get("VMSHIFT_CACHE")) as tmp:
        work = Path(tmp)
        raw = work / "disk.raw"
        with open(raw, "wb") as handle:
            for _ in range(SIZE_MIB):
                handle.write(os.urandom(1 << 20))
        ova = build_ova(work, raw, name="bench")
        raw.unlink()
        print(f"OVA: {ova.stat().st_size / 2**20:.0f} MiB, {ROUNDS} rounds each, warm cache")
        plain_times, vmshift_times = [], []
        for _ in range(ROUNDS):
            warm(ova)
            plain_times.append(plain(ova, work))
            warm(ova)
            vmshift_times.append(in_place(ova))
        best_plain, best_vmshift = min(plain_times), min(vmshift_times)
        print(f"{'tar -x + sha256sum -c':<28} {best_plain:7.2f} s  (writes the whole package)")
        print(f"{'vmshift (in place)':<28} {best_vmshift:7.2f} s  (writes nothing)")
        print(f"ratio plain/vmshift: {best_plain / best_vmshift:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
