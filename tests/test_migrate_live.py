"""Live and suspended migration between the two real test-bed hosts.

Real libvirtd daemons in network namespaces, TCG guests, the real CLI in a
subprocess. Guests are small (256 MiB, 128 MiB filled with random data) and
the caps are chosen so each capped migration takes about 10 s.
"""

from __future__ import annotations

import os

import pytest

from tests.migrate_support import (
    MiB,
    finish,
    migrate_args,
    qemu_img_identical,
    start,
    state_on,
    vmshift,
    wait_job_active,
)

pytestmark = pytest.mark.slow


def _assert_moved(g, a, b) -> None:
    assert state_on(b, g.name) == (True, True), "not running and persistent on hostb"
    assert state_on(a, g.name) is None, "still defined on hosta"
    assert "PONG" in g.console("ping", host=b)
    assert g.checksum(host=b) == g.disk_sha256


def _capped(g, a, b, cap: int) -> dict:
    r = vmshift(*migrate_args("live", g.name, a, b, "--bandwidth", str(cap),
                              "--max-downtime", "500"))
    assert r.rc == 0, r.err
    return r.doc


def test_live_with_bandwidth_cap_and_downtime_cap(two_hosts, tiny_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a, memory_mib=256, fill_mib=128)
    g.wait_ready()
    # The uncapped time, measured both ways (the guest ends up on hosta again).
    there = vmshift(*migrate_args("live", g.name, a, b))
    back = vmshift(*migrate_args("live", g.name, b, a))
    assert there.rc == 0 and back.rc == 0, there.err + back.err
    uncapped = max(there.doc["total_time_s"], back.doc["total_time_s"])
    moved = there.doc["bytes_transferred"]
    # A cap that makes bytes/cap at least 3x the uncapped time.
    # at most 12 MiB/s: the fixed cost of a migration (QEMU start on the destination,
    # the p2p handshake, ~3 s under TCG) stays small against bytes/cap
    cap = max(1, min(12, int(moved / MiB / (3.5 * uncapped))))
    assert moved / MiB / cap >= 3 * uncapped
    g.wait_ready(host=a)

    first, doc = None, _capped(g, a, b, cap)
    if doc["downtime_ms"] is not None and doc["downtime_ms"] > 500:
        # vmshift's share of the pause is QEMU's planned final copy, and it
        # kept QEMU's limit within the cap. The rest is the hosts' handover
        # (the disk flush at the stop, libvirt's finish call, the resume):
        # 21-55 ms on a settled bed, but 833 ms once in CI and up to 1514 ms
        # here in the first moves after a bed start. One more try, which
        # must hold; both reports go in the message.
        assert all(x["value"] <= 500 for x in doc["actions"]
                   if x["kind"] == "set_downtime"), doc
        assert vmshift(*migrate_args("live", g.name, b, a)).rc == 0
        g.wait_ready(host=a)
        first, doc = doc, _capped(g, a, b, cap)
    assert doc["downtime_ms"] is not None and doc["downtime_ms"] <= 500, (first, doc)
    assert doc["ok"] and doc["kind"] == "migrate" and doc["schema_version"]
    _assert_moved(g, a, b)
    assert doc["downtime_cap_ms"] == 500 and not any("over the" in n for n in doc["notes"])
    expected = doc["bytes_transferred"] / MiB / cap
    assert 0.8 * expected <= doc["total_time_s"] <= 1.5 * expected, (doc, expected)
    # the policy acted and said when
    assert doc["actions"] and all("t" in x and "reason" in x for x in doc["actions"])


def test_copy_storage_live_from_private_pool(two_hosts, tiny_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a, memory_mib=256, fill_mib=128, disk_pool="private")
    g.wait_ready()
    name = os.path.basename(g.disk_path)
    check = vmshift("migrate", "check", g.name, "--source", a.uri, "--dest", b.uri,
                    "--migrate-uri", b.migrate_uri, "--json")
    assert check.rc == 3 and check.doc["kind"] == "migrate_check"
    assert check.doc["outcome"] == "blocked"
    assert any(f["id"] == "storage.not-shared" for f in check.doc["findings"])
    r = vmshift(*migrate_args("live", g.name, a, b, "--copy-storage", "all",
                              "--bandwidth", "64"))
    assert r.rc == 0, r.err
    _assert_moved(g, a, b)
    assert qemu_img_identical(os.path.join(a.private_pool_outside, name),
                              os.path.join(b.private_pool_outside, name))


def test_suspended_migration_resumes_on_destination(two_hosts, tiny_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a, memory_mib=256, fill_mib=128)
    g.wait_ready()
    r = vmshift(*migrate_args("suspended", g.name, a, b, "--bandwidth", "64"))
    assert r.rc == 0, r.err
    assert r.doc["mode"] == "suspended"
    _assert_moved(g, a, b)


def test_keep_source_and_dry_run(two_hosts, tiny_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a, memory_mib=256, fill_mib=64)
    g.wait_ready()
    dry = vmshift(*migrate_args("live", g.name, a, b, "--dry-run"))
    assert dry.rc == 0 and dry.doc["ok"] and "dry run" in dry.doc["notes"][0]
    assert not any("recovered" in n for n in dry.doc["notes"])
    dry = vmshift(*migrate_args("live", g.name, a, b, "--dry-run", "--postcopy",
                                "--recover-timeout", "90"))
    assert dry.rc == 0 and "escalation allowed: post-copy" in dry.doc["notes"]
    assert any("recovered for up to 90 s" in n for n in dry.doc["notes"]), dry.doc["notes"]
    assert state_on(a, g.name) == (True, True) and state_on(b, g.name) is None
    r = vmshift(*migrate_args("live", g.name, a, b, "--keep-source"))
    assert r.rc == 0, r.err
    assert state_on(b, g.name) == (True, True)
    assert state_on(a, g.name) == (False, True), "source definition should stay, inactive"


def test_incompatible_options_are_refused_before_anything(two_hosts, tiny_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    r = vmshift(*migrate_args("live", "no-such-domain", a, b, "--compression", "xbzrle",
                              "--parallel", "2"))
    assert r.rc == 2 and "--compression with --parallel" in r.err
    r = vmshift(*migrate_args("live", "x", a, b, "--timeout-action", "postcopy",
                              "--timeout", "5"))
    assert r.rc == 2 and "needs --postcopy" in r.err
    assert "Traceback" not in r.err


def test_second_operation_on_the_same_domain_is_refused(two_hosts, tiny_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a, memory_mib=256, fill_mib=128, disk_pool="private")
    g.wait_ready()
    first = start(*migrate_args("live", g.name, a, b, "--bandwidth", "16",
                                "--copy-storage", "all"))
    try:
        wait_job_active(a, g.name)
        second = vmshift(*migrate_args("live", g.name, a, b))
        assert second.rc == 3 and "busy" in second.err, second.err
    finally:
        done = finish(first)
    assert done.rc == 0, done.err
    assert state_on(b, g.name) == (True, True)


def test_sigint_aborts_and_vm_keeps_running_on_source(two_hosts, tiny_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a, memory_mib=256, fill_mib=128, disk_pool="private")
    g.wait_ready()
    p = start(*migrate_args("live", g.name, a, b, "--bandwidth", "8", "--copy-storage", "all"))
    stats = wait_job_active(a, g.name)
    assert stats["memory_remaining"] > 0  # struck mid-job
    p.send_signal(2)
    r = finish(p)
    assert r.rc == 1, r.err
    assert "interrupted" in r.err and "Traceback" not in r.err
    assert state_on(a, g.name) == (True, True)
    assert state_on(b, g.name) is None
    assert "PONG" in g.console("ping", host=a)


def test_parallel_and_compression_for_real(two_hosts, tiny_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a, memory_mib=256, fill_mib=64)
    g.wait_ready()
    r = vmshift(*migrate_args("live", g.name, a, b, "--parallel", "2"))
    assert r.rc == 0, r.err
    assert state_on(b, g.name) == (True, True)
    r = vmshift(*migrate_args("live", g.name, b, a, "--compression", "xbzrle"))
    assert r.rc == 0, r.err
    assert state_on(a, g.name) == (True, True) and state_on(b, g.name) is None
    assert g.checksum(host=a) == g.disk_sha256


def test_postcopy_switch_completes_a_guest_dirtier_than_the_link(two_hosts, tiny_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a, memory_mib=256, fill_mib=128, dirty_mib_s=32)
    g.wait_ready()
    r = vmshift(*migrate_args("live", g.name, a, b, "--bandwidth", "16", "--max-downtime",
                              "200", "--postcopy", "--postcopy-after", "4"))
    assert r.rc == 0, r.err
    assert r.doc["postcopy"] is True
    acts = r.doc["actions"]
    # one switch took effect and nothing came after it; a switch libvirt
    # refused (before QEMU's job was up) is reported with its error, and
    # the downtime was not stepped down and up again around it
    assert [x["kind"] for x in acts if x["ok"]][-1] == "postcopy", acts
    assert sum(x["kind"] == "postcopy" and x["ok"] for x in acts) == 1, acts
    assert all(x["error"] for x in acts if not x["ok"]), acts
    assert [x["value"] for x in acts if x["kind"] == "set_downtime"] in ([200], [20, 200]), acts
    assert state_on(b, g.name) == (True, True) and state_on(a, g.name) is None
    assert "PONG" in g.console("ping", host=b)


def test_timeout_abort_on_a_guest_too_busy(two_hosts, tiny_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a, memory_mib=256, fill_mib=128, dirty_mib_s=32)
    g.wait_ready()
    r = vmshift(*migrate_args("live", g.name, a, b, "--bandwidth", "16", "--max-downtime",
                              "100", "--timeout", "8"))
    assert r.rc == 1, r.err
    detail = r.doc["error"]["detail"]
    assert detail["category"] == "guest-too-busy"
    assert [x["kind"] for x in detail["actions"]][-1] == "abort"
    assert all(x["value"] <= 100 for x in detail["actions"] if x["kind"] == "set_downtime")
    assert state_on(a, g.name) == (True, True) and state_on(b, g.name) is None
    assert "PONG" in g.console("ping", host=a)


def test_adaptive_switches_a_busy_guest_to_postcopy_within_the_caps(two_hosts, tiny_guest):
    """A guest dirtying 32 MiB/s over a 16 MiB/s cap cannot converge in
    pre-copy. Adaptive measures the dirty rate before the job, so it knows
    during the first pass: the switch comes in that pass, the cap
    holds after the switch too, and the achieved downtime (the source's
    JOB_COMPLETED record) is within the cap."""
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a, memory_mib=256, fill_mib=128, dirty_mib_s=32)
    g.wait_ready()
    r = vmshift(*migrate_args("live", g.name, a, b, "--bandwidth", "16", "--max-downtime",
                              "500", "--postcopy", "--timeout", "120"))
    assert r.rc == 0, r.err
    doc = r.doc
    # page sampling is an estimate (28-48 MiB/s seen for this 32 MiB/s
    # dirtier); what the decision needs is that it is above the 16 MiB/s cap
    assert 16 < doc["dirty_rate_before_mib_s"] <= 64, doc["dirty_rate_before_mib_s"]
    # one switch took effect (libvirt may refuse one made before QEMU's job
    # is active; the policy then asks again)
    switch = [x for x in doc["actions"] if x["kind"] == "postcopy" and x["ok"]]
    assert doc["postcopy"] and len(switch) == 1 and "first pass" in switch[0]["reason"], \
        doc["actions"]
    # the downtime went to its cap before the switch (escalation order)
    kinds = [x["kind"] for x in doc["actions"]]
    assert kinds.index("postcopy") > max(i for i, k in enumerate(kinds) if k == "set_downtime")
    assert doc["downtime_ms"] is not None and doc["downtime_ms"] <= 500
    # the post-copy phase is capped too: no faster than bytes/cap allows
    assert doc["total_time_s"] >= 0.8 * doc["bytes_transferred"] / MiB / 16, doc
    assert state_on(b, g.name) == (True, True) and state_on(a, g.name) is None
    assert "PONG" in g.console("ping", host=b)
    assert g.checksum(host=b) == g.disk_sha256
