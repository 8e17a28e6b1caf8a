"""Domain XML rewrites for the destination (networks, disk paths), with lxml.

Kept apart from policy and execution, as Nova keeps its XML updates in one
place: what changes between hosts is decided here and nowhere else.
"""

from __future__ import annotations

from lxml import etree


def parse_network_map(text: str | None) -> dict[str, str]:
    """'SRC=DST,SRC2=DST2' -> {SRC: DST}; raises ValueError naming the item."""
    out: dict[str, str] = {}
    if not text:
        return out
    for item in text.split(","):
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise ValueError(f"{item!r} is not SRC=DST")
        out[src.strip()] = dst.strip()
    return out


def map_networks(xml: str, mapping: dict[str, str]) -> str:
    """Point each NIC whose network or bridge is in `mapping` at the new one."""
    if not mapping:
        return xml
    root = etree.fromstring(xml.encode())
    for src in root.findall("devices/interface/source"):
        for attr in ("network", "bridge"):
            old = src.get(attr)
            if old in mapping:
                src.set(attr, mapping[old])
    return etree.tostring(root, encoding="unicode")


def map_disks(xml: str, paths: dict[str, str], formats: dict[str, str] | None = None) -> str:
    """Point the disks with targets in `paths` at new files (target -> path)."""
    root = etree.fromstring(xml.encode())
    for disk in root.findall("devices/disk"):
        target = disk.find("target")
        if target is None or target.get("dev") not in paths:
            continue
        dev = target.get("dev")
        disk.set("type", "file")
        src = disk.find("source")
        if src is None:
            src = etree.SubElement(disk, "source")
        for attr in list(src.attrib):
            del src.attrib[attr]
        for child in list(src):
            src.remove(child)
        src.set("file", paths[dev])
        drv = disk.find("driver")
        if formats and dev in formats and drv is not None:
            drv.set("type", formats[dev])
        # A backing chain describes the old files; the copy is flattened.
        bs = disk.find("backingStore")
        if bs is not None:
            disk.remove(bs)
    return etree.tostring(root, encoding="unicode")


def map_nvram(xml: str, path: str) -> str:
    root = etree.fromstring(xml.encode())
    nv = root.find("os/nvram")
    if nv is not None:
        nv.text = path
    return etree.tostring(root, encoding="unicode")


def disk_paths(xml: str) -> dict[str, str]:
    """target -> current source path, for file and block disks."""
    root = etree.fromstring(xml.encode())
    out = {}
    for disk in root.findall("devices/disk"):
        t, s = disk.find("target"), disk.find("source")
        if t is not None and s is not None and (s.get("file") or s.get("dev")):
            out[t.get("dev")] = s.get("file") or s.get("dev")
    return out
