"""Pure parts of vmshift.migrate: XML rewrites, stats mapping, categories."""

from __future__ import annotations

import socket
import time

import libvirt
import pytest
from lxml import etree

from vmshift.convert.maps import parse_network_map
from vmshift.migrate import checks, recover, report, statefiles, xmlmap
from vmshift.migrate import facts as F
from vmshift.migrate.monitor import (
    SETUP_S,
    STALL_S,
    MonitorState,
    job_active,
    stall_reason,
    stalled,
    to_sample,
)
from vmshift.migrate.statefiles import StateCopy, StateLocation

DOM = """<domain type='qemu'><name>x</name><os><nvram>/old/nvram.fd</nvram></os><devices>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
<source file='/old/a.qcow2'/><backingStore type='file'><source file='/old/base'/></backingStore>
<target dev='vda' bus='virtio'/></disk>
<disk type='block' device='disk'><source dev='/dev/sdz'/><target dev='vdb'/></disk>
<interface type='network'><source network='prod'/></interface>
<interface type='bridge'><source bridge='br0'/></interface>
</devices></domain>"""


def test_map_networks_rewrites_networks_and_bridges():
    netmap = parse_network_map("prod=stage,br0=bridge:br1")
    out = etree.fromstring(xmlmap.map_networks(DOM, netmap).encode())
    assert out.find("devices/interface[1]/source").get("network") == "stage"
    assert out.find("devices/interface[2]/source").get("bridge") == "br1"


def test_network_check_looks_for_the_mapped_kind_and_name():
    """network.missing asks the destination for what the map makes of each NIC:
    a bridge target is looked for among bridges, a MAC entry beats the name."""
    def host(networks: dict[str, str | None], bridges: set[str]) -> F.HostFacts:
        return F.HostFacts("uri", "h", 9000000, 7002000, 1 << 30, networks, bridges, set(),
                           set(), "x86_64")
    nics = [F.NicFacts("network", "prod", "52:54:00:00:00:01"),
            F.NicFacts("network", "prod", "52:54:00:00:00:02"),
            F.NicFacts("direct", "eth0", "52:54:00:00:00:03")]
    domain = F.DomainFacts("x", "u", True, True, "qemu", 1 << 30, [], nics, [], None, None, 0,
                           None, None)

    def missing(netmap: str) -> list[str]:
        opts = F.Options(network_map=parse_network_map(netmap))
        facts = F.Facts(host({}, set()), host({"stage": "virbr1"}, {"br9", "eth0"}), domain,
                        F.ProbeFacts(), opts)
        return [subject for subject, *_ in checks.network_missing(facts)]

    assert missing("prod=stage") == []
    assert missing("prod=bridge:br9") == []
    assert missing("prod=bridge:stage") == ["52:54:00:00:00:01", "52:54:00:00:00:02"]
    assert missing("prod=stage,52:54:00:00:00:02=bridge:nope") == ["52:54:00:00:00:02"]
    # A direct NIC names a host device: the map does not rewrite it, nor the check.
    assert missing("prod=stage,eth0=network:nowhere") == []


@pytest.mark.parametrize("virt_type, qemu, mode, fires", [
    ("qemu", 7002000, "live", True), ("qemu", 9000000, "live", False),
    ("kvm", 7002000, "live", False), ("qemu", 7002000, "offline", False),
    ("qemu", 7002000, "suspended", False)])
def test_tcg_dirty_tracking_warns_for_live_moves_of_tcg_guests_before_qemu_9(
        virt_type: str, qemu: int, mode: str, fires: bool) -> None:
    host = F.HostFacts("uri", "h", 9000000, qemu, 1 << 30, {}, set(), set(), set(), "x86_64")
    domain = F.DomainFacts("x", "u", True, True, virt_type, 1 << 30, [], [], [], None, None,
                           0, None, None)
    facts = F.Facts(host, host, domain, F.ProbeFacts(), F.Options(mode=mode))
    hits = list(checks.tcg_dirty_tracking(facts))
    assert hits == ([("tcg", {"version": "7.2.0"})] if fires else [])


def test_tcg_dirty_tracking_is_a_warning_naming_the_version() -> None:
    check = checks.BY_ID["version.tcg-dirty-tracking"]
    assert check.severity == checks.WARNING
    assert "QEMU 7.2.0 (< 9.0)" in check.message.format(version="7.2.0")


def test_map_disks_points_at_new_files_and_drops_backing_chain():
    out = xmlmap.map_disks(DOM, {"vda": "/new/a.qcow2", "vdb": "/new/b.raw"},
                           {"vda": "raw"})
    assert xmlmap.disk_paths(out) == {"vda": "/new/a.qcow2", "vdb": "/new/b.raw"}
    root = etree.fromstring(out.encode())
    assert root.find("devices/disk[1]/driver").get("type") == "raw"
    assert root.find("devices/disk[1]/backingStore") is None
    assert root.find("devices/disk[2]").get("type") == "file"
    assert root.find("devices/disk[2]/source").attrib == {"file": "/new/b.raw"}


def test_job_stats_become_samples_in_bytes():
    stats = {"type": libvirt.VIR_DOMAIN_JOB_UNBOUNDED, "memory_total": 100, "memory_remaining": 40,
             "memory_dirty_rate": 10, "memory_page_size": 4096, "memory_bps": 1000,
             "memory_iteration": 3, "downtime": 12, "disk_remaining": 5}
    st = MonitorState(downtime_ms=77, throttle=20)
    s = to_sample(stats, st, 4.5)
    assert job_active(stats)
    assert (s.dirty_rate, s.iteration, s.downtime_limit_ms, s.throttle_pct) == (40960, 3, 77, 20)
    assert s.expected_downtime_ms == 12 and s.disk_remaining == 5
    assert not job_active({"type": libvirt.VIR_DOMAIN_JOB_NONE})


@pytest.mark.parametrize("msg,cat", [
    ("network: no progress for 15 s, job aborted (x)", "network"),
    ("guest too busy: not complete after 60 s, job aborted", "guest-too-busy"),
    ("interrupted by signal 2: job aborted", "interrupted"),
    ("internal error: qemu unexpectedly closed the monitor", "destination"),
    ("operation failed: job 'migration out' failed: The certificate hasn't got a known "
     "issuer", "tls"),
    ("job 'migration out' failed: TLS handshake failed: Connection reset by peer", "tls"),
    (None, None),
])
def test_error_categories(msg, cat):
    assert report.categorise(msg) == cat


def test_state_files_located_from_the_inactive_xml():
    u = "6f2c5a4e-0000-4000-8000-000000000001"
    xml = """<domain type='qemu'><name>x</name><os><nvram>/nv//x_VARS.fd</nvram></os>
<devices><tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>
<tpm model='tpm-tis'><backend type='emulator' version='1.2'>
<source type='dir' path='/srv/tpm/x/'/></backend></tpm>
<tpm model='tpm-tis'><backend type='passthrough'/></tpm></devices></domain>"""
    assert statefiles.locate(xml, u) == [
        StateLocation("nvram", "/nv", "x_VARS.fd"),
        StateLocation("tpm", f"/var/lib/libvirt/swtpm/{u}/tpm2"),
        StateLocation("tpm", "/srv/tpm/x")]
    tis = """<domain><os><nvram type='file'><source file='/n/y.fd'/></nvram></os><devices>
<tpm model='tpm-tis'><backend type='emulator' version='1.2'/></tpm></devices></domain>"""
    assert [s.describe() for s in statefiles.locate(tis, u)] == [
        "/n/y.fd", f"/var/lib/libvirt/swtpm/{u}/tpm1.2/"]
    net = "<domain><os><nvram type='network'><source protocol='iscsi'/></nvram></os></domain>"
    assert statefiles.locate(net, u) == []


def test_state_deleted_only_when_every_file_of_its_kind_was_copied():
    c = [StateCopy("tpm", "/t/a", "copied"), StateCopy("tpm", "/t/b", "present"),
         StateCopy("nvram", "/n", "copied")]
    assert statefiles.all_copied(c, "nvram") and not statefiles.all_copied(c, "tpm")
    assert not statefiles.all_copied([StateCopy("nvram", "/n", "absent")], "nvram")


def test_postcopy_retry_command_repeats_the_job_with_resume():
    flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER
             | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_POSTCOPY)
    params = {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 8,
              libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda", "vdb"],
              libvirt.VIR_MIGRATE_PARAM_DEST_XML: "<domain/>"}
    cmd = recover.retry_command("qemu+ssh://a/system", "vm 1", "qemu+tcp://b/system", flags, params)
    assert cmd == ("virsh -c qemu+ssh://a/system migrate --live --p2p --persistent --postcopy "
                   "--postcopy-resume --bandwidth 8 --migrate-disks vda,vdb 'vm 1' "
                   "qemu+tcp://b/system")


def test_a_host_that_does_not_answer_is_described_within_the_bound():
    # A real listener on loopback that accepts and never speaks: libvirt's
    # connect waits for its handshake as it waits for a host behind a cut
    # link. vmshift describes where the guest is on its way out, after
    # Ctrl-C too, so that look must not wait for TCP to give up.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        uri = f"qemu+tcp://127.0.0.1:{silent.getsockname()[1]}/system"
        t0 = time.monotonic()
        state = recover.describe_state(uri, "vm", timeout=1.5)
        waited = time.monotonic() - t0
    assert state == "state unknown, no answer in 1.5 s"
    assert waited < 6.5


def test_a_host_that_refuses_is_described_at_once():
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
    state = recover.describe_state(f"qemu+tcp://127.0.0.1:{port}/system", "vm", timeout=30)
    assert state.startswith("state unknown, unreachable: ")


def test_a_pause_over_the_downtime_cap_is_reported():
    rep = report.Report("g", "live", "a", "b", ok=True, downtime_ms=566)
    report.judge_downtime(rep, 500)
    assert rep.downtime_cap_ms == 500
    assert rep.notes == ["the guest paused 566 ms, over the 500 ms cap: the cap bounds "
                         "QEMU's planned final copy, not the hosts' handover"]
    assert "566 ms (achieved, cap 500 ms)" in report.render(rep)
    within = report.Report("g", "live", "a", "b", ok=True, downtime_ms=500)
    report.judge_downtime(within, 500)
    assert within.notes == [] and within.downtime_cap_ms == 500


def _stall_clock(points: list[tuple[float, int]]) -> tuple[MonitorState, list[bool]]:
    """Feed (elapsed, bytes moved) samples to the stall check, as the monitor does."""
    st, seen = MonitorState(downtime_ms=300), []
    for t, moved in points:
        st.last_stats = {"memory_processed": moved}
        seen.append(stalled(st, t))
    return st, seen


def test_a_job_still_setting_up_is_not_a_stall_until_setup_s():
    # the destination starting its QEMU and the QEMUs connecting move no byte
    st, seen = _stall_clock([(0.0, 0), (STALL_S + 1, 0), (SETUP_S - 1, 0), (SETUP_S + 0.5, 0)])
    assert seen == [False, False, False, True]
    assert stall_reason(st) == f"network: no progress for {SETUP_S + 0.5:.0f} s " \
                               "(no byte moved since the job started)"


def test_once_bytes_move_a_stall_is_declared_after_stall_s():
    st, seen = _stall_clock([(0.0, 0), (30.0, 1 << 20), (30.0 + STALL_S - 1, 1 << 20),
                             (30.0 + STALL_S, 1 << 20)])
    assert seen == [False, False, False, True]
    assert stall_reason(st) == f"network: no progress for {STALL_S:.0f} s"
