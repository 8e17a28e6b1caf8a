"""Plans at scale: `vmshift plan validate --offline` and `plan show --offline` on a
generated 10,000-row plan, against the floor of reading the same file with
Python's csv module.

The plan mixes what real plans hold: v2v rows from three vCenters and from VMX
files, live, suspended and offline migrations between 40 libvirt hosts,
storage moves, map files and inline maps, bandwidth caps, windows, priorities,
and ~50 waves, each depending on the one before it and some on an earlier one
too. Every command is a fresh interpreter (what an admin runs), timed wall to
wall; its peak memory is its own maximum resident set (os.wait4's rusage of
that child alone). Median of ROUNDS, page cache warm (the file is read first).
Goal (issue 17): validate and schedule a 10,000-row plan in < 2 s and < 200 MB.
"""

from __future__ import annotations

import csv
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vmshift.plan.schema import COLUMNS

ROWS = 10_000
WAVES = 50
VMX_SHARE = 0.05  # of the v2v rows (~200); each needs a VMX file of its own
ROUNDS = 3
GOAL_S, GOAL_MB = 2.0, 200


def write_plan(directory: Path, rows: int = ROWS, seed: int = 17) -> Path:
    """A valid plan of ROWS rows in WAVES waves (deterministic for SEED)."""
    rng = random.Random(seed)
    vmx_dir = directory / "vmx"
    vmx_dir.mkdir()
    (directory / "nets.map").write_text("VM Network=default\nDMZ=bridge:br-dmz\n")
    hosts = [f"qemu+ssh://kvm{h:02d}.example.com/system" for h in range(40)]
    vcenters = [f"vsphere://vc{v}.example.com" for v in range(3)]
    out = []
    for i in range(rows):
        wave = 1 + i * WAVES // rows
        cells = {"wave": str(wave), "vm": f"vm{i:05d}", "priority": str(rng.randint(0, 20))}
        kind = rng.choices(["v2v", "live", "offline", "suspended", "storage"],
                           [40, 30, 15, 5, 10])[0]
        if kind == "v2v":
            if rng.random() < VMX_SHARE:
                vmx = vmx_dir / f"vm{i:05d}.vmx"
                vmx.write_text(f'displayName = "vm{i:05d}"\nmemsize = "4096"\n')
                cells["source"] = f"vmx/{vmx.name}"
            else:
                cells["source"] = f"{rng.choice(vcenters)}/vm{i:05d}"
            cells.update(target=rng.choice(hosts), target_pool="default",
                         network_map=rng.choice(["nets.map", "VM Network=default"]),
                         format=rng.choice(["qcow2", "raw", ""]))
        else:
            source = rng.choice(hosts)
            cells["source"] = source
            if kind == "storage":
                cells["target_pool"] = "fast-ssd"
            else:
                cells["target"] = rng.choice([h for h in hosts if h != source])
            if kind == "live":
                cells.update(max_downtime="300", policy=rng.choice(["fixed", "adaptive"]))
        cells["type"] = kind
        cells["bandwidth"] = rng.choice(["", "100", "200M", "1G"])
        if wave > 1:
            earlier = {str(wave - 1)} | ({str(rng.randint(1, wave - 1))}
                                         if rng.random() < 0.1 else set())
            cells["depends_on"] = " ".join(sorted(earlier))
        if rng.random() < 0.3:
            day = 1 + wave // 10
            cells["window_start"] = f"2025-03-{day:02d}T22:00:00+01:00"
            cells["window_end"] = f"2025-03-{day + 1:02d}T04:00:00+01:00"
        cells["notes"] = rng.choice(["", "owner: web team", "needs a reboot; check, first"])
        out.append([cells.get(c, "") for c in COLUMNS])
    plan = directory / "plan.csv"
    with open(plan, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(out)
    return plan


def measure(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of CMD alone; it must exit 0."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed ({proc.returncode}): {err[-500:]}")
    return elapsed, usage.ru_maxrss * 1024 / 1e6  # ru_maxrss is in KiB on Linux


def main(argv: list[str] | None = None) -> int:
    vmshift = str(Path(sys.executable).parent / "vmshift")
    with tempfile.TemporaryDirectory() as tmp:
        plan = write_plan(Path(tmp))
        plan.read_bytes()  # warm cache
        commands = {
            "csv.reader (floor)": [sys.executable, "-c",
                                   f"import csv; list(csv.reader(open({str(plan)!r})))"],
            "plan validate --offline": [vmshift, "plan", "validate", "--offline", str(plan)],
            "plan show --offline": [vmshift, "plan", "show", "--offline", str(plan),
                                    "--start", "2025-03-01T20:00:00+01:00"],
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(ROUNDS):  # interleaved, so load drifts hit every command alike
            for name, cmd in commands.items():
                results[name].append(measure(cmd))
        size = plan.stat().st_size
    floor = statistics.median(t for t, _ in results["csv.reader (floor)"])
    print(f"plan: {ROWS} rows, {WAVES} waves, {size / 2**20:.1f} MiB; median of {ROUNDS}, "
          f"warm cache, load average {os.getloadavg()[0]:.1f}")
    print(f"{'command':26s} {'wall s':>7s} {'peak MB':>9s} {'x floor':>8s}  goal")
    met = True
    for name, runs in results.items():
        wall = statistics.median(t for t, _ in runs)
        peak = statistics.median(m for _, m in runs)
        goal = ""
        if name != "csv.reader (floor)":
            ok = wall < GOAL_S and peak < GOAL_MB
            met &= ok
            goal = f"< {GOAL_S:g} s, < {GOAL_MB} MB: {'met' if ok else 'MISSED'}"
        print(f"{name:26s} {wall:7.2f} {peak:9.1f} {wall / floor:7.1f}x  {goal}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
