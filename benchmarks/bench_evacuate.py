"""Evacuating a host: `vmshift evacuate` at parallelism 1, 2 and 4 against the
loop an admin writes by hand, on the same guests in the same run.

For each method, N fresh tiny guests (256 MiB, 128 MiB of random fill) boot
on hosta of the three-host bed, then leave it:

- ``vmshift evacuate --source hosta --targets hostb,hostc --max-parallel P
  --bandwidth BUDGET`` for P in 1, 2, 4: the budget is shared by the running
  migrations;
- ``for vm in ...; do virsh migrate --live --persistent --undefinesource
  --p2p --bandwidth BUDGET --migrateuri tcp://hostb vm qemu+tcp://hostb;
  done``: one at a time, each with the whole budget, all to hostb (what the
  loop in the issue does).

The time is from the command's start to its exit; every guest must answer
on its console on its target afterwards, or the run is reported as failed.
TCG guests on a 2-core machine, so QEMU's CPU competes with the copies.

Run: ``python -m benchmarks.bench_evacuate [--guests N] [--budget MIB]``
(needs root; starts the bed ``vmshift3`` when it is not up).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from vmshift.testbed import lifecycle
from vmshift.testbed.hosts import TestBed
from vmshift.testbed.tinyguest import TinyGuest, tiny_guest

VMSHIFT = str(Path(sys.executable).parent / "vmshift")


def boot(bed: TestBed, n: int, tag: str) -> list[TinyGuest]:
    guests = [tiny_guest(bed.hosta, name=f"bench-{tag}-{i}-{os.getpid()}", memory_mib=256,
                         fill_mib=128) for i in range(n)]
    for g in guests:
        g.wait_ready()
    return guests


def alive_where(guests: list[TinyGuest], bed: TestBed) -> bool:
    for g in guests:
        host = g.running_on()
        if host is None or host.name == bed.hosta.name:
            return False
        if "PONG" not in g.console("ping", 60, host=host):
            return False
    return True


def vmshift_evacuate(bed: TestBed, guests: list[TinyGuest], parallel: int,
                     budget: int) -> tuple[float, str]:
    only = [x for g in guests for x in ("--only", g.name)]
    unsafe = ["--unsafe"] if bed.migration_needs_unsafe else []
    argv = [VMSHIFT, "evacuate", "--source", bed.hosta.uri, "--targets",
            f"{bed.hostb.uri},{bed.hostc.uri}", "--max-parallel", str(parallel),
            "--bandwidth", f"{budget}M", "--json", *unsafe, *only]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    took = time.monotonic() - t0
    if p.returncode != 0:
        return took, f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1:]}"
    doc = json.loads(p.stdout)
    return took, f"peak {doc['peak_parallel']} at once"


def virsh_loop(bed: TestBed, guests: list[TinyGuest], budget: int) -> tuple[float, str]:
    unsafe = ["--unsafe"] if bed.migration_needs_unsafe else []
    t0 = time.monotonic()
    for g in guests:
        p = subprocess.run(["virsh", "-c", bed.hosta.uri, "migrate", "--live", "--persistent",
                            "--undefinesource", "--p2p", "--bandwidth", str(budget), *unsafe,
                            "--migrateuri", bed.hostb.migrate_uri, g.name, bed.hostb.uri],
                           capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            return time.monotonic() - t0, f"{g.name}: {p.stderr.strip()[-200:]}"
    return time.monotonic() - t0, "sequential"


def measure(bed: TestBed, label: str, n: int, run) -> dict:
    guests = boot(bed, n, label.replace(" ", ""))
    try:
        took, note = run(guests)
        ok = alive_where(guests, bed)
    finally:
        for g in guests:
            g.destroy()
    row = {"method": label, "time_s": round(took, 1), "ok": ok, "note": note}
    print(f"  {row}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guests", type=int, default=4)
    ap.add_argument("--budget", type=int, default=32, help="MiB/s shared by all migrations")
    args = ap.parse_args(argv)
    bed = lifecycle.up(os.environ.get("VMSHIFT_BENCH_BED", "vmshift3"), 3)
    print(f"{args.guests} guests of 256 MiB (128 MiB filled), budget {args.budget} MiB/s, "
          f"TCG; load average at start {os.getloadavg()[0]:.1f}", flush=True)
    rows = [measure(bed, "virsh loop", args.guests,
                    lambda gs: virsh_loop(bed, gs, args.budget))]
    for p in (1, 2, 4):
        rows.append(measure(bed, f"evacuate -P {p}", args.guests,
                            lambda gs, p=p: vmshift_evacuate(bed, gs, p, args.budget)))
    base = rows[0]["time_s"]
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    print("| method | time | ratio to the virsh loop | every guest alive on its target | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['time_s']:.1f} s | {r['time_s'] / base:.2f}x | "
              f"{'yes' if r['ok'] else 'NO'} | {r['note']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
