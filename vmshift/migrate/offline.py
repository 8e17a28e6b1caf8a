"""Offline migration: a shut-off VM's definition (and unshared disks) move.

Order matters for the guarantee "no data is deleted before a verified copy
exists": copy and verify every disk, define on the destination, check that
definition, and only then undefine the source (unless --keep-source) and
delete source volumes (only with --delete-source).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

import libvirt

from vmshift.errors import OperationFailed
from vmshift.migrate import xmlmap
from vmshift.migrate.facts import DomainFacts
from vmshift.migrate.volcopy import CopiedVolume, copy_volume, create_like, has_backing


@dataclass
class OfflineRequest:
    domain: str
    dest_pool: str | None
    network_map: dict[str, str] = field(default_factory=dict)
    keep_source: bool = False
    delete_source: bool = False


@dataclass
class OfflineResult:
    copied: list[CopiedVolume] = field(default_factory=list)
    kept_paths: list[str] = field(default_factory=list)
    source_undefined: bool = False
    deleted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def disks_to_copy(d: DomainFacts) -> list:
    """Disks whose files the destination cannot see at the same path."""
    return [x for x in d.disks if x.path and x.device == "disk" and x.on_dest is False
            and x.kind in ("file", "volume")]


def plan(d: DomainFacts, req: OfflineRequest) -> list[str]:
    lines = []
    for x in d.disks:
        if x in disks_to_copy(d):
            lines.append(f"copy {x.target} {x.path} -> pool {req.dest_pool} (verified sha256)")
        elif x.path:
            lines.append(f"keep {x.target} {x.path} (visible on the destination)")
    lines.append("define on the destination" + (", keep source definition" if req.keep_source
                                                else ", then undefine on the source"))
    if req.delete_source:
        lines.append("delete copied source volumes after verification")
    return lines


def _copy_one(src: libvirt.virConnect, dst: libvirt.virConnect, pool: libvirt.virStoragePool,
              target: str, path: str, json_mode: bool) -> CopiedVolume:
    svol = src.storageVolLookupByPath(path)
    backing = has_backing(svol)
    if backing:
        raise OperationFailed(f"disk {target}: {path} has a backing file {backing}; "
                              "flatten it first (copying the top layer alone loses data)")
    name = PurePosixPath(path).name
    dvol = create_like(pool, svol, name)
    try:
        n, digest, ok = copy_volume(src, svol, dst, dvol, json_mode, target)
        if not ok:
            raise OperationFailed(f"disk {target}: the copy in pool {pool.name()} does not "
                                  "match the source (sha256 differs)")
    except BaseException:
        dvol.delete(0)  # our own partial copy, never the source
        raise
    return CopiedVolume(target, path, dvol.path(), pool.name(), n, digest, True)


def run_offline(req: OfflineRequest, src: libvirt.virConnect, dst: libvirt.virConnect,
                dom: libvirt.virDomain, facts: DomainFacts, json_mode: bool) -> OfflineResult:
    res = OfflineResult()
    todo = disks_to_copy(facts)
    pool = dst.storagePoolLookupByName(req.dest_pool) if (todo and req.dest_pool) else None
    if todo and pool is None:
        raise OperationFailed("disks are not visible on the destination and no --dest-pool")
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
                      | libvirt.VIR_DOMAIN_XML_MIGRATABLE)
    try:
        for x in todo:
            res.copied.append(_copy_one(src, dst, pool, x.target, x.path, json_mode))
        new_xml = xmlmap.map_disks(xml, {c.target: c.dest_path for c in res.copied})
        new_xml = xmlmap.map_networks(new_xml, req.network_map)
        ddom = dst.defineXML(new_xml)
        _verify_definition(ddom, {c.target: c.dest_path for c in res.copied})
    except BaseException:
        for c in res.copied:  # roll back our copies; the source is untouched
            try:
                dst.storageVolLookupByPath(c.dest_path).delete(0)
            except libvirt.libvirtError:
                pass
        raise
    res.kept_paths = [x.path for x in facts.disks if x.path and x not in todo]
    if not req.keep_source:
        flags = libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        dom.undefineFlags(flags)
        res.source_undefined = True
    if req.delete_source:
        for c in res.copied:
            if c.verified:
                src.storageVolLookupByPath(c.source_path).delete(0)
                res.deleted.append(c.source_path)
    return res


def _verify_definition(ddom: libvirt.virDomain, expected: dict[str, str]) -> None:
    paths = xmlmap.disk_paths(ddom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    for target, path in expected.items():
        if paths.get(target) != path:
            raise OperationFailed(f"the destination definition has {target} -> "
                                  f"{paths.get(target)}, expected {path}")
