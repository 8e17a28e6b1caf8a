"""Live migration on the test bed: vmshift's policies against plain virsh.

1. An idle guest: total time against bytes/bandwidth (how close to the cap).
2. A guest dirtying memory faster than the bandwidth cap, with the same caps
   for all (bandwidth, also after a post-copy switch; 500 ms downtime; a
   60 s timeout whose action is post-copy; post-copy allowed):
   plain `virsh migrate --live --postcopy --timeout --timeout-postcopy`,
   `vmshift migrate live --policy nova` and `--policy adaptive`. Per method
   over RUNS runs: success rate (completed, the guest answering on its
   console on hostb, the achieved downtime within the cap), median time to
   converge, median and worst achieved downtime. The achieved downtime is
   read the same way for every method: the destination's completed-job
   record, or after a post-copy switch (when it has none) the source
   daemon's JOB_COMPLETED record.

Auto-converge is left out for all: under TCG (this machine has no usable
KVM) QEMU's throttle barely slows a guest whose dirtier sleeps between
bursts, and the guest's console stalls under heavy throttling.

Needs root and the `vmshift` test bed (started if absent).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import libvirt

from vmshift.libvirtconn import connect
from vmshift.migrate.jobevents import CompletedJob
from vmshift.testbed import lifecycle
from vmshift.testbed.tinyguest import tiny_guest

VMSHIFT = str(Path(sys.executable).parent / "vmshift")
RUNS = 5
CAP_MIB = 16
DIRTY_MIB_S = 32  # above the cap
DOWNTIME_MS = 500
TIMEOUT_S = 60
MiB = 1 << 20


def vmshift_live(g, a, b, *extra: str) -> dict:
    argv = [VMSHIFT, "migrate", "live", g.name, "--source", a.uri, "--dest", b.uri,
            "--migrate-uri", b.migrate_uri, "--json", *extra]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S * 4)
    doc = json.loads(p.stdout) if p.stdout.strip() else {}
    if p.returncode != 0:
        detail = (doc.get("error") or {}).get("detail") or {}
        return {"ok": False, "time": detail.get("total_time_s"), "downtime": None,
                "why": p.stderr.strip().splitlines()[-1:]}
    return {"ok": True, "time": doc["total_time_s"], "downtime": doc["downtime_ms"],
            "bytes": doc["bytes_transferred"], "postcopy": doc["postcopy"],
            "dirty_before_mib_s": doc.get("dirty_rate_before_mib_s"),
            "switch_s": next((a["t"] for a in doc["actions"] if a["kind"] == "postcopy"), None)}


def virsh_live(g, a, b) -> dict:
    argv = ["virsh", "-c", a.uri, "migrate", "--live", "--persistent", "--undefinesource",
            "--p2p", "--postcopy", "--bandwidth", str(CAP_MIB),
            "--postcopy-bandwidth", str(CAP_MIB), "--timeout", str(TIMEOUT_S),
            "--timeout-postcopy", "--migrateuri", b.migrate_uri, g.name, b.uri]
    conn = connect(a.uri, role="source")
    done = CompletedJob(conn, conn.lookupByName(g.name))
    try:
        t0 = time.monotonic()
        p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S * 4)
        took = time.monotonic() - t0
        stats = done.wait()
    finally:
        done.close()
        conn.close()
    if p.returncode != 0:
        return {"ok": False, "time": took, "downtime": None, "why": p.stderr.strip()[-200:]}
    return {"ok": True, "time": took, "downtime": achieved_downtime(b, g.name, stats)}


def achieved_downtime(b, name: str, source_stats: dict) -> int | None:
    """The rule vmshift's report follows: the destination's record (stop to
    resume), else the source's JOB_COMPLETED one (after a post-copy switch)."""
    conn = connect(b.uri, role="destination")
    try:
        dest = conn.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        dest = {}
    finally:
        conn.close()
    return dest.get("downtime", source_stats.get("downtime"))


def summary(name: str, runs: list[dict]) -> str:
    good = [r for r in runs if r["ok"] and r["downtime"] is not None
            and r["downtime"] <= DOWNTIME_MS]
    times = [r["time"] for r in good]
    downs = [r["downtime"] for r in runs if r["ok"] and r["downtime"] is not None]
    med_t = f"{statistics.median(times):6.1f} s" if times else "     - "
    med_d = f"{statistics.median(downs):6.0f} ms" if downs else "      - "
    worst = f"{max(downs):6.0f} ms" if downs else "      - "
    return (f"{name:10} success {len(good)}/{len(runs)}  median time {med_t}  "
            f"median downtime {med_d}  worst {worst}")


def alive_on(g, host) -> bool:
    """The guest answers on its console there (a panicked one is destroyed
    by on_reboot=destroy, a hung one does not answer)."""
    try:
        return g.running_on() == host and "PONG" in g.console("ping", 60, host=host)
    except Exception:  # noqa: BLE001 - any console failure means not alive
        return False


def fresh_runs(bed, fn, runs: int, **guest) -> list[dict]:
    """Each run on a freshly booted guest on hosta, migrated to hostb: no run
    inherits a half-finished job or a guest damaged by the previous one."""
    out = []
    for i in range(runs):
        g = tiny_guest(bed.hosta, **guest)
        try:
            g.wait_ready()
            r = fn(g, bed.hosta, bed.hostb)
            if r["ok"]:
                r["alive"] = alive_on(g, bed.hostb)
                if not r["alive"]:
                    r.update(ok=False, why="guest dead or not on hostb after the migration")
            out.append(r)
            print(f"  run {i + 1}: {r}", flush=True)
        finally:
            g.destroy()
    return out


def main(argv: list[str] | None = None) -> int:
    bed = lifecycle.up(os.environ.get("VMSHIFT_BENCH_BED", "vmshift"), 2)
    print(f"caps: {CAP_MIB} MiB/s, downtime {DOWNTIME_MS} ms, timeout {TIMEOUT_S} s; "
          f"{RUNS} runs each; TCG guests (256 MiB)")

    if "busy" not in (argv or []):
        print("idle guest, adaptive:")
        runs = fresh_runs(bed, lambda g, a, b: vmshift_live(
            g, a, b, "--bandwidth", str(CAP_MIB), "--max-downtime", str(DOWNTIME_MS)), RUNS,
            memory_mib=256, fill_mib=128)
        ratios = [r["time"] / (r["bytes"] / MiB / CAP_MIB) for r in runs if r["ok"]]
        print(f"idle: total time / (bytes/bandwidth) = median {statistics.median(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f}) over {len(ratios)} runs")

    # Post-copy permitted for all, auto-converge for none (see the docstring).
    common = ("--bandwidth", str(CAP_MIB), "--max-downtime", str(DOWNTIME_MS),
              "--timeout", str(TIMEOUT_S), "--postcopy")
    methods = {
        "virsh": virsh_live,
        # Nova switches to post-copy only as its timeout action (force_complete)
        "nova": lambda g, a, b: vmshift_live(g, a, b, *common, "--policy", "nova",
                                             "--timeout-action", "postcopy"),
        "adaptive": lambda g, a, b: vmshift_live(g, a, b, *common, "--policy", "adaptive",
                                                 "--timeout-action", "postcopy"),
    }
    only = [m for m in methods if m in (argv or [])] or list(methods)
    results = {}
    print(f"busy guest dirtying {DIRTY_MIB_S} MiB/s over a {CAP_MIB} MiB/s cap:")
    for name in only:
        print(f" {name}:")
        results[name] = fresh_runs(bed, methods[name], RUNS, memory_mib=256, fill_mib=128,
                                   dirty_mib_s=DIRTY_MIB_S)
    print("\nresults (success = completed with achieved downtime <= cap):")
    for name, runs in results.items():
        print(" " + summary(name, runs))
    ad = [r["time"] for r in results.get("adaptive", []) if r["ok"]]
    for other in [m for m in ("virsh", "nova") if m in results]:
        ot = [r["time"] for r in results[other] if r["ok"]]
        if ad and ot:
            ratio = statistics.median(ot) / statistics.median(ad)
            print(f" time ratio {other}/adaptive: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
