"""Storage migration on one host: live block copy with pivot, and offline."""

from __future__ import annotations

import os
import signal
import time

import libvirt
import pytest

from tests.migrate_support import finish, start, vmshift
from vmshift.migrate import xmlmap

pytestmark = pytest.mark.slow


def _paths(dom, flags=0):
    return xmlmap.disk_paths(dom.XMLDesc(flags))


def test_live_block_copy_pivots_and_both_xmls_follow(two_hosts, tiny_guest):
    a = two_hosts.hosta
    g = tiny_guest(a, memory_mib=256, fill_mib=64, disk_pool="private")
    g.wait_ready()
    old_file = os.path.join(a.private_pool_outside, os.path.basename(g.disk_path))
    r = vmshift("migrate", "storage", g.name, "--source", a.uri, "--disk", "vda",
                "--dest-pool", two_hosts.shared_pool, "--bandwidth", "32", "--json")
    assert r.rc == 0, r.err
    new_path = os.path.join(two_hosts.shared_path, os.path.basename(g.disk_path))
    dom = g.conn(a).lookupByName(g.name)
    assert dom.isActive()
    assert _paths(dom)["vda"] == new_path  # live XML
    assert _paths(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)["vda"] == new_path  # persistent
    # the guest reads its disk again (page cache dropped): now the new volume
    g.console("echo 3 > /proc/sys/vm/drop_caches")
    assert g.checksum(host=a) == g.disk_sha256
    assert os.path.exists(old_file), "old volume kept without --delete-source"
    pool = g.conn(a).storagePoolLookupByName(two_hosts.shared_pool)
    pool.refresh(0)
    assert pool.storageVolLookupByName(os.path.basename(g.disk_path)).path() == new_path


def test_offline_storage_move_rewrites_xml_and_deletes_old(two_hosts, tiny_guest):
    a = two_hosts.hosta
    g = tiny_guest(a, memory_mib=256, fill_mib=64, disk_pool="private", start=False)
    old_file = os.path.join(a.private_pool_outside, os.path.basename(g.disk_path))
    new_path = os.path.join(two_hosts.shared_path, os.path.basename(g.disk_path))
    r = vmshift("migrate", "storage", g.name, "--source", a.uri, "--disk", "vda",
                "--dest-pool", two_hosts.shared_pool, "--delete-source", "--json")
    assert r.rc == 0, r.err
    dom = g.conn(a).lookupByName(g.name)
    assert _paths(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)["vda"] == new_path
    assert not os.path.exists(old_file)
    dom.create()
    g.wait_ready(host=a)
    assert g.checksum(host=a) == g.disk_sha256


def test_storage_bad_disk_is_bad_input(two_hosts, tiny_guest):
    a = two_hosts.hosta
    g = tiny_guest(a, memory_mib=256, fill_mib=64, disk_pool="private", start=False)
    r = vmshift("migrate", "storage", g.name, "--source", a.uri, "--disk", "vdz",
                "--dest-pool", two_hosts.shared_pool)
    assert r.rc == 2 and "--disk vdz" in r.err


def test_ctrl_c_during_live_block_copy_keeps_the_old_disk(two_hosts, tiny_guest):
    """SIGINT while the block copy runs: the job is aborted without a pivot,
    the VM keeps running on its old disk (live and persistent XML), and the
    volume vmshift created is removed. 1 MiB/s over the 4 MiB disk: ~4 s."""
    a = two_hosts.hosta
    g = tiny_guest(a, memory_mib=256, fill_mib=64, disk_pool="private")
    g.wait_ready()
    name = os.path.basename(g.disk_path)
    p = start("migrate", "storage", g.name, "--source", a.uri, "--disk", "vda",
              "--dest-pool", two_hosts.shared_pool, "--bandwidth", "1", "--json")
    dom = g.conn(a).lookupByName(g.name)
    end = time.monotonic() + 60
    while not (job := dom.blockJobInfo("vda", 0)) or not job["cur"]:
        assert time.monotonic() < end and p.poll() is None, "no block copy under way"
        time.sleep(0.1)
    assert job["cur"] < job["end"], job  # struck mid-copy
    p.send_signal(signal.SIGINT)
    r = finish(p, timeout=60)
    assert r.rc == 1 and "Traceback" not in r.err, r.err
    assert "interrupted" in r.err and r.doc["error"]["detail"]["category"] == "interrupted"
    assert not dom.blockJobInfo("vda", 0), "block job left behind"
    assert dom.isActive()
    assert _paths(dom)["vda"] == g.disk_path
    assert _paths(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)["vda"] == g.disk_path
    pool = g.conn(a).storagePoolLookupByName(two_hosts.shared_pool)
    pool.refresh(0)
    assert name not in pool.listVolumes(), "the half-copied volume was kept"
    g.console("echo 3 > /proc/sys/vm/drop_caches")
    assert g.checksum(host=a) == g.disk_sha256


def test_without_disk_every_disk_not_in_the_pool_moves(two_hosts, tiny_guest):
    a = two_hosts.hosta
    g = tiny_guest(a, memory_mib=256, fill_mib=64, disk_pool="private", start=False)
    r = vmshift("migrate", "storage", g.name, "--source", a.uri,
                "--dest-pool", two_hosts.shared_pool, "--dry-run", "--json")
    assert r.rc == 0, r.err
    assert r.doc["notes"][1:] == [f"copy vda -> pool {two_hosts.shared_pool}"]
    r = vmshift("migrate", "storage", g.name, "--source", a.uri, "--dest-pool", a.private_pool)
    assert r.rc == 2 and "every disk of the domain is in it already" in r.err
