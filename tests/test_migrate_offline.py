"""Offline migration with non-shared disks: stream copy, verify, then move."""

from __future__ import annotations

import os

import pytest

from tests.migrate_support import qemu_img_identical, state_on, vmshift

pytestmark = pytest.mark.slow


def _offline(a, b, name, *extra):
    return vmshift("migrate", "offline", name, "--source", a.uri, "--dest", b.uri, "--json",
                   *extra)


def test_offline_copies_private_disk_verifies_and_moves_definition(two_hosts, tiny_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a, memory_mib=256, fill_mib=64, disk_pool="private", start=False)
    vol = os.path.basename(g.disk_path)
    src_file = os.path.join(a.private_pool_outside, vol)
    dst_file = os.path.join(b.private_pool_outside, vol)

    refused = _offline(a, b, g.name)  # no --dest-pool: the disk cannot follow
    assert refused.rc == 3 and "storage.not-shared" in refused.err
    dry = _offline(a, b, g.name, "--dest-pool", b.private_pool, "--dry-run")
    assert dry.rc == 0 and any(n.startswith("copy vda") for n in dry.doc["notes"])
    assert not os.path.exists(dst_file) and state_on(b, g.name) is None

    r = _offline(a, b, g.name, "--dest-pool", b.private_pool)
    assert r.rc == 0, r.err
    assert any("verified" in n for n in r.doc["notes"])
    assert state_on(b, g.name) == (False, True)
    assert state_on(a, g.name) is None
    assert os.path.exists(src_file), "source volume kept without --delete-source"
    assert qemu_img_identical(src_file, dst_file)
    # the moved guest boots there and reads the same data
    g.conn(b).lookupByName(g.name).create()
    g.wait_ready(host=b)
    assert g.checksum(host=b) == g.disk_sha256


def test_offline_delete_source_and_keep_source(two_hosts, tiny_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a, memory_mib=256, fill_mib=64, disk_pool="private", start=False)
    vol = os.path.basename(g.disk_path)
    src_file = os.path.join(a.private_pool_outside, vol)
    r = _offline(a, b, g.name, "--dest-pool", b.private_pool, "--keep-source",
                 "--delete-source")
    assert r.rc == 0, r.err
    assert state_on(a, g.name) == (False, True)  # --keep-source
    assert state_on(b, g.name) == (False, True)
    assert not os.path.exists(src_file), "--delete-source after the verified copy"
    assert any(n.startswith("deleted source volume") for n in r.doc["notes"])


def test_offline_refuses_a_running_domain(two_hosts, tiny_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    g = tiny_guest(a, memory_mib=256, fill_mib=64, disk_pool="private")
    r = _offline(a, b, g.name, "--dest-pool", b.private_pool)
    assert r.rc == 3 and "domain.state" in r.err
    assert state_on(a, g.name) == (True, True)
