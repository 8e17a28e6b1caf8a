"""`python -m benchmarks [NAME...]` (what `make bench` runs): every
benchmarks/bench_*.py, each in its own interpreter, one after the other.

A benchmark is a module with a ``main(argv) -> int`` (or a ``__main__``
block). Give names (``disks``, ``bench_disks``) to run only those.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    wanted = {a if a.startswith("bench_") else f"bench_{a}" for a in argv}
    names = [n for n in discover() if not wanted or n in wanted]
    unknown = wanted - set(names)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; have: "
              f"{', '.join(discover())}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        start = time.monotonic()
        # Its own interpreter: one benchmark's imports or state cannot skew another.
        code = subprocess.run([sys.executable, "-m", f"benchmarks.{name}"],
                              cwd=HERE.parent).returncode
        print(f"=== {name}: exit {code}, {time.monotonic() - start:.0f} s ===", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
