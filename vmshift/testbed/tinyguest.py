"""A tiny bootable guest for migration tests, on a bed host.

    from vmshift.testbed.tinyguest import tiny_guest
    g = tiny_guest(bed.hosta, fill_mib=128, dirty_mib_s=8)
    g.wait_ready(); g.checksum() == g.disk_sha256

It boots the host's Debian kernel with a busybox initramfs (both in the
bed's shared pool, so every host sees the same paths) under TCG in seconds.
At boot it fills ``fill_mib`` MiB with random data (so a migration moves real
bytes), then dirties memory at ``dirty_mib_s`` MiB/s. Its virtio data disk
(qcow2, in the shared pool or the host's private pool) holds random bytes
whose sha256 is known; ``checksum()`` asks the guest to read it back.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import libvirt
from lxml import etree

from vmshift import volumes
from vmshift.console import Console
from vmshift.errors import BadInput, OperationFailed
from vmshift.testbed import hosts as hostmod
from vmshift.testbed import state, tinyimage
from vmshift.testbed.hosts import TestBed, TestHost
from vmshift.testbed.libvirthost import save_qemu_caps
from vmshift.testbed.storage import is_mounted

DATA_DISK_MIB = 4
READY_TIMEOUT = 120.0
# How long removing a guest waits for a migration call libvirt still runs: a
# post-copy resume left pending while the link was down sits in the source
# daemon's TCP connect to the destination, whose SYN retries back off to a
# minute and more, and holds the domain's job until then.
PENDING_JOB_S = 240.0


def bed_of(host: TestHost) -> TestBed:
    bed = hostmod.load_bed(host.bed) if host.bed else None
    if bed is None:
        for name in state.all_beds():
            candidate = hostmod.load_bed(name)
            if candidate and any(h.uri == host.uri for h in candidate.hosts):
                return candidate
        raise OperationFailed(f"{host.uri}: no test bed that is up has this host")
    return bed


def bed_state_dir(host: TestHost) -> str:
    """The host's private directory tree as seen from the machine."""
    return str(Path(host.private_pool_outside).parent.parent)


def install_boot_files(bed: TestBed) -> tuple[str, str]:
    """Copy kernel and initramfs into the shared pool once per recipe."""
    shared = Path(bed.shared_path)
    if bed.storage_kind == "glusterfs" and not is_mounted(shared, "fuse.glusterfs"):
        raise OperationFailed(f"{shared} is not mounted on this machine (the hosts would not "
                              f"see files put there): run `vmshift testbed up --name {bed.name}`")
    boot = tinyimage.boot_files()
    kernel = shared / f"tiny-vmlinux-{boot.recipe}"
    initrd = shared / f"tiny-initramfs-{boot.recipe}.gz"
    for src, dst in ((boot.kernel, kernel), (boot.initramfs, initrd)):
        if not dst.exists():
            part = dst.with_name(dst.name + ".part")
            shutil.copyfile(src, part)
            part.chmod(0o644)
            part.replace(dst)
    return str(kernel), str(initrd)


def make_data_disk(conn: libvirt.virConnect, pool_name: str, vol_name: str) -> tuple[str, str]:
    """A qcow2 volume whose guest-visible content is random bytes.

    The image is built locally with qemu-img, then created and uploaded through
    the host's libvirt (virStorageVolUpload), so the file is made in the pool as
    the host itself sees it. Returns (path on the host, sha256 of the content).
    """
    content = os.urandom(DATA_DISK_MIB << 20)
    with tempfile.TemporaryDirectory() as tmp:
        raw, qcow2 = Path(tmp) / "data.raw", Path(tmp) / "data.qcow2"
        raw.write_bytes(content)
        argv = ["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)
        pool = conn.storagePoolLookupByName(pool_name)
        # Created as a plain file of the image's size; the upload writes the qcow2 bytes.
        vol = volumes.create(pool, vol_name, qcow2.stat().st_size, "raw")
        volumes.upload(conn, vol, qcow2)
    pool.refresh(0)
    return vol.path(), hashlib.sha256(content).hexdigest()


def serial_log(name: str) -> str:
    """The guest's console output as seen by one host, inside that host."""
    return f"/var/log/libvirt/qemu/{name}.serial.log"


def domain_xml(name: str, memory_mib: int, kernel: str, initrd: str, cmdline: str,
               disk: str, network: str) -> str:
    dom = etree.Element("domain", type="qemu")  # TCG: KVM is broken under nesting here
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = str(memory_mib)
    etree.SubElement(dom, "vcpu").text = "1"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    etree.SubElement(os_el, "kernel").text = kernel
    etree.SubElement(os_el, "initrd").text = initrd
    etree.SubElement(os_el, "cmdline").text = cmdline
    etree.SubElement(etree.SubElement(dom, "features"), "acpi")
    etree.SubElement(dom, "on_reboot").text = "destroy"
    devices = etree.SubElement(dom, "devices")
    disk_el = etree.SubElement(devices, "disk", type="file", device="disk")
    # cache='none': what libvirt wants before calling a shared-storage migration safe.
    etree.SubElement(disk_el, "driver", name="qemu", type="qcow2", cache="none")
    etree.SubElement(disk_el, "source", file=disk)
    etree.SubElement(disk_el, "target", dev="vda", bus="virtio")
    nic = etree.SubElement(devices, "interface", type="network")
    etree.SubElement(nic, "source", network=network)
    etree.SubElement(nic, "model", type="virtio")
    # No iPXE option ROM: the guest boots its kernel directly, and initialising
    # iPXE under TCG costs seconds.
    etree.SubElement(nic, "rom", enabled="no")
    serial = etree.SubElement(devices, "serial", type="pty")
    etree.SubElement(serial, "target", port="0")
    # Everything the guest printed, per host (each has its own /var/log/libvirt):
    # a guest that dies after a migration leaves its last words here.
    etree.SubElement(serial, "log", file=serial_log(name), append="on")
    console = etree.SubElement(devices, "console", type="pty")
    etree.SubElement(console, "target", type="serial", port="0")
    etree.SubElement(devices, "memballoon", model="none")
    return etree.tostring(dom, encoding="unicode")


@dataclass
class TinyGuest:
    """A tiny guest; ``host`` is where it was defined, it may run elsewhere since."""

    name: str
    host: TestHost
    bed: TestBed
    disk_path: str
    disk_sha256: str
    disk_pool: str
    memory_mib: int
    fill_mib: int
    dirty_mib_s: float
    _conns: dict[str, libvirt.virConnect] = field(default_factory=dict, repr=False)

    def conn(self, host: TestHost) -> libvirt.virConnect:
        """A connection to HOST, opened again once libvirt has seen it die."""
        conn = self._conns.get(host.uri)
        if conn is None or not conn.isAlive():
            conn = self._conns[host.uri] = host.connect()
        return conn

    def forget_connections(self) -> None:
        """Drop the cached connections (after a host's daemon was restarted:
        libvirt notices a dead connection only when a call on it fails)."""
        for conn in self._conns.values():
            try:
                conn.close()
            except libvirt.libvirtError:
                pass  # the daemon at its other end is gone
        self._conns.clear()

    def running_on(self) -> TestHost | None:
        """The bed host where the domain is active now."""
        for h in self.bed.hosts:
            try:
                if self.conn(h).lookupByName(self.name).isActive():
                    return h
            except libvirt.libvirtError:
                continue
        return None

    def domain(self, host: TestHost | None = None) -> libvirt.virDomain:
        where = host or self.running_on() or self.host
        return self.conn(where).lookupByName(self.name)

    def console(self, cmd: str, timeout: float = 30.0, host: TestHost | None = None) -> str:
        """Run CMD on the guest's serial console; return its output (rc != 0 raises)."""
        where = host or self.running_on()
        if where is None:
            raise OperationFailed(f"guest {self.name} is not running on any host")
        with Console(where.uri, self.name) as session:
            rc, out = session.command(cmd, timeout)
        if rc != 0:
            raise OperationFailed(f"guest {self.name}: {cmd!r} exited {rc}: {out.strip()}")
        return out

    def wait_ready(self, host: TestHost | None = None, timeout: float = READY_TIMEOUT) -> str:
        """Wait until the guest answers ``ping`` (it only does once memory is filled)."""
        where = host or self.running_on()
        if where is None:
            raise OperationFailed(f"guest {self.name} is not running on any host")
        with Console(where.uri, self.name) as session:
            return session.wait_ready(timeout)

    def checksum(self, host: TestHost | None = None, timeout: float = 60.0) -> str:
        out = self.console("checksum", timeout, host)
        for line in out.splitlines():
            if line.startswith("SUM "):
                return line.split()[1]
        raise OperationFailed(f"guest {self.name}: no SUM line in {out!r}")

    def destroy(self, pending_job_s: float = PENDING_JOB_S) -> None:
        """Stop and undefine the guest on every host; remove its data disk(s).
        A call libvirt still runs on the domain is waited for PENDING_JOB_S."""
        for h in self.bed.hosts:
            try:
                dom = self.conn(h).lookupByName(self.name)
            except libvirt.libvirtError:
                continue
            if dom.isActive():
                _outlasting_jobs(dom.destroy, pending_job_s)
            if dom.isPersistent():
                _outlasting_jobs(dom.undefine, pending_job_s)
        self._remove_disks()
        self.forget_connections()

    def _remove_disks(self) -> None:
        for h in self.bed.hosts:
            try:
                pool = self.conn(h).storagePoolLookupByName(self._pool_name())
                pool.refresh(0)
                pool.storageVolLookupByName(Path(self.disk_path).name).delete(0)
            except libvirt.libvirtError:
                continue
            if self.disk_pool == "shared":
                break

    def _pool_name(self) -> str:
        return self.bed.shared_pool if self.disk_pool == "shared" else self.host.private_pool


def _outlasting_jobs(call: Callable[[], object], wait_s: float) -> None:
    """CALL (a destroy or undefine), retried for WAIT_S while libvirt times
    out on the domain's job lock held by a call still in flight."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            call()
            return
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_OPERATION_TIMEOUT \
                    or time.monotonic() >= deadline:
                raise


def tiny_guest(host: TestHost, *, name: str | None = None, memory_mib: int = 256,
               fill_mib: int = 128, dirty_mib_s: float = 0, disk_pool: str = "shared",
               start: bool = True, ip: str | None = None) -> TinyGuest:
    """Define (and by default start) a tiny guest on HOST.

    IP ("ADDR/LEN", e.g. from ``bed.guest_address(n)``) configures the guest's
    NIC on the bed's network; without it the NIC stays unconfigured.
    """
    if disk_pool not in ("shared", "private"):
        raise BadInput(f"disk_pool: {disk_pool!r} is not 'shared' or 'private'")
    if fill_mib + 64 > memory_mib:
        raise BadInput(f"fill_mib: {fill_mib} MiB leaves too little of {memory_mib} MiB "
                       "for the guest kernel (keep 64 MiB)")
    bed = bed_of(host)
    name = name or f"tiny-{uuid.uuid4().hex[:8]}"
    kernel, initrd = install_boot_files(bed)
    pool_name = bed.shared_pool if disk_pool == "shared" else host.private_pool
    conn = host.connect()
    try:
        disk_path, sha = make_data_disk(conn, pool_name, f"{name}-data.qcow2")
    finally:
        conn.close()
    # no_timer_check: under TCG on a loaded machine the kernel's early check
    # that the timer interrupt arrives through the IO-APIC can time out and
    # panic the boot (seen in CI); the emulated timer works, the check is moot.
    cmdline = (f"console=ttyS0 quiet loglevel=1 panic=-1 8250.nr_uarts=1 mitigations=off "
               "no_timer_check "
               f"vmshift.fill={fill_mib} vmshift.dirty={dirty_mib_s:g}"
               + (f" vmshift.ip={ip}" if ip else ""))
    guest = TinyGuest(name=name, host=host, bed=bed, disk_path=disk_path, disk_sha256=sha,
                      disk_pool=disk_pool, memory_mib=memory_mib, fill_mib=fill_mib,
                      dirty_mib_s=dirty_mib_s)
    conn = guest.conn(host)
    dom = conn.defineXML(domain_xml(name, memory_mib, kernel, initrd, cmdline, disk_path,
                                    bed.network))
    # Defining probed QEMU on this host: keep the result for hosts started later.
    save_qemu_caps(Path(bed_state_dir(host)))
    if start:
        dom.create()
    return guest
