"""A whole VM conversion: `vmshift convert vm` against `virt-v2v`, side by side.

On each variant of the reference guest (base: virtio already in the
initramfs; novirtio: the initramfs must be rebuilt), one after the other:

- ``virt-v2v -i vmx GUEST.vmx -o local -of qcow2 -os DIR``
- ``vmshift convert vm --vmx GUEST.vmx --output local --output-dir DIR
  --format qcow2 --json``

Both run with libguestfs' direct backend, TCG when KVM is unusable
(``vmshift.host.libguestfs_env``). Cold cache (the default):
``sync; echo 3 > /proc/sys/vm/drop_caches`` before every command (root);
``--warm`` reads the source disk once instead. Printed: wall time per stage
(virt-v2v's from its own ``[  N.N] Stage`` lines, vmshift's from the
``stages`` of its JSON document), the totals, the ratio vmshift/virt-v2v
(goals: <= 0.2x on base, <= 1.0x on novirtio), the appliance launches vmshift
counted, whether it rebuilt an initramfs, and the load average.

Run: ``python -m benchmarks.bench_v2v [--variant base|novirtio|both] [--warm]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from vmshift.host import libguestfs_env
from vmshift.testbed.guest import ReferenceGuest, reference_guest

VMSHIFT = str(Path(sys.executable).parent / "vmshift")
GOALS = {"base": 0.2, "novirtio": 1.0}
STAGE_LINE = re.compile(r"^\[\s*(\d+\.\d+)\] (.+)$", re.M)
Stages = list[tuple[str, float]]


def prepare_cache(cold: bool, disk: Path) -> None:
    if cold:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return
    with open(disk, "rb") as handle:
        while handle.read(1 << 20):
            pass


def run(cmd: list[str]) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=libguestfs_env())
    wall = time.monotonic() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout)[-800:]
        raise SystemExit(f"{cmd[0]} {cmd[1]} failed ({proc.returncode}): {tail}")
    return wall, proc.stdout


def v2v_stages(stdout: str, wall: float) -> Stages:
    """Each `[  N.N] Stage` line lasts until the next one; the last until exit."""
    marks = [(float(t), _short(text)) for t, text in STAGE_LINE.findall(stdout)]
    ends = [t for t, _ in marks[1:]] + [wall]
    return [(name, end - t) for (t, name), end in zip(marks, ends, strict=True)]


def _short(text: str) -> str:
    if text.startswith("Converting "):
        return "Converting (guest changes)"
    name = text.split(":")[0]
    return name if len(name) <= 44 else name[:43] + "~"


def v2v(guest: ReferenceGuest, out: Path) -> tuple[float, Stages]:
    wall, stdout = run(["virt-v2v", "-i", "vmx", str(guest.vmx), "-o", "local",
                        "-of", "qcow2", "-os", str(out)])
    return wall, v2v_stages(stdout, wall)


def vmshift(guest: ReferenceGuest, out: Path) -> tuple[float, Stages, dict[str, Any]]:
    wall, stdout = run([VMSHIFT, "convert", "vm", "--vmx", str(guest.vmx), "--output",
                        "local", "--output-dir", str(out), "--format", "qcow2", "--json"])
    doc = json.loads(stdout)
    return wall, [(s["stage"], s["seconds"]) for s in doc["stages"]], doc


def show(title: str, wall: float, stages: Stages) -> None:
    print(f"  {title}: {wall:.1f} s")
    for name, seconds in stages:
        print(f"    {name:<44} {seconds:7.1f}")


def compare(variant: str, cold: bool, work: Path) -> float:
    guest = reference_guest(variant)
    print(f"\n{variant}: {guest.vmx.name} (virtio in initramfs: {guest.virtio_in_initramfs})")
    results = {}
    for tool in ("virt-v2v", "vmshift"):
        out = work / f"{variant}-{tool}"
        out.mkdir()
        prepare_cache(cold, guest.vmdk_sparse)
        load = os.getloadavg()[0]
        results[tool] = (v2v if tool == "virt-v2v" else vmshift)(guest, out)
        show(f"{tool} (load {load:.1f} at start)", *results[tool][:2])
        shutil.rmtree(out)
    doc = results["vmshift"][2]
    ratio = results["vmshift"][0] / results["virt-v2v"][0]
    rebuilt = doc.get("guest", {}).get("initramfs_rebuilt") or []
    print(f"  ratio vmshift/virt-v2v: {ratio:.2f}x (goal <= {GOALS[variant]}x); "
          f"vmshift appliance launches: {doc.get('appliance_launches')}; "
          f"initramfs rebuilt by vmshift: {', '.join(rebuilt) or 'none'}")
    return ratio


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench_v2v")
    parser.add_argument("--variant", choices=["base", "novirtio", "both"], default="both")
    parser.add_argument("--warm", action="store_true", help="keep the page cache warm")
    args = parser.parse_args(argv)
    if not shutil.which("virt-v2v") or not shutil.which("nbdcopy"):
        print("bench_v2v: needs virt-v2v and nbdcopy (libnbd-bin): make setup", file=sys.stderr)
        return 1
    cold = not args.warm
    print(f"page cache: {'cold (drop_caches before every command)' if cold else 'warm'}; "
          f"load average {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M')}")
    variants = ["base", "novirtio"] if args.variant == "both" else [args.variant]
    cache = Path(os.environ.get("VMSHIFT_CACHE", "/var/cache/vmshift"))
    with tempfile.TemporaryDirectory(prefix="bench-v2v-", dir=cache) as work:
        ratios = {v: compare(v, cold, Path(work)) for v in variants}
    print("\nsummary: " + "; ".join(
        f"{v} {r:.2f}x ({'met' if r <= GOALS[v] else 'NOT met'}: goal <= {GOALS[v]}x)"
        for v, r in ratios.items()) + f"; load average now {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
