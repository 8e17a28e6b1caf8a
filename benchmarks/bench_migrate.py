"""Live migration on the test bed: vmshift's policies against plain virsh.

1. An idle guest: total time against bytes/bandwidth (how close to the cap).
2. A guest dirtying memory faster than the bandwidth cap, with the same caps
   for all (bandwidth, 500 ms downtime, timeout, auto-converge allowed):
   plain `virsh migrate --live --auto-converge --timeout` (which suspends the
   guest at the timeout), `vmshift migrate live --policy nova` and
   `--policy adaptive`. Per method over RUNS runs: success rate (completed
   with the achieved downtime within the cap), median time to converge,
   median and worst achieved downtime.

Needs root and the `vmshift` test bed (started if absent).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import libvirt

from vmshift.errors import OperationFailed
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
            "bytes": doc["bytes_transferred"]}


def virsh_live(g, a, b) -> dict:
    argv = ["virsh", "-c", a.uri, "migrate", "--live", "--persistent", "--undefinesource",
            "--p2p", "--auto-converge", "--bandwidth", str(CAP_MIB), "--timeout",
            str(TIMEOUT_S), "--migrateuri", b.migrate_uri, g.name, b.uri]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S * 4)
    took = time.monotonic() - t0
    if p.returncode != 0:
        return {"ok": False, "time": took, "downtime": None, "why": p.stderr.strip()[-200:]}
    conn = libvirt.open(b.uri)
    try:
        stats = conn.lookupByName(g.name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    finally:
        conn.close()
    return {"ok": True, "time": took, "downtime": stats.get("downtime")}


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


def _restart(g, bed):
    for h in (bed.hosta, bed.hostb):
        try:
            g.conn(h).lookupByName(g.name).create()
            return h
        except libvirt.libvirtError:
            continue
    raise SystemExit(f"guest {g.name} is defined nowhere")


def ping_pong(g, bed, fn, runs: int) -> list[dict]:
    """Each run migrates the guest away from wherever it runs now."""
    out = []
    for i in range(runs):
        a = g.running_on()
        if a is None:
            # the guest died after the previous run: that run failed after all
            if out:
                out[-1].update(ok=False, why="guest dead after the migration")
                print(f"  run {i}: guest dead afterwards; restarting it", flush=True)
            a = _restart(g, bed)
        dom = g.domain(a)
        if dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:  # virsh --timeout suspends it
            dom.resume()
        try:
            g.wait_ready(host=a)
        except OperationFailed:
            # it died right after the previous run (e.g. after a long suspend)
            if out:
                out[-1].update(ok=False, why="guest dead after the migration")
            print(f"  run {i}: guest dead afterwards; restarting it", flush=True)
            time.sleep(2)
            a = g.running_on() or _restart(g, bed)
            g.wait_ready(host=a)
        b = bed.hostb if a.name == bed.hosta.name else bed.hosta
        r = fn(g, a, b)
        out.append(r)
        print(f"  run {i + 1}: {r}", flush=True)
    if g.running_on() is None and out:
        out[-1].update(ok=False, why="guest dead after the migration")
        _restart(g, bed)
    return out


class _Skip(Exception):
    """`bench_migrate busy [virsh|nova|adaptive]`: only the dirtying-guest
    comparison (and only those methods)."""


def main(argv: list[str] | None = None) -> int:
    bed = lifecycle.up("vmshift", 2)
    print(f"caps: {CAP_MIB} MiB/s, downtime {DOWNTIME_MS} ms, timeout {TIMEOUT_S} s; "
          f"{RUNS} runs each; TCG guests (256 MiB)")

    idle = tiny_guest(bed.hosta, memory_mib=256, fill_mib=128)
    try:
        if "busy" in (argv or []):
            raise _Skip
        idle.wait_ready()
        print("idle guest, adaptive:")
        runs = ping_pong(idle, bed, lambda g, a, b: vmshift_live(
            g, a, b, "--bandwidth", str(CAP_MIB), "--max-downtime", str(DOWNTIME_MS)), RUNS)
        ratios = [r["time"] / (r["bytes"] / MiB / CAP_MIB) for r in runs if r["ok"]]
        print(f"idle: total time / (bytes/bandwidth) = median {statistics.median(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f}) over {len(ratios)} runs")
    except _Skip:
        pass
    finally:
        idle.destroy()

    busy = tiny_guest(bed.hosta, memory_mib=256, fill_mib=128, dirty_mib_s=DIRTY_MIB_S)
    results = {}
    try:
        busy.wait_ready()
        common = ("--bandwidth", str(CAP_MIB), "--max-downtime", str(DOWNTIME_MS),
                  "--timeout", str(TIMEOUT_S), "--auto-converge")
        print(f"busy guest dirtying {DIRTY_MIB_S} MiB/s over a {CAP_MIB} MiB/s cap:")
        methods = {
            "virsh": virsh_live,
            "nova": lambda g, a, b: vmshift_live(g, a, b, *common, "--policy", "nova"),
            "adaptive": lambda g, a, b: vmshift_live(g, a, b, *common, "--policy", "adaptive"),
        }
        only = [m for m in methods if m in (argv or [])] or list(methods)
        for name in only:
            print(f" {name}:")
            results[name] = ping_pong(busy, bed, methods[name], RUNS)
    finally:
        busy.destroy()
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
