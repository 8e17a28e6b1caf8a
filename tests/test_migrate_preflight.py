"""Preflight checks, each made to fire for real against the two test-bed daemons.

Domains are defined on hosta from the tiny guest's XML with one thing
changed per test; most stay shut off (defining is enough for the facts the
checks read), so these tests cost seconds. Two values cannot be provoked on
one machine - a clock skew between the hosts and a version difference
between the daemons - and are injected through NAMED fakes
(``fake_clock_probe``, ``with_fake_versions``) around the real facts.
"""

from __future__ import annotations

import uuid

import libvirt
import pytest
from lxml import etree

from tests.migrate_support import vmshift
from vmshift.errors import BadInput
from vmshift.migrate import checks, preflight
from vmshift.migrate import facts as F
from vmshift.testbed.tinyguest import domain_xml, install_boot_files

PCI_HOSTDEV = """<hostdev mode='subsystem' type='pci' managed='yes'>
  <source><address domain='0x0000' bus='0x00' slot='0x1f' function='0x0'/></source></hostdev>"""


def test_check_table_is_well_formed_data():
    ids = [c.id for c in checks.CHECKS]
    assert len(ids) == len(set(ids))
    for c in checks.CHECKS:
        assert c.severity in (checks.BLOCKER, checks.WARNING, checks.INFO)
        assert c.category == c.id.split(".")[0]
        assert c.message and callable(c.evaluate)


@pytest.fixture
def define(two_hosts):
    """define(xml_tweak, host=hosta, name=None) -> name; undefined afterwards."""
    made: list[tuple[object, str]] = []
    bed = two_hosts

    def _define(tweak=None, host=None, name=None, memory_mib=256, disk=None) -> str:
        host = host or bed.hosta
        name = name or f"pf-{uuid.uuid4().hex[:8]}"
        xml = domain_xml(name, memory_mib, "/nonexistent/vmlinuz", "/nonexistent/initrd",
                         "console=ttyS0", disk or f"{bed.shared_path}/{name}.qcow2", bed.network)
        root = etree.fromstring(xml.encode())
        if tweak:
            tweak(root)
        conn = host.connect()
        conn.defineXML(etree.tostring(root, encoding="unicode"))
        made.append((host, name))
        return name

    yield _define
    for host, name in made:
        conn = host.connect()
        try:
            dom = conn.lookupByName(name)
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        except libvirt.libvirtError:
            pass


def run_check(bed, name, *extra):
    a, b = bed.hosta, bed.hostb
    return vmshift("migrate", "check", name, "--source", a.uri, "--dest", b.uri, "--json", *extra)


def findings_of(r) -> dict[str, dict]:
    # Blocked or not, the one document is migrate check's own, with its findings.
    assert r.rc in (0, 3), r.err
    assert r.doc["kind"] == "migrate_check"
    assert r.doc["outcome"] == ("blocked" if r.rc == 3 else "ok")
    return {f["id"]: f for f in r.doc["findings"]}


def _add(root, xml: str, where: str = "devices") -> None:
    root.find(where).append(etree.fromstring(xml))


def test_missing_network_on_destination_and_network_map(two_hosts, define):
    a = two_hosts.hosta
    conn = a.connect()
    net = conn.networkDefineXML(
        "<network><name>only-on-a</name><forward mode='bridge'/>"
        "<bridge name='vmshift0'/></network>")
    try:
        name = define(lambda r: r.find("devices/interface/source").set("network", "only-on-a"))
        r = run_check(two_hosts, name, "--mode", "offline", "--dest-pool", "x")
        f = findings_of(r)
        assert r.rc == 3 and f["network.missing"]["severity"] == "blocker"
        assert "only-on-a" in f["network.missing"]["message"]
        mapped = findings_of(run_check(two_hosts, name, "--mode", "offline", "--dest-pool", "x",
                                       "--network-map", "only-on-a=vmshift-net"))
        assert "network.missing" not in mapped
    finally:
        net.undefine()


def test_writeback_cache_blocks_live_unless_unsafe(two_hosts, define):
    name = define(lambda r: r.find("devices/disk/driver").set("cache", "writeback"))
    f = findings_of(run_check(two_hosts, name, "--migrate-uri", two_hosts.hostb.migrate_uri))
    assert f["storage.cache"]["severity"] == "blocker"
    assert "cache=writeback" in f["storage.cache"]["message"]
    f = findings_of(run_check(two_hosts, name, "--migrate-uri", two_hosts.hostb.migrate_uri,
                              "--unsafe"))
    assert f["storage.cache"]["severity"] == "warning"


def test_hostdev_passthrough_is_a_blocker(two_hosts, define):
    name = define(lambda r: _add(r, PCI_HOSTDEV))
    f = findings_of(run_check(two_hosts, name))
    assert f["devices.passthrough"]["severity"] == "blocker"
    assert "hostdev type=pci" in f["devices.passthrough"]["message"]


def test_more_memory_than_the_destination_has(two_hosts, define):
    conn = two_hosts.hostb.connect()
    free_mib = conn.getFreeMemory() >> 20
    name = define(memory_mib=free_mib + 4096)
    f = findings_of(run_check(two_hosts, name))
    assert f["resources.memory"]["severity"] == "blocker"
    assert f"{free_mib + 4096} MiB" in f["resources.memory"]["message"]


def test_same_name_and_same_uuid_on_destination(two_hosts, define):
    name = define()
    define(host=two_hosts.hostb, name=name)
    r = run_check(two_hosts, name, "--mode", "offline", "--dest-pool", "x")
    assert r.rc == 3 and "same name" in findings_of(r)["domain.exists"]["message"]
    # --skip-check downgrades exactly that blocker
    forced = findings_of(run_check(two_hosts, name, "--mode", "offline", "--dest-pool", "x",
                                   "--skip-check", "domain.exists"))
    assert forced["domain.exists"]["severity"] == "warning" and forced["domain.exists"]["forced"]
    src = two_hosts.hosta.connect().lookupByName(name)
    same_uuid = src.UUIDString()

    def with_uuid(root):
        etree.SubElement(root, "uuid").text = same_uuid

    other = define(host=two_hosts.hostb, tweak=with_uuid, name=f"{name}-b")
    assert other
    two_hosts.hostb.connect().lookupByName(name).undefine()
    f = findings_of(run_check(two_hosts, name, "--mode", "offline", "--dest-pool", "x"))
    assert "same UUID" in f["domain.exists"]["message"]


def test_unknown_skip_check_id_is_bad_input(two_hosts, define):
    name = define()
    r = run_check(two_hosts, name, "--skip-check", "no.such-check")
    assert r.rc == 2 and "--skip-check no.such-check" in r.err


def test_disk_not_shared_and_target_volume_exists(two_hosts, define):
    a, b = two_hosts.hosta, two_hosts.hostb
    vol = f"pf-{uuid.uuid4().hex[:8]}.qcow2"
    path = f"{a.private_pool_path}/{vol}"
    vxml = (f"<volume><name>{vol}</name><capacity unit='MiB'>4</capacity>"
            "<target><format type='qcow2'/></target></volume>")
    pa = a.connect().storagePoolLookupByName(a.private_pool)
    pb = b.connect().storagePoolLookupByName(b.private_pool)
    va = pa.createXML(vxml, 0)
    try:
        name = define(disk=path)
        f = findings_of(run_check(two_hosts, name))
        assert f["storage.not-shared"]["severity"] == "blocker" and vol in \
            f["storage.not-shared"]["message"]
        f = findings_of(run_check(two_hosts, name, "--copy-storage", "all"))
        assert "storage.not-shared" not in f and "storage.target-exists" not in f
        vb = pb.createXML(vxml, 0)
        try:
            f = findings_of(run_check(two_hosts, name, "--copy-storage", "all"))
            assert f["storage.target-exists"]["severity"] == "blocker"
        finally:
            vb.delete(0)
    finally:
        va.delete(0)


def test_unmanaged_block_device(two_hosts, define):
    def block(root):
        disk = root.find("devices/disk")
        disk.set("type", "block")
        disk.find("driver").set("type", "raw")
        src = disk.find("source")
        del src.attrib["file"]
        src.set("dev", "/dev/vmshift-test-nonexistent")

    name = define(block)
    f = findings_of(run_check(two_hosts, name, "--mode", "offline", "--dest-pool", "x"))
    assert f["storage.block-device"]["severity"] == "warning"


def test_destination_hostname_does_not_resolve_without_migrate_uri(two_hosts, define):
    name = define()
    f = findings_of(run_check(two_hosts, name))
    # the bed's hosts call themselves hostb, which this machine cannot resolve
    assert f["network.resolve"]["severity"] == "blocker"
    assert "'hostb'" in f["network.resolve"]["message"]
    f = findings_of(run_check(two_hosts, name, "--migrate-uri", two_hosts.hostb.migrate_uri))
    assert "network.resolve" not in f and "network.ports" not in f


def test_a_tcg_guest_on_qemu_before_9_is_warned_of_lost_writes(two_hosts, define):
    name = define()  # the bed's guests are TCG (domain type qemu)
    conn = two_hosts.hosta.connect()
    try:
        qemu = conn.getVersion()
    finally:
        conn.close()
    f = findings_of(run_check(two_hosts, name, "--migrate-uri", two_hosts.hostb.migrate_uri))
    if qemu >= checks.TCG_DIRTY_FIXED:
        assert "version.tcg-dirty-tracking" not in f
        return
    hit = f["version.tcg-dirty-tracking"]
    assert hit["severity"] == "warning" and f"QEMU {qemu // 1000000}." in hit["message"]
    offline = findings_of(run_check(two_hosts, name, "--mode", "offline", "--dest-pool", "x"))
    assert "version.tcg-dirty-tracking" not in offline


def test_migration_ports_unreachable(two_hosts, define):
    name = define()
    # an address in the bed's own subnet that no host holds: nothing answers ARP
    net = two_hosts.subnet.rsplit(".", 1)[0]
    f = findings_of(run_check(two_hosts, name, "--migrate-uri", f"tcp://{net}.99"))
    assert f["network.ports"]["severity"] == "blocker"
    assert "49152-49215" in f["network.ports"]["message"]


def test_cpu_the_destination_cannot_provide(two_hosts, define):
    def cpu(root):
        root.insert(3, etree.fromstring(
            "<cpu mode='custom' match='strict'><model fallback='forbid'>Icelake-Server</model>"
            "<feature policy='require' name='avx512f'/></cpu>"))

    name = define(cpu)
    f = findings_of(run_check(two_hosts, name))
    assert f["cpu.compatible"]["severity"] == "blocker", f["cpu.compatible"]


def test_transient_domain_and_state(two_hosts, define):
    name = define()
    f = findings_of(run_check(two_hosts, name, "--migrate-uri", two_hosts.hostb.migrate_uri))
    assert f["domain.state"]["severity"] == "blocker" and "shut off" in \
        f["domain.state"]["message"]
    assert "domain.transient" not in f


def test_nvram_that_must_travel(two_hosts, define):
    def efi(root):
        os_el = root.find("os")
        etree.SubElement(os_el, "loader", readonly="yes", type="pflash").text = \
            "/usr/share/OVMF/OVMF_CODE.fd"
        etree.SubElement(os_el, "nvram").text = f"/var/lib/libvirt/qemu/nvram/{uuid.uuid4()}.fd"

    name = define(efi)
    f = findings_of(run_check(two_hosts, name, "--mode", "offline", "--dest-pool", "x"))
    assert f["domain.state-travels"]["severity"] == "warning"
    assert "NVRAM" in f["domain.state-travels"]["message"]


# ---------------------------------------------------------------- named fakes

def fake_clock_probe(skew: float):
    """NAMED FAKE: one machine has one clock, so a skew cannot be provoked;
    this probe reports SKEW seconds between the hosts."""
    def probe(src, dest):
        return skew, f"fake probe: {skew:+} s injected by the test"
    return probe


def with_fake_versions(f: F.Facts, lib: int, hv: int) -> F.Facts:
    """NAMED FAKE: both daemons here are the same build, so the destination's
    reported libvirt/QEMU versions are replaced by the test's."""
    f.dest.lib_version, f.dest.hv_version = lib, hv
    return f


def _real_facts(bed, name, clock=F.no_clock_probe) -> F.Facts:
    src, dst = bed.hosta.connect(), bed.hostb.connect()
    opts = F.Options(mode="offline", dest_pool="x")
    return F.gather(src, dst, src.lookupByName(name), opts, clock)


def test_clock_skew_with_named_fake_probe(two_hosts, define):
    name = define()
    by_id = lambda fs: {x.id: x for x in fs}  # noqa: E731
    real = by_id(preflight.evaluate(_real_facts(two_hosts, name)))
    assert real["host.clock"].severity == "info"  # not measurable through libvirt
    warn = by_id(preflight.evaluate(_real_facts(two_hosts, name, fake_clock_probe(5.0))))
    assert warn["host.clock"].severity == "warning" and "+5.0 s" in warn["host.clock"].message
    block = by_id(preflight.evaluate(_real_facts(two_hosts, name, fake_clock_probe(-90.0))))
    assert block["host.clock"].severity == "blocker"


def test_version_order_with_named_fake_versions(two_hosts, define):
    name = define()
    f = _real_facts(two_hosts, name)
    src_lib, src_hv = f.source.lib_version, f.source.hv_version
    assert f.dest.lib_version == src_lib  # the real daemons: no finding
    assert "version.order" not in {x.id for x in preflight.evaluate(f)}
    older = preflight.evaluate(with_fake_versions(f, src_lib - 1000, src_hv - 1000))
    ids = [(x.id, x.severity, x.subject) for x in older]
    assert ("version.order", "warning", "libvirt") in ids
    assert ("version.order", "warning", "QEMU") in ids
    newer = preflight.evaluate(with_fake_versions(f, src_lib + 1000000, src_hv))
    assert [x.severity for x in newer if x.id == "version.order"] == ["info"]


def test_validate_force_names_the_option():
    with pytest.raises(BadInput, match="--skip-check nope"):
        preflight.validate_force(["nope"])


def test_leases_need_the_same_lock_manager(two_hosts, define):
    name = define(lambda r: _add(r, "<lease><lockspace>vmshift</lockspace><key>k1</key>"
                                    "<target path='/var/lib/libvirt/vmshift-lease'/></lease>"))
    f = findings_of(run_check(two_hosts, name, "--mode", "offline", "--dest-pool", "x"))
    assert f["host.locking"]["severity"] == "warning"
    assert "1 lease" in f["host.locking"]["message"]


def test_transient_domain_is_reported(two_hosts):
    a = two_hosts.hosta
    kernel, initrd = install_boot_files(two_hosts)
    name = f"pf-{uuid.uuid4().hex[:8]}"
    root = etree.fromstring(domain_xml(name, 128, kernel, initrd, "console=ttyS0", "/x",
                                       two_hosts.network).encode())
    disk = root.find("devices/disk")
    disk.getparent().remove(disk)
    conn = a.connect()
    # started paused: a transient domain exists only while it runs
    dom = conn.createXML(etree.tostring(root, encoding="unicode"),
                         libvirt.VIR_DOMAIN_START_PAUSED)
    try:
        f = findings_of(run_check(two_hosts, name, "--migrate-uri", two_hosts.hostb.migrate_uri))
        assert f["domain.transient"]["severity"] == "info"
        assert "domain.state" not in f
    finally:
        dom.destroy()
