"""Offline migration with non-shared disks (and NVRAM/TPM state): stream copy,
verify, then move."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from tests.migrate_support import qemu_img_identical, state_on, vmshift
from vmshift.testbed.hosts import TestHost
from vmshift.testbed.libvirthost import PRIVATE_DIRS
from vmshift.testbed.tinyguest import TinyGuest

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


# ------------------------------------------------------- EFI NVRAM and TPM state

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE.fd"  # Debian's ovmf
NVRAM_DIR = "/var/lib/libvirt/qemu/nvram"


@dataclass
class EfiGuest:
    """A tiny guest given a UEFI loader, an NVRAM file and (maybe) an emulated TPM."""

    guest: TinyGuest
    uuid: str
    nvram: str  # inside the hosts

    def nvram_on(self, host: TestHost) -> Path:
        return _outside(host, self.nvram)

    def tpm_on(self, host: TestHost) -> Path:
        return _outside(host, f"/var/lib/libvirt/swtpm/{self.uuid}")


def _outside(host: TestHost, path: str) -> Path:
    """A path under the host's private /var/lib/libvirt, seen from the machine."""
    rel = Path(path).relative_to(PRIVATE_DIRS["lib"])
    return Path(host.private_pool_outside).parent / rel


def _add_efi(g: TinyGuest, tpm: bool) -> EfiGuest:
    conn = g.conn(g.host)
    dom = conn.lookupByName(g.name)
    root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    nvram = f"{NVRAM_DIR}/{g.name}_VARS.fd"
    os_el = root.find("os")
    etree.SubElement(os_el, "loader", readonly="yes", type="pflash").text = OVMF_CODE
    etree.SubElement(os_el, "nvram").text = nvram
    # A serial <log> file needs /var/log/libvirt/qemu, which a fresh bed host
    # has only after its first start; this guest's console is never read.
    for log in root.findall("devices/serial/log"):
        log.getparent().remove(log)
    if tpm:
        el = etree.SubElement(root.find("devices"), "tpm", model="tpm-crb")
        etree.SubElement(el, "backend", type="emulator", version="2.0")
    conn.defineXML(etree.tostring(root, encoding="unicode"))
    return EfiGuest(g, dom.UUIDString(), nvram)


def _write(path: Path, data: bytes, dir_mode: int = 0o711) -> None:
    path.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600)


def _seed_state(e: EfiGuest, host) -> tuple[bytes, bytes, Path]:
    """Random NVRAM and TPM state on HOST: (nvram bytes, tpm bytes, tpm file)."""
    nvram_bytes, tpm_bytes = os.urandom(128 << 10), os.urandom(6 << 10)
    _write(e.nvram_on(host), nvram_bytes)
    permall = e.tpm_on(host) / "tpm2" / "tpm2-00.permall"
    _write(permall, tpm_bytes, dir_mode=0o700)
    return nvram_bytes, tpm_bytes, permall


def _forget(bed, e: EfiGuest) -> None:
    """Undefine with the state on every host (a plain undefine refuses an
    NVRAM), and remove state files the test left, before tiny_guest's cleanup."""
    for h in bed.hosts:
        try:
            dom = e.guest.conn(h).lookupByName(e.guest.name)
        except libvirt.libvirtError:
            dom = None
        if dom is not None:
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM)
        e.nvram_on(h).unlink(missing_ok=True)
        shutil.rmtree(e.tpm_on(h), ignore_errors=True)


@pytest.fixture
def efi_guest(two_hosts, tiny_guest):
    made: list[EfiGuest] = []

    def factory(tpm: bool = True) -> EfiGuest:
        g = tiny_guest(two_hosts.hosta, memory_mib=256, fill_mib=64, disk_pool="private",
                       start=False)
        made.append(_add_efi(g, tpm))
        return made[-1]

    yield factory
    for e in made:
        _forget(two_hosts, e)


def _state_pools(host: TestHost) -> list[str]:
    conn = host.connect()
    try:
        return [p.name() for p in conn.listAllStoragePools(0)
                if p.name().startswith("vmshift-state-")]
    finally:
        conn.close()


def test_offline_carries_nvram_and_tpm_state(two_hosts, efi_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    e = efi_guest(tpm=True)
    # One start makes real state: swtpm_setup writes the TPM's, OVMF its vars.
    dom = e.guest.conn(a).lookupByName(e.guest.name)
    dom.create()
    dom.destroy()
    nvram_bytes = os.urandom(128 << 10)
    e.nvram_on(a).write_bytes(nvram_bytes)  # bytes this test knows
    permall = e.tpm_on(a) / "tpm2" / "tpm2-00.permall"
    tpm_bytes = permall.read_bytes()
    assert not e.nvram_on(b).exists() and not e.tpm_on(b).exists()

    dry = _offline(a, b, e.guest.name, "--dest-pool", b.private_pool, "--dry-run")
    assert dry.rc == 0, dry.err
    assert any(n.startswith(f"copy nvram {e.nvram}") for n in dry.doc["notes"])
    assert any(n.startswith(f"copy tpm /var/lib/libvirt/swtpm/{e.uuid}/tpm2") for n in
               dry.doc["notes"])
    assert not e.nvram_on(b).exists() and not e.tpm_on(b).exists()

    r = _offline(a, b, e.guest.name, "--dest-pool", b.private_pool)
    assert r.rc == 0, r.err
    notes = r.doc["notes"]
    assert any(n.startswith(f"copied nvram {e.nvram}") and "verified" in n for n in notes)
    assert any(n.startswith("copied tpm ") and n.endswith("verified") for n in notes)
    assert state_on(a, e.guest.name) is None and state_on(b, e.guest.name) == (False, True)
    assert e.nvram_on(b).read_bytes() == nvram_bytes
    assert (e.tpm_on(b) / "tpm2" / "tpm2-00.permall").read_bytes() == tpm_bytes
    # the directories libvirt made for swtpm on the source, made alike there
    for sub in ("", "tpm2"):
        assert (e.tpm_on(b) / sub).stat().st_mode & 0o777 == \
            (e.tpm_on(a) / sub).stat().st_mode & 0o777
    # without --delete-source the source keeps its state files
    assert e.nvram_on(a).read_bytes() == nvram_bytes and permall.read_bytes() == tpm_bytes
    assert _state_pools(a) == [] and _state_pools(b) == []
    # swtpm accepts the copied state: the domain starts there
    moved = e.guest.conn(b).lookupByName(e.guest.name)
    moved.create()
    assert moved.isActive()
    moved.destroy()


@pytest.mark.parametrize("keep_source", [False, True], ids=["undefine", "keep-source"])
def test_offline_delete_source_removes_state_after_verified_copy(two_hosts, efi_guest,
                                                                 keep_source):
    a, b = two_hosts.hosta, two_hosts.hostb
    e = efi_guest(tpm=True)
    nvram_bytes, tpm_bytes, permall = _seed_state(e, a)
    extra = ["--keep-source"] if keep_source else []
    r = _offline(a, b, e.guest.name, "--dest-pool", b.private_pool, "--delete-source", *extra)
    assert r.rc == 0, r.err
    assert e.nvram_on(b).read_bytes() == nvram_bytes
    assert (e.tpm_on(b) / "tpm2" / "tpm2-00.permall").read_bytes() == tpm_bytes
    assert not e.nvram_on(a).exists() and not permall.exists()
    deleted = {n for n in r.doc["notes"] if n.startswith("deleted source state file")}
    assert deleted == {f"deleted source state file {e.nvram}",
                       f"deleted source state file /var/lib/libvirt/swtpm/{e.uuid}/tpm2/"
                       "tpm2-00.permall"}
    assert state_on(a, e.guest.name) == ((False, True) if keep_source else None)
    assert state_on(b, e.guest.name) == (False, True)
    assert _state_pools(a) == [] and _state_pools(b) == []


def test_offline_refuses_an_nvram_file_already_at_the_destination(two_hosts, efi_guest):
    a, b = two_hosts.hosta, two_hosts.hostb
    e = efi_guest(tpm=False)
    mine, theirs = os.urandom(128 << 10), os.urandom(128 << 10)
    _write(e.nvram_on(a), mine)
    _write(e.nvram_on(b), theirs)
    disk_on_b = os.path.join(b.private_pool_outside, os.path.basename(e.guest.disk_path))
    r = _offline(a, b, e.guest.name, "--dest-pool", b.private_pool)
    assert r.rc == 1
    assert f"{e.nvram} already exists on the destination" in r.doc["error"]["message"]
    assert state_on(a, e.guest.name) == (False, True) and state_on(b, e.guest.name) is None
    assert e.nvram_on(a).read_bytes() == mine, "source NVRAM untouched"
    assert e.nvram_on(b).read_bytes() == theirs, "never overwritten"
    assert not os.path.exists(disk_on_b), "no disk copy began"
    assert _state_pools(a) == [] and _state_pools(b) == []


def test_offline_shared_nvram_is_not_copied_nor_deleted(two_hosts, efi_guest):
    """Identical bytes already at the path (as on shared storage): used, never deleted."""
    a, b = two_hosts.hosta, two_hosts.hostb
    e = efi_guest(tpm=False)
    same = os.urandom(128 << 10)
    _write(e.nvram_on(a), same)
    _write(e.nvram_on(b), same)
    r = _offline(a, b, e.guest.name, "--dest-pool", b.private_pool, "--delete-source")
    assert r.rc == 0, r.err
    assert any("identical bytes already on the destination, not copied" in n
               for n in r.doc["notes"])
    assert e.nvram_on(a).read_bytes() == same, "not ours to delete: it was not copied"
    assert e.nvram_on(b).read_bytes() == same


def test_offline_failure_after_state_copy_rolls_it_back(two_hosts, efi_guest):
    """The disk copy fails (its name is taken in --dest-pool) after NVRAM and TPM
    state were copied: what vmshift made on the destination goes, nothing else."""
    a, b = two_hosts.hosta, two_hosts.hostb
    e = efi_guest(tpm=True)
    nvram_bytes, tpm_bytes, permall = _seed_state(e, a)
    taken = Path(two_hosts.shared_path) / os.path.basename(e.guest.disk_path)
    taken.write_bytes(b"someone else's volume")
    try:
        r = _offline(a, b, e.guest.name, "--dest-pool", two_hosts.shared_pool)
        assert taken.read_bytes() == b"someone else's volume"
    finally:
        taken.unlink()
    # the disk is copied after the state files: they were there when it failed
    assert r.rc == 1
    assert f"cannot create {taken.name} in pool {two_hosts.shared_pool}" in \
        r.doc["error"]["message"]
    assert not e.nvram_on(b).exists(), "the copied NVRAM is rolled back"
    assert not e.tpm_on(b).exists(), "the TPM directories vmshift made are removed"
    assert state_on(a, e.guest.name) == (False, True) and state_on(b, e.guest.name) is None
    assert e.nvram_on(a).read_bytes() == nvram_bytes and permall.read_bytes() == tpm_bytes
    assert _state_pools(a) == [] and _state_pools(b) == []
