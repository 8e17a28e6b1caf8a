"""EFI NVRAM and emulated-TPM state of a shut-off domain, copied between hosts.

libvirt carries neither with an offline move, and neither file belongs to a
storage pool. Both are reached through libvirt alone, so no ssh or shared
filesystem is assumed: a pool that already covers the file's directory is
used, otherwise a *transient* dir pool is made over it on each side (libvirt
refuses a second pool on a path another pool covers). Then the files are
ordinary volumes: create, then ``vmshift.volumes.copy`` (stream copy and
content-hash read-back). Every pool this module made or started is
destroyed again.

The destination path is the source path (the domain XML keeps it).
"""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import libvirt
from lxml import etree

from vmshift import volumes
from vmshift.convert import libvirt_reader
from vmshift.errors import OperationFailed
from vmshift.model import Tpm

# Where libvirt's QEMU driver keeps swtpm state unless the XML says otherwise.
SWTPM_DIR = "/var/lib/libvirt/swtpm"
TPM_SUBDIR = {"2.0": "tpm2", "1.2": "tpm1.2"}
POOL_TYPES = ("dir", "fs", "netfs")  # pools whose target is a plain directory


@dataclass(frozen=True)
class StateLocation:
    """One piece of state: a file (NVRAM) or every file of a directory (TPM)."""

    kind: str  # nvram | tpm
    directory: str
    name: str | None = None  # None: all files in the directory

    def describe(self) -> str:
        return posixpath.join(self.directory, self.name) if self.name else self.directory + "/"


@dataclass
class StateCopy:
    kind: str  # nvram | tpm
    path: str  # on both hosts
    status: str  # copied | present (identical bytes already there) | absent (not on the source)
    bytes: int = 0
    sha256: str = ""
    verified: bool = False


def state_note(c: StateCopy) -> str:
    """One line of the report for C."""
    if c.status == "copied":
        return f"copied {c.kind} {c.path} -> same path, content sha256 {c.sha256} verified"
    if c.status == "present":
        return f"{c.kind} {c.path}: identical bytes already on the destination, not copied"
    return f"{c.kind} {c.path}: not on the source yet (libvirt creates it at the first start)"


def locate(xml: str, domain_uuid: str) -> list[StateLocation]:
    """The state files of a domain, from its inactive XML."""
    fw = libvirt_reader.read_domain(xml).firmware
    out = []
    if fw.nvram_path:
        path = posixpath.normpath(fw.nvram_path)
        out.append(StateLocation("nvram", posixpath.dirname(path), posixpath.basename(path)))
    out += [StateLocation("tpm", tpm_state_dir(t, domain_uuid))
            for t in fw.tpms or [] if t.backend == "emulator"]
    return out


def tpm_state_dir(tpm: Tpm, domain_uuid: str) -> str:
    if tpm.state_dir:
        return posixpath.normpath(tpm.state_dir)
    sub = TPM_SUBDIR.get(tpm.version or "2.0", "tpm2")
    return posixpath.join(SWTPM_DIR, domain_uuid, sub)


def all_copied(copies: list[StateCopy], kind: str) -> bool:
    """Whether every file of KIND was copied by vmshift (none merely present)."""
    mine = [c for c in copies if c.kind == kind and c.status != "absent"]
    return bool(mine) and all(c.status == "copied" for c in mine)


class HostDirs:
    """Pools over directories of one host, found or made; close() undoes what it made."""

    def __init__(self, conn: libvirt.virConnect) -> None:
        self.conn = conn
        self.last_error = ""
        self._pools: dict[str, libvirt.virStoragePool] = {}
        self._mine: dict[str, libvirt.virStoragePool] = {}  # made transient, or started

    def pool(self, directory: str) -> libvirt.virStoragePool | None:
        """A refreshed pool over DIRECTORY, or None when it cannot be had (no such directory)."""
        d = posixpath.normpath(directory)
        if d not in self._pools:
            pool = self._existing(d) or self._transient(d)
            if pool is None:
                return None
            self._pools[d] = pool
        self._pools[d].refresh(0)  # files made since the last refresh are not listed otherwise
        return self._pools[d]

    def _existing(self, d: str) -> libvirt.virStoragePool | None:
        for pool in self.conn.listAllStoragePools(0):
            root = etree.fromstring(pool.XMLDesc(0).encode())
            target = root.findtext("target/path")
            if root.get("type") in POOL_TYPES and target and posixpath.normpath(target) == d:
                if not pool.isActive():
                    pool.create(0)
                    self._mine[d] = pool  # leave it inactive again afterwards
                return pool
        return None

    def _transient(self, d: str) -> libvirt.virStoragePool | None:
        xml = volumes.dir_pool_xml(f"vmshift-state-{uuid.uuid4().hex[:12]}", d)
        try:
            pool = self.conn.storagePoolCreateXML(xml, 0)
        except libvirt.libvirtError as exc:
            self.last_error = exc.get_error_message()
            return None
        self._mine[d] = pool
        return pool

    def volume_at(self, path: str) -> libvirt.virStorageVol | None:
        """The file or directory at PATH as a volume, or None when absent."""
        return _lookup(self.pool(posixpath.dirname(path)), posixpath.basename(path))

    def release(self, directory: str) -> None:
        """Stop using the pool over DIRECTORY (before that directory is removed)."""
        d = posixpath.normpath(directory)
        self._pools.pop(d, None)
        pool = self._mine.pop(d, None)
        if pool is not None:
            quietly(pool.destroy)

    def close(self) -> None:
        for d in list(self._mine):
            self.release(d)
        self._pools.clear()


def quietly(call: Callable[..., object], *args: object) -> None:
    try:
        call(*args)
    except libvirt.libvirtError:
        pass  # best effort: cleanup must not hide the error that caused it


def _lookup(pool: libvirt.virStoragePool | None, name: str) -> libvirt.virStorageVol | None:
    if pool is None:
        return None
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


class StateCopier:
    """Copies state files source -> destination; remembers what it made there."""

    def __init__(self, src: libvirt.virConnect, dst: libvirt.virConnect, json_mode: bool) -> None:
        self.src, self.dst = HostDirs(src), HostDirs(dst)
        self.json_mode = json_mode
        self._made_files: list[str] = []
        self._made_dirs: list[str] = []

    def __enter__(self) -> StateCopier:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.src.close()
        self.dst.close()

    def copy(self, loc: StateLocation) -> list[StateCopy]:
        try:
            return self._copy(loc)
        except libvirt.libvirtError as exc:
            raise OperationFailed(f"{loc.kind} {loc.describe()}: "
                                  f"{exc.get_error_message()}") from exc

    def _copy(self, loc: StateLocation) -> list[StateCopy]:
        spool = self.src.pool(loc.directory)
        if loc.name:
            vols = [v for v in [_lookup(spool, loc.name)] if v is not None]
        else:
            vols = [v for v in (spool.listAllVolumes(0) if spool else [])
                    if v.info()[0] == libvirt.VIR_STORAGE_VOL_FILE]
        if not vols:  # never started: libvirt creates it at the first start
            return [StateCopy(loc.kind, loc.describe(), "absent")]
        dpool = self._dest_dir(loc.directory)
        return [self._copy_file(loc.kind, v, dpool) for v in vols]

    def _copy_file(self, kind: str, svol: libvirt.virStorageVol,
                   dpool: libvirt.virStoragePool) -> StateCopy:
        path = svol.path()
        existing = _lookup(dpool, svol.name())
        if existing is not None:
            return self._compare(kind, path, svol, existing)
        # An empty file with the source's mode and numeric owner, as a copy
        # preserving attributes would; libvirt relabels it for QEMU/swtpm at start.
        dvol = volumes.create(dpool, svol.name(), 0, "raw", volumes.permissions(svol))
        self._made_files.append(dvol.path())
        n, digest, ok = volumes.copy(self.src.conn, svol, self.dst.conn, dvol,
                                     f"copy {kind} {svol.name()}", self.json_mode)
        if not ok:
            raise OperationFailed(f"{kind}: the copy of {path} on the destination does not "
                                  "match the source (content hash differs)")
        return StateCopy(kind, path, "copied", n, digest, True)

    def _compare(self, kind: str, path: str, svol: libvirt.virStorageVol,
                 dvol: libvirt.virStorageVol) -> StateCopy:
        """A file already at the path: the same bytes (shared storage) or a refusal."""
        mine = volumes.volume_hash(self.src.conn, svol)
        theirs = volumes.volume_hash(self.dst.conn, dvol)
        if mine.hexdigest() != theirs.hexdigest():
            raise OperationFailed(f"{kind}: {path} already exists on the destination with "
                                  "other content; vmshift does not overwrite it")
        return StateCopy(kind, path, "present", mine.length, mine.hexdigest(), True)

    def _dest_dir(self, directory: str) -> libvirt.virStoragePool:
        """A pool over DIRECTORY on the destination, creating missing levels
        with the source's permissions (swtpm/<uuid>/tpm2 is new there)."""
        pool = self.dst.pool(directory)
        if pool is not None:
            return pool
        parent = posixpath.dirname(directory)
        if parent == directory:
            raise OperationFailed(f"cannot reach {directory} on the destination: "
                                  f"{self.dst.last_error}")
        ppool = self._dest_dir(parent)
        name = posixpath.basename(directory)
        perms = volumes.permissions(self.src.volume_at(directory))
        try:
            volumes.create(ppool, name, 0, "dir", perms)
        except OperationFailed as exc:
            raise OperationFailed(f"{exc.message} ({self.dst.last_error})") from exc
        self._made_dirs.append(directory)
        pool = self.dst.pool(directory)
        if pool is None:
            raise OperationFailed(f"cannot reach {directory} on the destination: "
                                  f"{self.dst.last_error}")
        return pool

    def rollback(self) -> None:
        """Remove what this copier made on the destination, newest first."""
        for path in reversed(self._made_files):
            quietly(self._delete_on_dest, path)
        for d in reversed(self._made_dirs):
            self.dst.release(d)
            quietly(self._delete_on_dest, d)  # a directory volume: rmdir, empty by now
        self._made_files.clear()
        self._made_dirs.clear()

    def _delete_on_dest(self, path: str) -> None:
        vol = self.dst.volume_at(path)
        if vol is not None:
            vol.delete(0)

    def delete_source(self, copies: list[StateCopy]) -> list[str]:
        """Delete the source files of verified copies (a kept definition's state)."""
        deleted = []
        for c in copies:
            if c.status != "copied" or not c.verified:
                continue
            vol = self.src.volume_at(c.path)
            if vol is not None:
                vol.delete(0)
                deleted.append(c.path)
        return deleted
