"""Storage volumes through libvirt: create, upload, download, copy, hash.

Every byte goes through the libvirt stream API (what `virsh vol-upload
--sparse` and `vol-download --sparse` do), so a remote host needs neither a
shared filesystem nor ssh: only the libvirt connection. Streams are sparse:
a hole is sent as its length, never as zeroes.

One hash for every copy vmshift verifies (``ContentHash``): a sha256 over
each non-zero 64 KiB block with its offset, then the total length. It does
not depend on how zeroes are stored, so a sparse and a dense copy of the
same bytes hash equal. That is what a verification needs here: a sparse
stream delivers holes where the source file had them, the destination
filesystem may store them as holes or zeroes, and a file read back is
compared with what was sent. A plain sha256 of the file would be the same
value only by reading every hole as zeroes, at the cost of hashing them.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt
from lxml import etree

from vmshift.errors import OperationFailed

CHUNK = 1024 * 1024
BLOCK = 64 * 1024  # granularity of the content hash


# --- XML -------------------------------------------------------------------


def volume_xml(name: str, capacity: int = 0, fmt: str = "raw",
               perms: dict[str, str] | None = None) -> str:
    """A new volume: a file of CAPACITY bytes (0: the upload writes them), or
    a directory when FMT is "dir". PERMS: mode/owner/group to give it."""
    vol = etree.Element("volume", type="dir") if fmt == "dir" else etree.Element("volume")
    etree.SubElement(vol, "name").text = name
    etree.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    etree.SubElement(vol, "allocation", unit="bytes").text = "0"
    target = etree.SubElement(vol, "target")
    etree.SubElement(target, "format", type=fmt)
    if perms:
        p = etree.SubElement(target, "permissions")
        for key, value in perms.items():
            etree.SubElement(p, key).text = value
    return etree.tostring(vol, encoding="unicode")


def dir_pool_xml(name: str, path: str) -> str:
    """A directory pool over PATH."""
    pool = etree.Element("pool", type="dir")
    etree.SubElement(pool, "name").text = name
    etree.SubElement(etree.SubElement(pool, "target"), "path").text = path
    return etree.tostring(pool, encoding="unicode")


def _vol_root(vol: libvirt.virStorageVol) -> etree._Element:
    return etree.fromstring(vol.XMLDesc(0).encode())


def format_of(vol: libvirt.virStorageVol) -> str:
    fmt = _vol_root(vol).find("target/format")
    return fmt.get("type") if fmt is not None else "raw"


def backing_of(vol: libvirt.virStorageVol) -> str | None:
    """The backing file of a layered image (qcow2 overlay), or None."""
    return _vol_root(vol).findtext("backingStore/path")


def permissions(vol: libvirt.virStorageVol | None) -> dict[str, str]:
    """mode/owner/group of VOL's file or directory, as libvirt reports them."""
    if vol is None:
        return {}
    perms = _vol_root(vol).find("target/permissions")
    if perms is None:
        return {}
    return {k: perms.findtext(k) for k in ("mode", "owner", "group") if perms.findtext(k)}


def physical_size(vol: libvirt.virStorageVol) -> int:
    """The length of VOL's file (what a download streams), not its capacity."""
    return int(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2])


# --- create ----------------------------------------------------------------


def create(pool: libvirt.virStoragePool, name: str, capacity: int = 0, fmt: str = "raw",
           perms: dict[str, str] | None = None) -> libvirt.virStorageVol:
    try:
        return pool.createXML(volume_xml(name, capacity, fmt, perms), 0)
    except libvirt.libvirtError as exc:
        raise OperationFailed(f"cannot create {name} in pool {pool.name()} on "
                              f"{pool.connect().getURI()}: {exc.get_error_message()}") from exc


def create_like(pool: libvirt.virStoragePool, src: libvirt.virStorageVol, name: str,
                fmt: str | None = None) -> libvirt.virStorageVol:
    """An empty image with SRC's capacity and format (or FMT), for a block copy."""
    return create(pool, name, src.info()[1], fmt or format_of(src))


def create_for_copy(pool: libvirt.virStoragePool, src: libvirt.virStorageVol,
                    name: str) -> libvirt.virStorageVol:
    """The target of a stream ``copy`` of SRC's file as it is.

    A zero-filled file of SRC's length, not a new image of SRC's format: a
    sparse upload skips the holes, so whatever the target held there stays,
    and a freshly made qcow2 holds its own header. The pool is refreshed
    after the copy, and libvirt then reads the real format from the file.
    """
    return create(pool, name, physical_size(src), "raw")


# --- streams ---------------------------------------------------------------


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


def _read_file(path: Path, on_data: Callable[[bytes], None],
               on_hole: Callable[[int], None]) -> None:
    """Feed PATH's data runs and holes, in order, to the two callbacks."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset, length, is_data in data_segments(fd, size):
            if not is_data:
                on_hole(length)
                continue
            os.lseek(fd, offset, os.SEEK_SET)
            left = length
            while left:
                chunk = os.read(fd, min(CHUNK, left))
                if not chunk:
                    raise OperationFailed(f"{path} shrank while it was read")
                on_data(chunk)
                left -= len(chunk)
    finally:
        os.close(fd)


def _send_all(stream: libvirt.virStream, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sent = stream.send(bytes(view))
        if sent < 0:
            raise OperationFailed("the destination stream refused data")
        view = view[sent:]


@contextmanager
def _streaming(stream: libvirt.virStream, failed: Callable[[], str]) -> Iterator[None]:
    """Abort STREAM on any error; a libvirt error becomes one OperationFailed
    line, "<failed()>: <libvirt's message>"."""
    try:
        yield
    except libvirt.libvirtError as exc:
        _abort(stream)
        raise OperationFailed(f"{failed()}: {exc.get_error_message()}") from exc
    except BaseException:
        _abort(stream)
        raise


def _abort(stream: libvirt.virStream) -> None:
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass  # already finished or broken: nothing left to stop


class _Sender:
    """Writes data and holes into an upload stream, hashing and counting them."""

    def __init__(self, stream: libvirt.virStream, on_bytes: Callable[[int], None],
                 cancelled: Callable[[], bool], rate: int | None) -> None:
        self.stream, self.on_bytes, self.cancelled, self.rate = stream, on_bytes, cancelled, rate
        self.hash = ContentHash()
        self.sent, self.start = 0, time.monotonic()

    def data(self, chunk: bytes) -> None:
        if self.cancelled():
            raise OperationFailed("upload cancelled")
        _send_all(self.stream, chunk)
        self.hash.data(chunk)
        self.sent += len(chunk)
        self.on_bytes(self.hash.length)
        if self.rate:  # bytes/s of data; holes are free
            ahead = self.sent / self.rate - (time.monotonic() - self.start)
            if ahead > 0:
                time.sleep(ahead)

    def hole(self, length: int) -> None:
        self.stream.sendHole(length, 0)
        self.hash.hole(length)
        self.on_bytes(self.hash.length)


def _no_progress(_done: int) -> None:
    pass


def _never() -> bool:
    return False


def upload(conn: libvirt.virConnect, vol: libvirt.virStorageVol, path: Path,
           on_bytes: Callable[[int], None] = _no_progress,
           cancelled: Callable[[], bool] = _never, rate: int | None = None) -> str:
    """Send the local file PATH into VOL as a sparse stream; its content hash.

    ``rate`` (bytes/s of data) caps the upload like qemu-img -r caps a
    conversion, so a job can share a WAN link.
    """
    stream = conn.newStream(0)
    send = _Sender(stream, on_bytes, cancelled, rate)
    with _streaming(stream, lambda: f"upload of {path} to {vol.path()} on {conn.getURI()} "
                                    "failed"):
        vol.upload(stream, 0, path.stat().st_size, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
        _read_file(path, send.data, send.hole)
        stream.finish()
    return send.hash.hexdigest()


def download(conn: libvirt.virConnect, vol: libvirt.virStorageVol,
             on_data: Callable[[bytes], None], on_hole: Callable[[int], None],
             length: int = 0) -> None:
    """Read VOL's file (LENGTH bytes, 0: all) as a sparse stream of data and holes."""
    stream = conn.newStream(0)
    with _streaming(stream, lambda: f"reading {vol.path()} from {conn.getURI()} failed"):
        vol.download(stream, 0, length, libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM)
        stream.sparseRecvAll(lambda _s, buf, _o: on_data(buf) or len(buf),
                             lambda _s, n, _o: on_hole(n) or 0, None)
        stream.finish()


def volume_hash(conn: libvirt.virConnect, vol: libvirt.virStorageVol,
                length: int = 0) -> ContentHash:
    """The content hash of VOL's file (its first LENGTH bytes; 0: all)."""
    h = ContentHash()
    download(conn, vol, h.data, h.hole, length)
    return h


def copy(src_conn: libvirt.virConnect, src_vol: libvirt.virStorageVol,
         dst_conn: libvirt.virConnect, dst_vol: libvirt.virStorageVol,
         task: str, json_mode: bool) -> tuple[int, str, bool]:
    """Stream SRC_VOL's file into DST_VOL (an empty or zero-filled file, see
    ``create_for_copy``), then read DST_VOL back: (bytes, content hash, whether
    the read-back matches). TASK names the progress bar."""
    from vmshift.output import Progress

    up = dst_conn.newStream(0)
    with Progress(task, physical_size(src_vol), json_mode=json_mode) as bar:
        send = _Sender(up, bar.update_to, _never, None)
        with _streaming(up, lambda: f"copy of {src_vol.path()} to {dst_vol.path()} on "
                                    f"{dst_conn.getURI()} failed"):
            dst_vol.upload(up, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
            download(src_conn, src_vol, send.data, send.hole)
            up.finish()
    _refresh(dst_vol)
    back = volume_hash(dst_conn, dst_vol).hexdigest()
    return send.hash.length, send.hash.hexdigest(), back == send.hash.hexdigest()


def _refresh(vol: libvirt.virStorageVol) -> None:
    try:
        vol.storagePoolLookupByVolume().refresh(0)
    except libvirt.libvirtError:
        pass  # a pool busy with another job keeps its old view; the file is right


# --- hashing ---------------------------------------------------------------


class ContentHash:
    """sha256 over (offset, block) of every non-zero 64 KiB block, then the length.

    Independent of how zeroes are stored (holes or written zeroes), so a
    local file and the same bytes read back through a sparse stream hash
    alike; the length makes a file and the same file with a longer tail of
    zeroes differ.
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._pos = 0
        self._buf = b""

    @property
    def length(self) -> int:
        """Bytes fed so far, holes included."""
        return self._pos + len(self._buf)

    def data(self, chunk: bytes) -> None:
        if self._buf:
            chunk = self._buf + chunk
        full = len(chunk) - len(chunk) % BLOCK
        for i in range(0, full, BLOCK):
            self._block(chunk[i:i + BLOCK])
        self._buf = chunk[full:]

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
        h = self._h.copy()
        if self._buf and self._buf.count(0) != len(self._buf):
            h.update(self._pos.to_bytes(8, "little"))
            h.update(self._buf)
        h.update(b"length" + self.length.to_bytes(8, "little"))
        return h.hexdigest()


def file_hash(path: Path) -> str:
    """The content hash of a local file."""
    h = ContentHash()
    _read_file(path, h.data, h.hole)
    return h.hexdigest()
