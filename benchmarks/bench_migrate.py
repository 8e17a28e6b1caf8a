"""Live migration on the test bed: vmshift's adaptive policy against the
virsh lines an admin who knows the tools would run.

Three workloads, each a freshly booted 256 MiB TCG guest with 128 MiB of
random fill: ``idle``; ``below``, dirtying 8 MiB/s (below the cap); ``above``,
dirtying 32 MiB/s (above it). The same caps for every method: 16 MiB/s (also
after a post-copy switch), 500 ms downtime. Methods:

- ``adaptive``: ``vmshift migrate live --postcopy`` with those caps and
  nothing tuned (policy, timeout, thresholds at their defaults);
- ``virsh-pcap``: ``virsh migrate --live --postcopy --postcopy-after-precopy``;
- ``virsh-ac``: ``virsh migrate --live --auto-converge --timeout 120
  --timeout-suspend``;
- not run unless named (each run takes a minute and more and loses the guest
  on this bed, see docs/benchmarks.md): ``virsh-late``, ``virsh migrate --live
  --postcopy --timeout 60 --timeout-postcopy``; ``nova``, ``vmshift migrate
  live --policy nova --timeout 60 --timeout-action postcopy``.

Every virsh line also has ``--persistent --undefinesource --p2p --migrateuri``
and ``--bandwidth`` (``--postcopy-bandwidth`` with post-copy). virsh cannot
set a downtime limit on the command line, so QEMU's default (300 ms) holds.

Per workload and method over RUNS runs: success (completed, the guest
answering on its console on hostb, the achieved downtime within the cap),
median wall time of the command, median and worst achieved downtime. The
achieved downtime is read the same way for every method: the destination's
completed-job record, or after a post-copy switch (when it has none) the
source daemon's JOB_COMPLETED record. Then, per workload, adaptive's median
time over that of the fastest virsh line that succeeded, and the goal:
adaptive succeeds in every run within 1.1x of it.

    python -m benchmarks.bench_migrate [idle|below|above ...] [METHOD ...] [--runs N]

Needs root and the `vmshift` test bed (started if absent).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import libvirt

from vmshift.libvirtconn import connect
from vmshift.migrate.jobevents import CompletedJob
from vmshift.testbed import lifecycle
from vmshift.testbed.tinyguest import tiny_guest

VMSHIFT = str(Path(sys.executable).parent / "vmshift")
RUNS = 3
CAP_MIB = 16
DOWNTIME_MS = 500
GOAL = 1.1
MiB = 1 << 20
WORKLOADS = {"idle": 0, "below": 8, "above": 32}  # guest dirty rate, MiB/s
CMD_TIMEOUT_S = 300

Method = Callable[..., dict]


def vmshift_live(g, a, b, *extra: str) -> dict:
    argv = [VMSHIFT, "migrate", "live", g.name, "--source", a.uri, "--dest", b.uri,
            "--migrate-uri", b.migrate_uri, "--json", "--bandwidth", str(CAP_MIB),
            "--max-downtime", str(DOWNTIME_MS), *extra]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    took = round(time.monotonic() - t0, 2)
    doc = json.loads(p.stdout) if p.stdout.strip() else {}
    if p.returncode != 0:
        return {"ok": False, "time": took, "downtime": None,
                "why": p.stderr.strip().splitlines()[-1:]}
    return {"ok": True, "time": took, "job_time": doc["total_time_s"],
            "downtime": doc["downtime_ms"], "bytes": doc["bytes_transferred"],
            "postcopy": doc["postcopy"], "dirty_before_mib_s": doc.get("dirty_rate_before_mib_s"),
            "switch_s": next((a["t"] for a in doc["actions"] if a["kind"] == "postcopy"), None)}


def virsh_live(g, a, b, *flags: str) -> dict:
    argv = ["virsh", "-c", a.uri, "migrate", "--live", "--persistent", "--undefinesource",
            "--p2p", "--bandwidth", str(CAP_MIB), *flags, "--migrateuri", b.migrate_uri,
            g.name, b.uri]
    conn = connect(a.uri, role="source")
    done = CompletedJob(conn, conn.lookupByName(g.name))
    try:
        t0 = time.monotonic()
        p = subprocess.run(argv, capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
        took = round(time.monotonic() - t0, 2)
        stats = done.wait()
    finally:
        done.close()
        conn.close()
    if p.returncode != 0:
        return {"ok": False, "time": took, "downtime": None, "why": p.stderr.strip()[-200:]}
    return {"ok": True, "time": took, "downtime": achieved_downtime(b, g.name, stats)}


def virsh_line(*flags: str) -> Method:
    return lambda g, a, b: virsh_live(g, a, b, *flags)


def vmshift_line(*flags: str) -> Method:
    return lambda g, a, b: vmshift_live(g, a, b, *flags)


PCAP = ("--postcopy", "--postcopy-bandwidth", str(CAP_MIB))
METHODS: dict[str, Method] = {
    "adaptive": vmshift_line("--postcopy"),
    "virsh-pcap": virsh_line(*PCAP, "--postcopy-after-precopy"),
    "virsh-ac": virsh_line("--auto-converge", "--timeout", "120", "--timeout-suspend"),
    "virsh-late": virsh_line(*PCAP, "--timeout", "60", "--timeout-postcopy"),
    # Nova switches to post-copy only as its timeout action (force_complete)
    "nova": vmshift_line("--postcopy", "--policy", "nova", "--timeout", "60",
                         "--timeout-action", "postcopy"),
}
DEFAULT_METHODS = ("adaptive", "virsh-pcap", "virsh-ac")


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


def good_runs(runs: list[dict]) -> list[dict]:
    return [r for r in runs if r["ok"] and r["downtime"] is not None
            and r["downtime"] <= DOWNTIME_MS]


def median_time(runs: list[dict]) -> float | None:
    times = [r["time"] for r in good_runs(runs)]
    return statistics.median(times) if times else None


def summary(name: str, runs: list[dict]) -> str:
    med = median_time(runs)
    downs = [r["downtime"] for r in runs if r["ok"] and r["downtime"] is not None]
    med_t = f"{med:6.1f} s" if med is not None else "     - "
    med_d = f"{statistics.median(downs):6.0f} ms" if downs else "      - "
    worst = f"{max(downs):6.0f} ms" if downs else "      - "
    return (f"{name:10} success {len(good_runs(runs))}/{len(runs)}  median time {med_t}  "
            f"median downtime {med_d}  worst {worst}")


def verdict(results: dict[str, list[dict]]) -> str | None:
    """Adaptive against the fastest virsh line that succeeded at least once."""
    virsh = {m: median_time(r) for m, r in results.items() if m.startswith("virsh")}
    virsh = {m: t for m, t in virsh.items() if t is not None}
    ad = results.get("adaptive")
    if ad is None or not virsh:
        return None
    best = min(virsh, key=lambda m: virsh[m])
    ad_t = median_time(ad)
    if ad_t is None:
        return f"adaptive: no success; best virsh line {best} {virsh[best]:.1f} s: goal MISSED"
    ratio = ad_t / virsh[best]
    held = ratio <= GOAL and len(good_runs(ad)) == len(ad)
    return (f"adaptive/{best} ({virsh[best]:.1f} s, {len(good_runs(results[best]))}/"
            f"{len(results[best])}) = {ratio:.2f}x: goal {'met' if held else 'MISSED'}")


def alive_on(g, host) -> bool:
    """The guest answers on its console there (a panicked one is destroyed
    by on_reboot=destroy, a hung one does not answer)."""
    try:
        return g.running_on() == host and "PONG" in g.console("ping", 60, host=host)
    except Exception:  # noqa: BLE001 - any console failure means not alive
        return False


def fresh_runs(bed, fn: Method, runs: int, **guest) -> list[dict]:
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
            r["guest"] = g.name
            out.append(r)
            print(f"  run {i + 1}: {r}", flush=True)
        finally:
            g.destroy()
    return out


def parse(argv: list[str]) -> tuple[list[str], list[str], int]:
    runs = RUNS
    if "--runs" in argv:
        i = argv.index("--runs")
        runs = int(argv[i + 1])
        argv = argv[:i] + argv[i + 2:]
    argv = ["above" if w == "busy" else w for w in argv]  # the former name
    unknown = [w for w in argv if w not in WORKLOADS and w not in METHODS]
    if unknown:
        raise SystemExit(f"bench_migrate: unknown word(s) {unknown}; workloads "
                         f"{list(WORKLOADS)}, methods {list(METHODS)}, --runs N")
    workloads = [w for w in WORKLOADS if w in argv] or list(WORKLOADS)
    methods = [m for m in METHODS if m in argv] or list(DEFAULT_METHODS)
    return workloads, methods, runs


def main(argv: list[str] | None = None) -> int:
    workloads, methods, runs = parse(list(argv or []))
    bed = lifecycle.up(os.environ.get("VMSHIFT_BENCH_BED", "vmshift"), 2)
    print(f"caps: {CAP_MIB} MiB/s (also post-copy), downtime {DOWNTIME_MS} ms; {runs} runs "
          f"each; TCG guests (256 MiB, 128 MiB fill); {time.strftime('%Y-%m-%d %H:%M %Z')}")
    table: dict[str, dict[str, list[dict]]] = {}
    for wl in workloads:
        print(f"workload {wl} (dirtying {WORKLOADS[wl]} MiB/s):", flush=True)
        table[wl] = {}
        for name in methods:
            print(f" {name}:", flush=True)
            table[wl][name] = fresh_runs(bed, METHODS[name], runs, memory_mib=256,
                                         fill_mib=128, dirty_mib_s=WORKLOADS[wl])
    print("\nresults (success = completed, alive on hostb, achieved downtime <= cap):")
    for wl, results in table.items():
        print(f"{wl}:")
        for name, rs in results.items():
            print(" " + summary(name, rs))
        ratios = [r["time"] / (r["bytes"] / MiB / CAP_MIB) for r in good_runs(
            results.get("adaptive", [])) if r.get("bytes")]
        if ratios:
            print(f" adaptive time / (bytes/bandwidth): median {statistics.median(ratios):.2f}"
                  f" (min {min(ratios):.2f}, max {max(ratios):.2f})")
        line = verdict(results)
        if line:
            print(" " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
