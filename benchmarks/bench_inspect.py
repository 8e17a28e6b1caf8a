"""Inspection: `vmshift inspect --json` vs. `virt-inspector` on the reference guest.

Both launch one libguestfs appliance (TCG when KVM is unusable) on the same
read-only VMDK and run libguestfs' inspect_os. virt-inspector then lists
applications; vmshift additionally reads every initramfs, fstab, crypttab,
the network configuration and free space, and runs the pre-flight rules. The
ratio shows what those extra facts cost. The disk is read once before each
run so both start from the same page-cache state.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from vmshift.host import libguestfs_env
from vmshift.testbed.guest import reference_guest

ROUNDS = 2


def warm(path: Path) -> None:
    with open(path, "rb") as handle:
        while handle.read(1 << 20):
            pass


def timed(cmd: list[str], disk: Path, ok: tuple[int, ...]) -> float:
    warm(disk)
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, env=libguestfs_env())
    elapsed = time.monotonic() - start
    if proc.returncode not in ok:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr[-500:]!r}")
    return elapsed


def main(argv: list[str]) -> int:
    disk = Path(reference_guest("base").vmdk_sparse)
    vmshift = str(Path(sys.executable).parent / "vmshift")
    # Exit 3 (a blocker fired) is a normal inspection result.
    ours = [vmshift, "inspect", "--json", str(disk)]
    theirs = ["virt-inspector", "--format=vmdk", "-a", str(disk)]
    times: dict[str, list[float]] = {"vmshift inspect": [], "virt-inspector": []}
    for _ in range(ROUNDS):
        times["virt-inspector"].append(timed(theirs, disk, (0,)))
        times["vmshift inspect"].append(timed(ours, disk, (0, 3)))
    best = {k: min(v) for k, v in times.items()}
    for name, seconds in best.items():
        print(f"{name:16s} {seconds:7.1f} s  (best of {ROUNDS}: "
              f"{', '.join(f'{s:.1f}' for s in times[name])})")
    ratio = best["vmshift inspect"] / best["virt-inspector"]
    print(f"ratio vmshift/virt-inspector: {ratio:.2f}x  "
          f"(load average {os.getloadavg()[0]:.1f}, disk {disk.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
