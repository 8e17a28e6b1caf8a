"""Output to a libvirt storage pool, on this host or any other libvirt host.

The converted image is uploaded through the libvirt stream API (what
`virsh vol-upload --sparse` does), so a remote host needs neither a shared
filesystem nor SSH: only the libvirt connection. Holes are sent as holes.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import libvirt
from lxml import etree

from vmshift.errors import BadInput, OperationFailed

CHUNK = 1024 * 1024
BLOCK = 64 * 1024  # granularity of the hole-independent content hash


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt's default handler prints every error to stderr; ours become one line."""


def connect(uri: str) -> libvirt.virConnect:
    libvirt.registerErrorHandler(_quiet, None)
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise OperationFailed(f"cannot connect to {uri}: {exc.get_error_message()}") from None


@dataclass
class PoolTarget:
    conn: libvirt.virConnect
    pool: libvirt.virStoragePool
    uri: str

    @property
    def name(self) -> str:
        return str(self.pool.name())

    def available(self) -> int:
        return int(self.pool.info()[3])

    def exists(self, volume: str) -> bool:
        try:
            self.pool.storageVolLookupByName(volume)
        except libvirt.libvirtError:
            return False
        return True


def open_pool(uri: str, name: str) -> PoolTarget:
    conn = connect(uri)
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        raise BadInput(f"--pool: no storage pool {name!r} on {uri}") from None
    if not pool.isActive():
        raise BadInput(f"--pool: storage pool {name!r} on {uri} is not active")
    pool.refresh(0)
    return PoolTarget(conn, pool, uri)


def volume_xml(name: str, capacity: int, fmt: str) -> str:
    vol = etree.Element("volume")
    etree.SubElement(vol, "name").text = name
    etree.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    etree.SubElement(vol, "allocation", unit="bytes").text = "0"
    target = etree.SubElement(vol, "target")
    etree.SubElement(target, "format", type=fmt)
    return etree.tostring(vol, encoding="unicode")


def create_volume(target: PoolTarget, name: str, capacity: int,
                  fmt: str) -> libvirt.virStorageVol:
    try:
        return target.pool.createXML(volume_xml(name, capacity, fmt), 0)
    except libvirt.libvirtError as exc:
        raise OperationFailed(f"cannot create volume {name} in pool {target.name} on "
                              f"{target.uri}: {exc.get_error_message()}") from None


def delete_volume(vol: libvirt.virStorageVol) -> None:
    vol.delete(0)


def data_segments(fd: int, size: int) -> list[tuple[int, int, bool]]:
    """(offset, length, is_data) runs of a local file, from SEEK_DATA/SEEK_HOLE."""
    runs, pos = [], 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole remains
            data = size
        if data > pos:
            runs.append((pos, data - pos, False))
        if data >= size:
            break
        hole = os.lseek(fd, data, os.SEEK_HOLE)
        runs.append((data, hole - data, True))
        pos = hole
    return runs


def upload(target: PoolTarget, vol: libvirt.virStorageVol, path: Path,
           on_bytes: Callable[[int], None], cancelled: Callable[[], bool],
           rate: int | None = None) -> None:
    """Send ``path`` into ``vol`` as a sparse stream; holes cost nothing on the wire.

    ``rate`` (bytes/s of data, holes are free) caps the upload like qemu-img -r
    caps the conversion, so a migration can share a WAN link.
    """
    size = path.stat().st_size
    start, sent = time.monotonic(), 0
    stream = target.conn.newStream(0)
    try:
        vol.upload(stream, 0, size, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
        fd = os.open(path, os.O_RDONLY)
        try:
            done = 0
            for offset, length, is_data in data_segments(fd, size):
                if not is_data:
                    stream.sendHole(length, 0)
                else:
                    os.lseek(fd, offset, os.SEEK_SET)
                    left = length
                    while left:
                        if cancelled():
                            raise OperationFailed("upload cancelled")
                        chunk = os.read(fd, min(CHUNK, left))
                        if not chunk:
                            raise OperationFailed(f"{path} shrank during the upload")
                        stream.send(chunk)
                        left -= len(chunk)
                        sent += len(chunk)
                        on_bytes(offset + length - left)
                        if rate:
                            _throttle(start, sent, rate)
                done += length
                on_bytes(done)
        finally:
            os.close(fd)
        stream.finish()
    except libvirt.libvirtError as exc:
        _abort(stream)
        raise OperationFailed(f"upload to {target.uri} pool {target.name} failed: "
                              f"{exc.get_error_message()}") from None
    except BaseException:
        _abort(stream)
        raise


def _throttle(start: float, sent: int, rate: int) -> None:
    ahead = sent / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)


def _abort(stream: libvirt.virStream) -> None:
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass


class ContentHash:
    """sha256 over (offset, block) of every non-zero 64 KiB block.

    Independent of how holes are represented, so a local file and the same
    bytes read back through a sparse libvirt stream hash alike.
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._pos = 0
        self._buf = b""

    def data(self, chunk: bytes) -> None:
        self._buf += chunk
        full = len(self._buf) - len(self._buf) % BLOCK
        for i in range(0, full, BLOCK):
            self._block(self._buf[i:i + BLOCK])
        self._buf = self._buf[full:]

    def hole(self, length: int) -> None:
        if self._buf:  # a hole mid-block: pad the block with the hole's zeroes
            pad = min(BLOCK - len(self._buf), length)
            self.data(b"\0" * pad)
            length -= pad
        whole, rest = divmod(length, BLOCK)
        self._pos += whole * BLOCK
        if rest:
            self.data(b"\0" * rest)

    def _block(self, block: bytes) -> None:
        if block.count(0) != len(block):
            self._h.update(self._pos.to_bytes(8, "little"))
            self._h.update(block)
        self._pos += len(block)

    def hexdigest(self) -> str:
        if self._buf:
            self._block(self._buf)
            self._buf = b""
        return self._h.hexdigest()


def file_hash(path: Path) -> str:
    h = ContentHash()
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, length, is_data in data_segments(fd, size):
            if not is_data:
                h.hole(length)
                continue
            os.lseek(fd, offset, os.SEEK_SET)
            left = length
            while left:
                chunk = os.read(fd, min(CHUNK, left))
                h.data(chunk)
                left -= len(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def volume_hash(target: PoolTarget, vol: libvirt.virStorageVol, length: int) -> str:
    """Read the volume back through a sparse download stream and hash it."""
    h = ContentHash()
    stream = target.conn.newStream(0)
    try:
        vol.download(stream, 0, length, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
        stream.sparseRecvAll(lambda _s, buf, _o: h.data(buf) or len(buf),
                             lambda _s, n, _o: h.hole(n) or 0, None)
        stream.finish()
    except libvirt.libvirtError as exc:
        _abort(stream)
        raise OperationFailed(f"reading back the volume from {target.uri} failed: "
                              f"{exc.get_error_message()}") from None
    return h.hexdigest()
