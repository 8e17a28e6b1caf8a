"""Faults struck mid-migration: the VM must keep running on the source, exit 1.

These break a host on purpose, so they run on a bed of their own
("vmsmig"), which they repair after each fault and stop at the end. Each
test first proves the job was active (bytes moving, memory remaining)
before it strikes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.migrate_support import finish, migrate_args, start, state_on, wait_job_active
from vmshift.testbed import libvirthost, lifecycle, procs, state
from vmshift.testbed.hosts import TestBed
from vmshift.testbed.tinyguest import tiny_guest as make_tiny_guest

pytestmark = pytest.mark.slow
BED = "vmsmig"


@pytest.fixture(scope="module")
def fault_bed():
    if os.geteuid() != 0:
        pytest.skip("the libvirt test bed needs root")
    bed: TestBed = lifecycle.up(BED, 2)
    try:
        yield bed
    finally:
        lifecycle.down(BED)


@pytest.fixture(params=["private"])
def guest(fault_bed, request):
    # private: copy-storage (the destination's disk is its own); shared: the
    # memory stream alone crosses the link.
    g = make_tiny_guest(fault_bed.hosta, memory_mib=256, fill_mib=128,
                        disk_pool=request.param)
    try:
        g.wait_ready()
        yield g
    finally:
        g.destroy()


def restart_libvirtd(host_name: str) -> None:
    """Repair: start the host's libvirtd again in its namespaces (the holder
    process keeping them is untouched) and record the new PID in the state."""
    st = state.read_state(BED)
    h = next(x for x in st["hosts"] if x["name"] == host_name)
    if procs.alive(procs.Proc(**h["libvirtd"])):
        return
    daemon = libvirthost.start_libvirtd(procs.Proc(**h["holder"]), Path(h["dir"]))
    h["libvirtd"] = daemon.to_dict()
    state.write_state(st)
    conn = libvirthost.wait_connect(f"qemu+tcp://{h['address']}/system", daemon,
                                    Path(h["dir"]) / "log" / "libvirtd.log")
    conn.close()


def _assert_still_on_source(g, a, b, r) -> None:
    assert r.rc == 1, (r.rc, r.err)
    assert "Traceback" not in r.err
    assert state_on(a, g.name) == (True, True), "VM must still run on hosta"
    assert "PONG" in g.console("ping", host=a)


def test_kill_destination_libvirtd_mid_migration(fault_bed, guest):
    a, b = fault_bed.hosta, fault_bed.hostb
    p = start(*migrate_args("live", guest.name, a, b, "--bandwidth", "16",
                            "--copy-storage", "all"))
    try:
        stats = wait_job_active(a, guest.name, min_bytes=16 << 20)
        assert stats["memory_remaining"] > 0
        st = state.read_state(BED)
        pid = next(x for x in st["hosts"] if x["name"] == "hostb")["libvirtd"]["pid"]
        os.kill(pid, signal.SIGKILL)
        r = finish(p)
    finally:
        restart_libvirtd("hostb")
    _assert_still_on_source(guest, a, b, r)
    assert r.doc["error"]["detail"]["category"] in ("network", "destination")


@pytest.mark.parametrize("guest", ["shared"], indirect=True)
def test_drop_migration_link_mid_migration(fault_bed, guest):
    """Shared storage: with copy-storage, QEMU's NBD mirror blocks its main
    loop on the dead socket until TCP gives up (minutes), which no client
    can abort; the memory stream alone is abortable at once."""
    a, b = fault_bed.hosta, fault_bed.hostb
    veth = next(x for x in state.read_state(BED)["hosts"] if x["name"] == "hostb")["veth"]
    p = start(*migrate_args("live", guest.name, a, b, "--bandwidth", "16"))
    try:
        stats = wait_job_active(a, guest.name, min_bytes=16 << 20)
        assert stats["memory_remaining"] > 0
        subprocess.run(["ip", "link", "set", veth, "down"], check=True)
        t0 = time.monotonic()
        r = finish(p, timeout=240)
        waited = time.monotonic() - t0
    finally:
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    _assert_still_on_source(guest, a, b, r)
    assert waited < 150, f"took {waited:.0f} s to notice the dead link"
    assert "no progress" in r.err and r.doc["error"]["detail"]["category"] == "network"
    # the destination's half-received domain is cleaned up once it is reachable again
    deadline = time.monotonic() + 60
    while state_on(b, guest.name) is not None and time.monotonic() < deadline:
        time.sleep(1)
    assert state_on(b, guest.name) is None
