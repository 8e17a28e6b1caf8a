"""Offline migration: a shut-off VM's definition (and unshared disks) move.

Order matters for the guarantee "no data is deleted before a verified copy
exists": copy and verify the NVRAM/TPM state files and every disk, define on
the destination, check that definition, and only then undefine the source
(unless --keep-source) and delete source volumes and state files (only with
--delete-source). A failure before that removes only what vmshift made on
the destination.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

import libvirt

from vmshift import volumes
from vmshift.convert.maps import NetworkMap
from vmshift.errors import OperationFailed
from vmshift.migrate import statefiles, xmlmap
from vmshift.migrate.facts import DomainFacts
from vmshift.migrate.statefiles import StateCopier, StateCopy, StateLocation, quietly


@dataclass
class OfflineRequest:
    domain: str
    dest_pool: str | None
    network_map: NetworkMap = field(default_factory=NetworkMap)
    keep_source: bool = False
    delete_source: bool = False


@dataclass
class CopiedVolume:
    target: str  # vda
    source_path: str
    dest_path: str
    dest_pool: str
    bytes: int
    sha256: str  # the content hash (vmshift.volumes.ContentHash) of both copies
    verified: bool


@dataclass
class OfflineResult:
    copied: list[CopiedVolume] = field(default_factory=list)
    states: list[StateCopy] = field(default_factory=list)  # NVRAM / TPM state files
    kept_paths: list[str] = field(default_factory=list)
    source_undefined: bool = False
    deleted: list[str] = field(default_factory=list)
    deleted_states: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def disks_to_copy(d: DomainFacts) -> list:
    """Disks whose files the destination cannot see at the same path."""
    return [x for x in d.disks if x.path and x.device == "disk" and x.on_dest is False
            and x.kind in ("file", "volume")]


def state_locations(dom: libvirt.virDomain) -> list[StateLocation]:
    return statefiles.locate(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), dom.UUIDString())


def plan(d: DomainFacts, req: OfflineRequest, states: list[StateLocation] | None = None
         ) -> list[str]:
    lines = [f"copy {s.kind} {s.describe()} -> the same path on the destination (verified "
             "content hash; not copied if identical bytes are already there)"
             for s in states or []]
    for x in d.disks:
        if x in disks_to_copy(d):
            lines.append(f"copy {x.target} {x.path} -> pool {req.dest_pool} "
                         "(verified content hash)")
        elif x.path:
            lines.append(f"keep {x.target} {x.path} (visible on the destination)")
    lines.append("define on the destination" + (", keep source definition" if req.keep_source
                                                else ", then undefine on the source"))
    if req.delete_source:
        lines.append("delete copied source volumes" + (" and state files" if states else "")
                     + " after verification")
    return lines


def _copy_one(src: libvirt.virConnect, dst: libvirt.virConnect, pool: libvirt.virStoragePool,
              target: str, path: str, json_mode: bool) -> CopiedVolume:
    svol = src.storageVolLookupByPath(path)
    backing = volumes.backing_of(svol)
    if backing:
        raise OperationFailed(f"disk {target}: {path} has a backing file {backing}; "
                              "flatten it first (copying the top layer alone loses data)")
    name = PurePosixPath(path).name
    dvol = volumes.create_for_copy(pool, svol, name)
    try:
        n, digest, ok = volumes.copy(src, svol, dst, dvol, f"copy {target}", json_mode)
        if not ok:
            raise OperationFailed(f"disk {target}: the copy in pool {pool.name()} does not "
                                  "match the source (content hash differs)")
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
    locations = statefiles.locate(xml, facts.uuid)
    has_tpm = any(loc.kind == "tpm" for loc in locations)
    with StateCopier(src, dst, json_mode) as states:
        try:
            # State files first: small, and a conflict there is found before
            # gigabytes of disks are streamed.
            for loc in locations:
                res.states.extend(states.copy(loc))
            for x in todo:
                res.copied.append(_copy_one(src, dst, pool, x.target, x.path, json_mode))
            _define_on_dest(dst, xml, req, res, has_tpm)
        except BaseException:
            # Roll back only what vmshift made there; the source is untouched.
            for c in res.copied:
                try:
                    dst.storageVolLookupByPath(c.dest_path).delete(0)
                except libvirt.libvirtError:
                    pass
            states.rollback()
            raise
        res.kept_paths = [x.path for x in facts.disks if x.path and x not in todo]
        _retire_source(req, src, dom, res, states, has_tpm)
    return res


def _define_on_dest(dst: libvirt.virConnect, xml: str, req: OfflineRequest,
                    res: OfflineResult, has_tpm: bool) -> None:
    """Define with the copied disks' paths (state files keep theirs), and check it."""
    paths = {c.target: c.dest_path for c in res.copied}
    new_xml = xmlmap.map_networks(xmlmap.map_disks(xml, paths), req.network_map)
    ddom = dst.defineXML(new_xml)
    try:
        _verify_definition(ddom, paths)
    except BaseException:
        quietly(ddom.undefineFlags, _undefine_flags(set(), has_tpm))  # the files go in rollback
        raise


def _undefine_flags(gone: set[str], has_tpm: bool) -> int:
    """Undefining deletes a domain's TPM state unless told otherwise (and
    refuses outright with an NVRAM file): keep both unless in GONE."""
    flags = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    flags |= (libvirt.VIR_DOMAIN_UNDEFINE_NVRAM if "nvram" in gone
              else libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
    if has_tpm:  # a daemon without TPM support may not know these flags
        flags |= (libvirt.VIR_DOMAIN_UNDEFINE_TPM if "tpm" in gone
                  else libvirt.VIR_DOMAIN_UNDEFINE_KEEP_TPM)
    return flags


def _retire_source(req: OfflineRequest, src: libvirt.virConnect, dom: libvirt.virDomain,
                   res: OfflineResult, states: StateCopier, has_tpm: bool) -> None:
    """After everything is verified: undefine and delete on the source, as asked."""
    gone = {k for k in ("nvram", "tpm")
            if req.delete_source and statefiles.all_copied(res.states, k)}
    if not req.keep_source:
        dom.undefineFlags(_undefine_flags(gone, has_tpm))  # libvirt deletes what is gone
        res.source_undefined = True
        res.deleted_states = [c.path for c in res.states
                              if c.kind in gone and c.status == "copied"]
    elif gone:
        res.deleted_states = states.delete_source([c for c in res.states if c.kind in gone])
    if req.delete_source:
        for c in res.copied:
            if c.verified:
                src.storageVolLookupByPath(c.source_path).delete(0)
                res.deleted.append(c.source_path)


def _verify_definition(ddom: libvirt.virDomain, expected: dict[str, str]) -> None:
    paths = xmlmap.disk_paths(ddom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    for target, path in expected.items():
        if paths.get(target) != path:
            raise OperationFailed(f"the destination definition has {target} -> "
                                  f"{paths.get(target)}, expected {path}")
