"""Must-show (issue 3): the tiny guest's dirtier runs at the rate asked for,
as libvirt itself measures it (virDomainStartDirtyRateCalc, page sampling).

QEMU's page sampling hashes 512 random pages per GiB of guest RAM, so one
3-second reading of a 256 MiB guest rests on 128 pages; the mean of three
readings keeps the statistical error well inside the +-25% asked for. The
dirtier walks a 160 MiB buffer sequentially (5 s per lap at 32 MiB/s), so a
3-second window sees every write as a distinct page. (dirty-bitmap mode
would be exact, but QEMU 7.2 under TCG crashes in it.)
"""

from __future__ import annotations

import statistics
import time

import libvirt
import pytest

from vmshift.errors import OperationFailed
from vmshift.testbed.hosts import TestBed

pytestmark = pytest.mark.slow

RATE_MIB_S = 32
WINDOW_S = 3
READINGS = 3


def measure_dirty_rate(dom: libvirt.virDomain, conn: libvirt.virConnect) -> int:
    dom.startDirtyRateCalc(WINDOW_S, libvirt.VIR_DOMAIN_DIRTYRATE_MODE_PAGE_SAMPLING)
    time.sleep(WINDOW_S)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stats = conn.domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_DIRTYRATE)[0][1]
        if stats.get("dirtyrate.calc_status") == libvirt.VIR_DOMAIN_DIRTYRATE_MEASURED:
            assert stats["dirtyrate.calc_period"] == WINDOW_S
            return int(stats["dirtyrate.megabytes_per_second"])
        time.sleep(0.2)
    raise AssertionError(f"dirty rate not measured within 30 s: {stats}")


def test_dirtier_rate_matches_request(two_hosts: TestBed, tiny_guest) -> None:
    guest = tiny_guest(two_hosts.hosta, memory_mib=256, fill_mib=160, dirty_mib_s=RATE_MIB_S)
    guest.wait_ready()
    conn = guest.conn(two_hosts.hosta)
    dom = guest.domain(two_hosts.hosta)
    readings = [measure_dirty_rate(dom, conn) for _ in range(READINGS)]
    mean = statistics.mean(readings)
    assert abs(mean - RATE_MIB_S) <= 0.25 * RATE_MIB_S, (readings, RATE_MIB_S)
    # The guest's own account agrees: it reports what it has dirtied.
    assert "DIRTIED" in guest.console("status")


def test_idle_guest_dirties_little(two_hosts: TestBed, tiny_guest) -> None:
    # The control: without a dirtier the same measurement reads near zero,
    # so the rate above comes from the dirtier, not from the guest idling.
    guest = tiny_guest(two_hosts.hosta, memory_mib=256, fill_mib=64, dirty_mib_s=0)
    guest.wait_ready()
    reading = measure_dirty_rate(guest.domain(two_hosts.hosta), guest.conn(two_hosts.hosta))
    assert reading < 0.25 * RATE_MIB_S
    # The console reports a failing guest command as an error, not as output.
    with pytest.raises(OperationFailed, match="exited 1"):
        guest.console("false")
