"""Measure a running guest's dirty rate before a migration starts.

QEMU's own dirty rate appears only at the end of the first pre-copy pass,
too late to plan that pass. libvirt's calc-dirty-rate (page sampling, which
works under KVM and TCG alike) measures it in about a second beforehand.
"""

from __future__ import annotations

import time

import libvirt

from vmshift.units import MiB

# The measurement is complete; libvirt's VIR_DOMAIN_DIRTYRATE_MEASURED.
_MEASURED = 2


def measure_dirty_rate(conn: libvirt.virConnect, dom: libvirt.virDomain,
                       seconds: int = 1, timeout: float = 10.0) -> float | None:
    """Bytes/s the guest dirtied over SECONDS, or None when the host cannot
    tell (old libvirt or QEMU, or another measurement in progress)."""
    try:
        dom.startDirtyRateCalc(seconds, 0)
    except (libvirt.libvirtError, AttributeError):
        return None
    end = time.monotonic() + seconds + timeout
    while time.monotonic() < end:
        time.sleep(0.2)
        try:
            stats = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE)[0][1]
        except libvirt.libvirtError:
            return None
        if stats.get("dirtyrate.calc_status") == _MEASURED:
            # QEMU reports MiB/s under the name "megabytes_per_second"
            return float(stats.get("dirtyrate.megabytes_per_second", 0)) * MiB
    return None
