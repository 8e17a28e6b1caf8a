"""Copy a storage volume between libvirt hosts through the stream API.

The bytes go source daemon -> vmshift -> destination daemon, so no shared
filesystem or ssh is needed. Each copy is verified: the sha256 of what was
read must equal the sha256 of the destination volume read back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import libvirt
from lxml import etree

from vmshift.errors import OperationFailed
from vmshift.output import Progress

CHUNK = 4 << 20


@dataclass
class CopiedVolume:
    target: str  # vda
    source_path: str
    dest_path: str
    dest_pool: str
    bytes: int
    sha256: str
    verified: bool


def volume_format(vol: libvirt.virStorageVol) -> str:
    root = etree.fromstring(vol.XMLDesc(0).encode())
    fmt = root.find("target/format")
    return fmt.get("type") if fmt is not None else "raw"


def has_backing(vol: libvirt.virStorageVol) -> str | None:
    root = etree.fromstring(vol.XMLDesc(0).encode())
    return root.findtext("backingStore/path")


def create_like(pool: libvirt.virStoragePool, src: libvirt.virStorageVol, name: str,
                fmt: str | None = None) -> libvirt.virStorageVol:
    """An empty volume with the source's capacity and format (or FMT)."""
    _, capacity, _ = src.info()
    vol = etree.Element("volume")
    etree.SubElement(vol, "name").text = name
    etree.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    etree.SubElement(vol, "allocation", unit="bytes").text = "0"
    target = etree.SubElement(vol, "target")
    etree.SubElement(target, "format", type=fmt or volume_format(src))
    try:
        return pool.createXML(etree.tostring(vol, encoding="unicode"), 0)
    except libvirt.libvirtError as exc:
        raise OperationFailed(f"cannot create {name} in pool {pool.name()}: "
                              f"{exc.get_error_message()}") from exc


def _stream_out(conn: libvirt.virConnect, vol: libvirt.virStorageVol, sink, bar: Progress | None
                ) -> tuple[int, str]:
    """Download VOL, feeding each chunk to SINK; (bytes, sha256)."""
    st = conn.newStream(0)
    vol.download(st, 0, 0, 0)
    h, n = hashlib.sha256(), 0
    try:
        while True:
            data = st.recv(CHUNK)
            if isinstance(data, int):  # -2: would block (not with a blocking stream)
                continue
            if not data:
                break
            h.update(data)
            n += len(data)
            sink(data)
            if bar is not None:
                bar.update_to(n)
        st.finish()
    except BaseException:
        try:
            st.abort()
        except libvirt.libvirtError:
            pass
        raise
    return n, h.hexdigest()


def volume_sha256(conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> tuple[int, str]:
    """(bytes, sha256) of VOL's file as the daemon reads it."""
    return _stream_out(conn, vol, lambda _d: None, None)


def copy_volume(src_conn: libvirt.virConnect, src_vol: libvirt.virStorageVol,
                dst_conn: libvirt.virConnect, dst_vol: libvirt.virStorageVol,
                json_mode: bool, label: str) -> tuple[int, str, bool]:
    """Stream SRC_VOL into DST_VOL (same format: the file is copied as is),
    then read DST_VOL back and compare digests. (bytes, sha256, verified)."""
    up = dst_conn.newStream(0)
    dst_vol.upload(up, 0, 0, 0)
    size = src_vol.info()[2] or None

    def send_all(data: bytes) -> None:
        view = memoryview(data)
        while view:
            sent = up.send(bytes(view))
            if sent < 0:
                raise OperationFailed(f"copy {label}: the destination stream refused data")
            view = view[sent:]

    try:
        with Progress(f"copy {label}", size, json_mode=json_mode) as bar:
            n, digest = _stream_out(src_conn, src_vol, send_all, bar)
        up.finish()
    except BaseException:
        try:
            up.abort()
        except libvirt.libvirtError:
            pass
        raise
    _, back = _stream_out(dst_conn, dst_vol, lambda _d: None, None)
    return n, digest, back == digest
