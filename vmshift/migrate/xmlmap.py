"""Domain XML rewrites for the destination (networks, disk paths), with lxml.

Kept apart from policy and execution, as Nova keeps its XML updates in one
place: what changes between hosts is decided here and nowhere else.
"""

from __future__ import annotations

from lxml import etree

from vmshift.convert import libvirt_xml as lx
from vmshift.convert.maps import NetworkMap


def map_networks(xml: str, netmap: NetworkMap) -> str:
    """Point each network or bridge NIC that `netmap` names (by MAC, else by its
    network or bridge name) at its target; a target of the other kind changes
    the interface's type, and the old source's attributes go with it."""
    if not netmap:
        return xml
    root = etree.fromstring(xml.encode())
    for iface in root.findall("devices/interface"):
        kind, src = iface.get("type"), iface.find("source")
        if kind not in ("network", "bridge") or src is None:
            continue
        mac = iface.find("mac")
        target = netmap.lookup(mac.get("address") if mac is not None else None, src.get(kind))
        if target is None:
            continue
        if target.kind != kind:
            iface.set("type", target.kind)
            src.attrib.clear()
        src.set(target.kind, target.name)
    return etree.tostring(root, encoding="unicode")


def map_disks(xml: str, paths: dict[str, str], formats: dict[str, str] | None = None) -> str:
    """Point the disks with targets in `paths` at new files (target -> path)."""
    dom = lx.Domain.from_xml(xml)
    for disk in dom.disks:
        dev = disk.target_dev
        if dev not in paths:
            continue
        disk.point_at_file(paths[dev])
        if formats and dev in formats:
            disk.driver_type = formats[dev]
    return dom.to_xml()


def disk_paths(xml: str) -> dict[str, str]:
    """target -> current source path, for file and block disks."""
    return {d.target_dev: d.source_path for d in lx.Domain.from_xml(xml).disks
            if d.target_dev and d.source_path}
