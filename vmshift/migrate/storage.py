"""Storage migration on one host: move disks to another pool.

Running VM: a live block copy per disk, pivot when in sync, then make the
persistent definition match and check both XMLs. Stopped VM: a stream copy,
verified, then the XML rewrite. The old volume goes only with
--delete-source, after verification; any failure leaves the VM on its old
disk and removes the new volume vmshift created.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import libvirt

from vmshift import volumes
from vmshift.convert import libvirt_xml as lx
from vmshift.errors import BadInput, OperationFailed
from vmshift.migrate import xmlmap
from vmshift.migrate.facts import volume_of
from vmshift.migrate.monitor import Interrupt
from vmshift.output import Progress
from vmshift.units import MiB

PIVOT_TIMEOUT_S = 600.0


@dataclass
class StorageRequest:
    domain: str
    disks: list[str]
    dest_pool: str
    format: str | None = None
    bandwidth_mib: int | None = None
    delete_source: bool = False


@dataclass
class MovedDisk:
    target: str
    old_path: str
    new_path: str
    format: str
    deleted_old: bool = False


@dataclass
class StorageResult:
    live: bool
    moved: list[MovedDisk] = field(default_factory=list)


def _targets(conn: libvirt.virConnect, dom: libvirt.virDomain,
             req: StorageRequest) -> dict[str, str]:
    paths = xmlmap.disk_paths(dom.XMLDesc(0))
    if not req.disks:
        return _not_in_pool(conn, paths, req.dest_pool)
    for d in req.disks:
        if d not in paths:
            raise BadInput(f"--disk {d}: the domain has no such disk (has {', '.join(paths)})")
    return {d: paths[d] for d in req.disks}


def _not_in_pool(conn: libvirt.virConnect, paths: dict[str, str], pool: str
                 ) -> dict[str, str]:
    """No --disk: every disk that is not in POOL yet (a plan's storage row moves
    the whole VM; run again after a partial move, it moves what is left)."""
    out = {}
    for target, path in paths.items():
        here = volume_of(conn, path)  # in no pool: _source_volume names the problem
        if here is None or here[0] != pool:
            out[target] = path
    if not out:
        raise BadInput(f"--dest-pool {pool}: every disk of the domain is in it already")
    return out


def _source_volume(conn: libvirt.virConnect, pool: libvirt.virStoragePool, target: str,
                   path: str, fmt: str | None, live: bool) -> libvirt.virStorageVol:
    try:
        old = conn.storageVolLookupByPath(path)
    except libvirt.libvirtError:
        raise BadInput(f"--disk {target}: {path} is in no storage pool of this host") from None
    if old.storagePoolLookupByVolume().name() == pool.name():
        raise BadInput(f"--dest-pool {pool.name()}: disk {target} is already in it")
    if volumes.backing_of(old):
        raise OperationFailed(f"disk {target}: {path} has a backing file; not supported")
    if not live and fmt and fmt != volumes.format_of(old):
        raise BadInput(f"--format {fmt}: converting a stopped VM's disk needs "
                       "qemu-img on the host; start the VM to convert live")
    return old


def check_request(req: StorageRequest, conn: libvirt.virConnect, dom: libvirt.virDomain
                  ) -> tuple[libvirt.virStoragePool, dict[str, tuple[str, libvirt.virStorageVol]]]:
    """Everything a dry run and the real run both check before anything is created:
    the pool, and per disk its source volume. Returns the pool and target -> (path, volume)."""
    targets = _targets(conn, dom, req)
    try:
        pool = conn.storagePoolLookupByName(req.dest_pool)
    except libvirt.libvirtError:
        raise BadInput(f"--dest-pool {req.dest_pool}: no such pool on this host") from None
    live = bool(dom.isActive())
    return pool, {t: (p, _source_volume(conn, pool, t, p, req.format, live))
                  for t, p in targets.items()}


def run_storage(req: StorageRequest, conn: libvirt.virConnect, dom: libvirt.virDomain,
                interrupt: Interrupt, json_mode: bool) -> StorageResult:
    pool, disks = check_request(req, conn, dom)
    pool.refresh(0)
    res = StorageResult(live=bool(dom.isActive()))
    for target, (path, old) in disks.items():
        name = PurePosixPath(path).name
        # A block copy writes into a ready image; a stream copy, the file as it is.
        new = volumes.create_like(pool, old, name, req.format) if res.live else \
            volumes.create_for_copy(pool, old, name)
        fmt = req.format or volumes.format_of(old)
        pivoted = False
        try:
            if res.live:
                _block_copy(dom, target, new.path(), fmt, req.bandwidth_mib, interrupt,
                            json_mode)
                pivoted = True  # from here the guest uses the new volume: never delete it
            else:
                _, _, ok = volumes.copy(conn, old, conn, new, f"copy {target}", json_mode)
                if not ok:
                    raise OperationFailed(f"disk {target}: copy does not match the source")
            _rewrite_definitions(conn, dom, target, new.path(), fmt, res.live)
        except BaseException:
            if not pivoted:
                new.delete(0)
            raise
        moved = MovedDisk(target, path, new.path(), fmt)
        if req.delete_source:
            old.delete(0)
            moved.deleted_old = True
        res.moved.append(moved)
    return res


def _dest_disk_xml(path: str, fmt: str) -> str:
    return lx.Disk(type="file", source_file=path, driver_type=fmt).to_xml()


def _block_copy(dom: libvirt.virDomain, target: str, path: str, fmt: str,
                bandwidth_mib: int | None, interrupt: Interrupt, json_mode: bool) -> None:
    params = {}
    if bandwidth_mib:
        params[libvirt.VIR_DOMAIN_BLOCK_COPY_BANDWIDTH] = bandwidth_mib * MiB
    flags = libvirt.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT | libvirt.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB
    dom.blockCopy(target, _dest_disk_xml(path, fmt), params, flags)
    deadline = time.monotonic() + PIVOT_TIMEOUT_S
    try:
        with Progress(f"blockcopy {target}", None, json_mode=json_mode) as bar:
            while True:
                if interrupt.signal is not None:
                    raise OperationFailed(f"interrupted by signal {interrupt.signal}: block "
                                          f"copy of {target} aborted, VM stays on the old disk")
                if time.monotonic() > deadline:
                    raise OperationFailed(f"block copy of {target} not in sync after "
                                          f"{PIVOT_TIMEOUT_S:.0f} s")
                info = dom.blockJobInfo(target, 0)
                if not info:
                    raise OperationFailed(f"block copy of {target} vanished")
                bar.total = info["end"]
                bar.update_to(info["cur"])
                if info["end"] and info["cur"] == info["end"] and _pivot(dom, target):
                    return
                time.sleep(0.3)
    except BaseException:
        try:
            dom.blockJobAbort(target, 0)  # no pivot: the guest keeps the old disk
        except libvirt.libvirtError:
            pass
        raise


def _pivot(dom: libvirt.virDomain, target: str) -> bool:
    """Pivot once the job is ready; False if it is not ready yet."""
    try:
        dom.blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() in (libvirt.VIR_ERR_BLOCK_COPY_ACTIVE,
                                    libvirt.VIR_ERR_OPERATION_INVALID):
            return False
        raise
    for _ in range(100):  # the pivot completes asynchronously
        if not dom.blockJobInfo(target, 0):
            return True
        time.sleep(0.1)
    raise OperationFailed(f"pivot of {target} did not complete")


def _rewrite_definitions(conn: libvirt.virConnect, dom: libvirt.virDomain, target: str,
                         path: str, fmt: str, live: bool) -> None:
    """Make the persistent XML match, then check every XML points at PATH."""
    if dom.isPersistent():
        conf = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        conn.defineXML(xmlmap.map_disks(conf, {target: path}, {target: fmt}))
        got = xmlmap.disk_paths(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).get(target)
        if got != path:
            raise OperationFailed(f"persistent XML has {target} -> {got}, expected {path}")
    if live:
        got = xmlmap.disk_paths(dom.XMLDesc(0)).get(target)
        if got != path:
            raise OperationFailed(f"live XML has {target} -> {got}, expected {path}")
