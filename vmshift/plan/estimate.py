"""How long a plan row takes: what it moves (memory or disks) over its bandwidth,
plus a fixed cost per row (docs/plan.md, "How long a row takes").

The figures are deliberately simple and stated, so a planner can redo them by
hand. Sizes come from the hosts (vmshift.plan.live, read-only) or, when the
plan is shown with --offline or a host cannot say, from the defaults below,
and the estimate is then marked ``assumed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import urlsplit

from vmshift.plan.schema import PlanRow
from vmshift.units import GiB, MiB, human

# A row without a bandwidth cell, with no --bandwidth: about what one 1 Gbit/s
# link carries (117 MiB/s on the wire, less protocol overhead).
DEFAULT_BANDWIDTH = 100 * MiB
# Sizes assumed when nothing better is known: a typical small server VM.
DEFAULT_MEMORY = 4 * GiB
DEFAULT_DISK = 40 * GiB
# Every row: connecting, defining the domain, starting it, the final checks.
ROW_OVERHEAD_S = 5.0
# Live migration sends memory more than once (pages dirtied during a pass are
# resent): benchmarks/bench_migrate measured 1.29x the memory moved for an idle
# guest (docs/benchmarks.md, migrate).
LIVE_RESEND_FACTOR = 1.3
# Converting a guest (inspection, driver and network changes, and an initramfs
# rebuild when virtio is missing), apart from copying its disks:
# benchmarks/bench_v2v measured 31.2 s (virtio present) and 100.8 s (initramfs
# rebuilt) under TCG (docs/benchmarks.md, convert vm). Plans use the longer.
V2V_CONVERSION_S = 100.0

MEMORY_TYPES = ("live", "suspended")  # what moves is the guest's memory


@dataclass(frozen=True)
class Size:
    """What a host reported for a domain: memory and allocated disk bytes
    (None: it could not say)."""

    memory: int | None = None
    disk: int | None = None


@dataclass(frozen=True)
class Estimate:
    seconds: int
    moves: str  # "memory" or "disks"
    bytes: int  # what moves, before the resend factor
    bandwidth: int  # bytes per second
    bandwidth_from: str  # "row", "option" (--bandwidth) or "default"
    assumed: bool  # the size is a default, not the host's figure
    basis: str  # the sum, for people


def source_host(row: PlanRow) -> str:
    """The host the row reads from, which --max-per-source counts: the vCenter or
    ESXi of a vsphere:// source, a libvirt URI's host, "local" for a VMX file
    or a URI without a host (qemu:///system)."""
    src = row.source
    if src is None or src.kind == "vmx":
        return "local"
    if src.kind == "vsphere":
        return src.host or "local"
    return urlsplit(src.text).hostname or "local"


def estimate(row: PlanRow, size: Size | None, default_bandwidth: int | None) -> Estimate:
    """The row's duration from SIZE (None or a missing figure: the defaults)."""
    size = size or Size()
    if row.bandwidth:
        bandwidth, bw_from = row.bandwidth, "row"
    elif default_bandwidth:
        bandwidth, bw_from = default_bandwidth, "option"
    else:
        bandwidth, bw_from = DEFAULT_BANDWIDTH, "default"
    if row.type in MEMORY_TYPES:
        moves, known, fallback = "memory", size.memory, DEFAULT_MEMORY
    else:
        moves, known, fallback = "disks", size.disk, DEFAULT_DISK
    moved = fallback if known is None else known
    factor = LIVE_RESEND_FACTOR if row.type == "live" else 1.0
    fixed = ROW_OVERHEAD_S + (V2V_CONVERSION_S if row.type == "v2v" else 0.0)
    # whole seconds, rounded up: offsets and the times printed from them agree
    seconds = math.ceil(factor * moved / bandwidth + fixed)
    basis = (f"{'assumed ' if known is None else ''}{moves} {human(moved)}"
             f"{f' x {factor}' if factor != 1.0 else ''} at {human(bandwidth)}/s"
             f" + {fixed:g} s")
    return Estimate(seconds, moves, moved, bandwidth, bw_from, known is None, basis)
