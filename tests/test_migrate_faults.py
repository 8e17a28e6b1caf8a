"""Faults struck mid-migration: the VM must keep running on the source, exit 1;
after a post-copy switch, vmshift's post-copy recovery must finish the job.

These break a host on purpose, so they run on a bed of their own
("vmsmig"), which they repair after each fault and stop at the end. Each
test first proves the job was active (bytes moving, memory remaining)
before it strikes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

import libvirt
import pytest

from tests.migrate_support import (
    finish,
    migrate_args,
    overdue,
    restart_libvirtd,
    start,
    state_on,
    wait_job_active,
)
from vmshift.errors import OperationFailed
from vmshift.testbed import lifecycle, state
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
        remove_guest(g)


def remove_guest(g) -> None:
    """Repair after a post-copy fault: a resume call can stay pending in a
    host's libvirtd long after the link is back (waiting on the destination,
    see README: limits), holding the domain's job, so no destroy or undefine
    can end it. Past a minute, the bed's daemons are restarted (their QEMUs
    live on), which ends every call in flight."""
    try:
        g.destroy(pending_job_s=60)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_TIMEOUT:
            raise
        for name in ("hosta", "hostb"):
            restart_libvirtd(BED, name, stop_first=True)
        g.forget_connections()
        g.destroy()


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
        restart_libvirtd(BED, "hostb")
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


# Post-copy on this machine (TCG, QEMU 7.2): a switch made after the first
# pre-copy pass has ended corrupts guest memory (the guest panics on the
# destination, with plain virsh too); a switch during the first pass works.
# So these switch at 3 s, with the ~200 MiB first pass at 8 MiB/s still
# running; --bandwidth also caps the post-copy phase, which then lasts ~25 s.
POSTCOPY_EARLY = ("--bandwidth", "8", "--postcopy", "--postcopy-after", "3", "--policy", "fixed")
# The fault strikes this long after hostb runs the guest. Earlier, its vCPU may
# still fetch the pages that interrupt delivery reads (IDT, stacks): TCG does
# that holding QEMU's main lock, so a vCPU waiting for such a page on a dead
# link blocks hostb's QEMU monitor, and libvirt's resume waits for it forever.
SETTLE_S = 2.0


def _hostb_veth() -> str:
    return next(x for x in state.read_state(BED)["hosts"] if x["name"] == "hostb")["veth"]


def wait_postcopy(a, b, name: str, timeout: float = 90) -> dict:
    """Block until NAME's job has switched to post-copy on both sides (the
    source paused for post-copy with memory still to move, the destination
    running it); returns the source's job stats, the proof that the fault
    strikes the post-copy phase. Before hostb's libvirt has seen the switch,
    a broken link makes it kill its QEMU: the guest is lost, not recoverable."""
    ca, cb = a.connect(), b.connect()
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                src, dst = ca.lookupByName(name), cb.lookupByName(name)
                if src.state() == [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY] \
                        and dst.state() == [libvirt.VIR_DOMAIN_RUNNING,
                                            libvirt.VIR_DOMAIN_RUNNING_POSTCOPY]:
                    stats = src.jobStats(0)
                    if stats.get("memory_remaining", 0) > 0:
                        return stats
            except libvirt.libvirtError:
                pass  # not defined on hostb yet
            time.sleep(0.2)
        raise AssertionError(f"{name} did not switch to post-copy within {timeout} s")
    finally:
        ca.close()
        cb.close()


@pytest.mark.parametrize("guest", ["shared"], indirect=True)
def test_drop_link_after_postcopy_switch_is_recovered(fault_bed, guest):
    """The link dies after the switch, for longer than the stall limit: vmshift
    pauses the post-copy job and, once the link is back, resumes it by
    libvirt's post-copy recovery. The guest ends up running on hostb."""
    a, b = fault_bed.hosta, fault_bed.hostb
    veth = _hostb_veth()
    p = start(*migrate_args("live", guest.name, a, b, *POSTCOPY_EARLY,
                            "--recover-timeout", "300"))
    try:
        wait_postcopy(a, b, guest.name)
        time.sleep(SETTLE_S)
        subprocess.run(["ip", "link", "set", veth, "down"], check=True)
        time.sleep(20)
    finally:
        subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    r = finish(p, timeout=400)
    assert r.rc == 0, r.err
    assert "Traceback" not in r.err
    pauses = [x for x in r.doc["actions"] if x["kind"] == "pause_postcopy"]
    assert pauses and pauses[0]["ok"], r.doc["actions"]
    rec = r.doc["recovery"]
    assert rec["outcome"] == "recovered" and rec["attempts"][-1]["ok"], rec
    # the bytes of the whole job, across the resume: at least the guest's
    # random-filled memory (the link died with much of it still on hosta)
    assert r.doc["memory_bytes"] >= 128 << 20, r.doc
    assert all(x["at"] and x["t"] > pauses[0]["t"] for x in rec["attempts"])
    assert state_on(b, guest.name) == (True, True) and state_on(a, guest.name) is None
    assert "PONG" in guest.console("ping", host=b)


def assert_paused_remainder_on(source, name: str) -> None:
    """The source keeps the rest of the guest's memory, paused, ready for a resume."""
    conn = source.connect()
    try:
        assert conn.lookupByName(name).state() == [
            libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED]
    finally:
        conn.close()


@pytest.mark.parametrize("guest", ["shared"], indirect=True)
def test_postcopy_recovery_gives_up_after_recover_timeout(fault_bed, guest):
    """The link stays down past --recover-timeout: exit 1, naming post-copy
    recovery, where the guest is and the command to retry."""
    a, b = fault_bed.hosta, fault_bed.hostb
    veth = _hostb_veth()
    p = start(*migrate_args("live", guest.name, a, b, *POSTCOPY_EARLY,
                            "--recover-timeout", "15"))
    try:
        try:
            wait_postcopy(a, b, guest.name)
            time.sleep(SETTLE_S)
            subprocess.run(["ip", "link", "set", veth, "down"], check=True)
            r = finish(p, timeout=300)
        finally:
            subprocess.run(["ip", "link", "set", veth, "up"], check=True)
        assert r.rc == 1, (r.rc, r.err)
        assert "Traceback" not in r.err
        assert "post-copy recovery gave up" in r.err
        assert f"the guest lives on the destination {b.uri}" in r.err
        rec = r.doc["error"]["detail"]["recovery"]
        assert rec["outcome"] == "gave-up" and rec["elapsed_s"] >= rec["timeout_s"], rec
        assert rec["attempts"] and all(x["at"] and x["t"] for x in rec["attempts"])
        assert not any(x["ok"] for x in rec["attempts"])
        assert f"retry: {rec['retry']}" in r.err and "--postcopy-resume" in rec["retry"]
        assert_paused_remainder_on(a, guest.name)
    finally:
        # The guest may stay unrecoverable: after a long outage hostb's QEMU
        # may never learn that the connection died (README). Its copy goes
        # first; removing the guest then outlasts, or ends, a resume call
        # still pending on hosta (remove_guest).
        _destroy_on(b, guest.name)


class StderrWatch:
    """Reads a running vmshift's stderr as it comes, to act on a notice."""

    def __init__(self, p: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(p,), daemon=True)
        self.thread.start()

    def _read(self, p: subprocess.Popen[str]) -> None:
        for line in p.stderr:  # type: ignore[union-attr]
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not any(text in x for x in self.lines):
            assert time.monotonic() < end, f"no {text!r} on stderr in {timeout} s"
            time.sleep(0.2)

    def text(self) -> str:
        """All of stderr, once the process has ended."""
        self.thread.join(5)
        return "".join(self.lines)

    def finish(self, p: subprocess.Popen[str], timeout: float) -> tuple[int, dict, str]:
        try:
            rc = p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise overdue(p, timeout, self.text) from None
        text = self.text()
        return rc, json.loads(p.stdout.read()), text  # type: ignore[union-attr]


RECOVERY_STARTS = "post-copy recovery: the guest runs on"


@pytest.mark.parametrize("guest", ["shared"], indirect=True)
@pytest.mark.parametrize("when", ["before-recovery", "during-recovery"])
def test_ctrl_c_after_postcopy_switch_stops_recovery_but_never_aborts(fault_bed, guest, when):
    """Ctrl-C after the switch: nothing can be aborted any more (the guest runs
    on hostb), so vmshift keeps watching. When the link then dies, it still
    pauses the stalled job (else QEMU waits minutes for TCP), but it does not
    start retrying the resume (before-recovery), or stops retrying
    (during-recovery). Exit 1 with the outcome "interrupted", where the guest
    is and the retry command; the source keeps the rest of the memory, paused."""
    a, b = fault_bed.hosta, fault_bed.hostb
    veth = _hostb_veth()
    p = start(*migrate_args("live", guest.name, a, b, *POSTCOPY_EARLY,
                            "--recover-timeout", "300"))
    err = StderrWatch(p)
    try:
        try:
            wait_postcopy(a, b, guest.name)
            time.sleep(SETTLE_S)
            if when == "before-recovery":
                p.send_signal(signal.SIGINT)
                time.sleep(1)
            subprocess.run(["ip", "link", "set", veth, "down"], check=True)
            if when == "during-recovery":
                err.wait_for(RECOVERY_STARTS, 120)
                time.sleep(3)  # into the first resume attempt
                assert p.poll() is None, "vmshift ended before the interrupt"
                p.send_signal(signal.SIGINT)
            rc, doc, text = err.finish(p, 150)
            assert rc == 1, (rc, text[-3000:])
            assert "Traceback" not in text and "post-copy recovery interrupted" in text
            detail = doc["error"]["detail"]
            rec = detail["recovery"]
            assert rec["outcome"] == "interrupted" and rec["elapsed_s"] < 60, rec
            assert "--postcopy-resume" in rec["retry"] and f"retry: {rec['retry']}" in text
            kinds = [x["kind"] for x in detail["actions"]]
            assert "abort" not in kinds and "pause_postcopy" in kinds, detail["actions"]
            if when == "before-recovery":
                assert rec["attempts"] == [] and "not resuming" in text, rec
            else:
                assert len(rec["attempts"]) >= 1, rec
            assert_paused_remainder_on(a, guest.name)  # nothing aborted
        finally:
            subprocess.run(["ip", "link", "set", veth, "up"], check=True)
    finally:
        _destroy_on(b, guest.name)


def _connect_after_link_up(host, timeout: float = 30):
    """HOST's daemon, once its link is back up: until the neighbour entry that
    went stale while it was down is resolved again, connect says "No route to
    host". (host.connect reports that as vmshift's OperationFailed.)"""
    end = time.monotonic() + timeout
    while True:
        try:
            return host.connect()
        except OperationFailed:
            if time.monotonic() >= end:
                raise
            time.sleep(1)


def _destroy_on(host, name: str) -> None:
    conn = _connect_after_link_up(host)
    try:
        dom = conn.lookupByName(name)
        if dom.isActive():
            dom.destroy()
    except libvirt.libvirtError:
        pass  # not there
    finally:
        conn.close()
