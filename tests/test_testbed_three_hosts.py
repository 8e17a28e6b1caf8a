"""Three bed hosts, and post-copy between two of them.

Post-copy needs userfaultfd for the unprivileged QEMU process; the bed sets
vm.unprivileged_userfaultfd=1 for that. The guest dirties memory faster than
the capped pre-copy bandwidth, so pre-copy alone would not converge: only
the switch to post-copy gets it across.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import libvirt
import pytest

from tests.migrate_support import daemon_logs
from vmshift.testbed.hosts import TestBed

pytestmark = pytest.mark.slow


def test_three_hosts_are_distinct_libvirt_hosts(three_hosts: TestBed) -> None:
    assert [h.name for h in three_hosts.hosts] == ["hosta", "hostb", "hostc"]
    uuids, addresses = set(), set()
    for host in three_hosts.hosts:
        conn = host.connect()
        assert conn.getHostname() == host.name
        uuids.add(conn.getCapabilities().split("<uuid>")[1].split("<")[0])
        addresses.add(host.address)
        assert conn.storagePoolLookupByName(three_hosts.shared_pool).isActive()
        assert conn.storagePoolLookupByName(host.private_pool).isActive()
        assert conn.networkLookupByName(three_hosts.network).isActive()
        conn.close()
    assert len(uuids) == 3 and len(addresses) == 3
    assert "unprivileged_userfaultfd=1" in three_hosts.userfaultfd
    for host in three_hosts.hosts:
        # The host bridge's MAC is set, not inherited from its lowest port: a
        # guest tap joining it (fe:54:00:...) must not lend it the guest's MAC.
        assert bridge_mac(host) == (link_mac(host, "eth0"), "3")


def link_mac(host, link: str) -> str:
    out = subprocess.run(["ip", "-n", host.netns, "-j", "link", "show", link],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["address"]


def bridge_mac(host) -> tuple[str, str]:
    """(MAC, addr_assign_type) of the host bridge; type 3 means set explicitly."""
    kind = subprocess.run(["ip", "netns", "exec", host.netns, "cat",
                           "/sys/class/net/vmshift0/addr_assign_type"],
                          capture_output=True, text=True, check=True).stdout.strip()
    return link_mac(host, "vmshift0"), kind


def test_post_copy_migration_hostb_to_hostc(three_hosts: TestBed, tiny_guest) -> None:
    guest = tiny_guest(three_hosts.hostb, memory_mib=256, fill_mib=160, dirty_mib_s=16)
    guest.wait_ready()
    dom = guest.domain(three_hosts.hostb)
    dest = guest.conn(three_hosts.hostc)
    params = {libvirt.VIR_MIGRATE_PARAM_URI: three_hosts.hostc.migrate_uri,
              libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 4}  # MiB/s: below the dirty rate
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_POSTCOPY
             | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE)
    outcome: dict[str, object] = {}

    def migrate() -> None:
        try:
            outcome["dom"] = dom.migrate3(dest, params, flags)
        except libvirt.libvirtError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=migrate)
    worker.start()
    deadline = time.monotonic() + 60
    while worker.is_alive() and time.monotonic() < deadline:
        stats = dom.jobStats()
        if stats.get("type") == libvirt.VIR_DOMAIN_JOB_UNBOUNDED and \
                stats.get("memory_processed", 0) > 8 << 20:
            break
        time.sleep(0.2)
    # 4 MiB/s against 16 MiB/s of dirtying: pre-copy alone cannot finish
    assert worker.is_alive(), (f"the migration ended before the switch: {outcome}\n"
                               + daemon_logs(three_hosts.hostb, three_hosts.hostc))
    dom.migrateStartPostCopy(0)
    worker.join(timeout=180)
    assert not worker.is_alive(), "post-copy migration did not finish in 180 s"
    assert "error" not in outcome, outcome.get("error")
    assert guest.running_on() == three_hosts.hostc
    assert guest.checksum(host=three_hosts.hostc) == guest.disk_sha256
