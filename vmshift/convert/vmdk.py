"""VMDK descriptor parser: text descriptors, descriptors embedded in hosted
sparse extents ('KDMV'), extents and the snapshot parent chain.

qemu-img reads VMDKs itself; this parser exists because qemu-img neither
checks parentCID nor stops an extent line from pointing anywhere on the host.
A descriptor from a foreign datastore is untrusted input: an extent such as
``"../../dev/sda"`` would make a conversion copy the host's own disk into the
guest image, so every relative path that climbs out of its directory is
refused here, before qemu-img ever sees the file.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from vmshift.confine import Policy, Where, check, relative
from vmshift.errors import BadInput, bad_input

SECTOR = 512
NO_PARENT = 0xFFFFFFFF
SPARSE_MAGIC = b"KDMV"  # hosted sparse extent (monolithicSparse, streamOptimized, -sNNN)
COWD_MAGIC = b"COWD"  # ESXi vmfsSparse delta extent; its descriptor is a separate file
SESPARSE_MAGIC = struct.pack("<Q", 0x00000000CAFEBABE)  # ESXi seSparse delta extent
# Hosted sparse header: magic, version, flags, capacity, grainSize, descriptorOffset,
# descriptorSize, numGTEsPerGT, rgdOffset, gdOffset, overHead, uncleanShutdown,
# four newline-check bytes, compressAlgorithm (all little endian, packed).
_SPARSE_HEADER = struct.Struct("<4sIIQQQQIQQQB4sH")
# A text descriptor is small; anything bigger is an extent, not a descriptor.
MAX_TEXT_DESCRIPTOR = 64 * 1024
ACCESS_MODES = {"RW", "RDONLY", "NOACCESS"}
EXTENT_TYPES = {"FLAT", "SPARSE", "ZERO", "VMFS", "VMFSSPARSE", "VMFSRDM", "VMFSRAW",
                "SESPARSE"}
# Extent types whose data lives on a raw device rather than in a file qemu-img can read.
DEVICE_EXTENTS = {"VMFSRDM", "VMFSRAW"}
_EXTENT_LINE = re.compile(
    r'^(?P<access>[A-Z]+)\s+(?P<size>\d+)\s+(?P<type>[A-Z]+)'
    r'(?:\s+"(?P<file>[^"]*)"(?:\s+(?P<offset>\d+))?)?\s*$')
_KEY_LINE = re.compile(r'^(?P<key>[A-Za-z0-9_.]+)\s*=\s*(?P<value>.*?)\s*$')


@dataclass(frozen=True)
class SparseHeader:
    """The fields of a hosted sparse extent header that matter for reading it."""

    version: int
    flags: int
    capacity_sectors: int
    grain_sectors: int
    descriptor_offset: int  # sectors
    descriptor_size: int  # sectors
    gd_offset: int
    compress_algorithm: int

    @property
    def stream_optimized(self) -> bool:
        return self.compress_algorithm != 0


@dataclass(frozen=True)
class Extent:
    access: str  # RW, RDONLY, NOACCESS
    size_sectors: int
    type: str  # FLAT, SPARSE, ZERO, VMFS, VMFSSPARSE, SESPARSE, VMFSRDM, VMFSRAW
    filename: str | None  # as written in the descriptor
    path: Path | None  # resolved next to the descriptor; None for ZERO
    offset: int  # sectors into the extent file (FLAT/VMFS only)
    line: int  # line in the descriptor, for error messages


@dataclass
class VmdkDescriptor:
    path: Path
    embedded: bool
    create_type: str | None = None
    version: int | None = None
    cid: int | None = None
    parent_cid: int | None = None
    parent_hint: str | None = None
    parent_path: Path | None = None
    extents: list[Extent] = field(default_factory=list)
    ddb: dict[str, str] = field(default_factory=dict)
    header: SparseHeader | None = None
    lines: dict[str, int] = field(default_factory=dict)  # key -> line number

    @property
    def capacity_bytes(self) -> int:
        return sum(e.size_sectors for e in self.extents) * SECTOR

    @property
    def is_delta(self) -> bool:
        return self.parent_cid is not None and self.parent_cid != NO_PARENT

    @property
    def adapter_type(self) -> str | None:
        return self.ddb.get("ddb.adapterType")

    @property
    def hw_version(self) -> str | None:
        return self.ddb.get("ddb.virtualHWVersion")

    @property
    def uuid(self) -> str | None:
        return self.ddb.get("ddb.uuid")

    @property
    def geometry(self) -> tuple[int, int, int] | None:
        try:
            return (int(self.ddb["ddb.geometry.cylinders"]), int(self.ddb["ddb.geometry.heads"]),
                    int(self.ddb["ddb.geometry.sectors"]))
        except (KeyError, ValueError):
            return None

    def where(self, key: str) -> str:
        """'file:line' of a descriptor key, for messages."""
        line = self.lines.get(key)
        return f"{self.path}:{line}" if line else str(self.path)


def read_sparse_header(path: Path) -> SparseHeader | None:
    """The hosted sparse header of ``path``, or None if it has none."""
    with open(path, "rb") as f:
        raw = f.read(_SPARSE_HEADER.size)
    if len(raw) < _SPARSE_HEADER.size or raw[:4] != SPARSE_MAGIC:
        return None
    (_, version, flags, capacity, grain, desc_off, desc_size, _gtes, _rgd, gd_off, _over,
     _unclean, _nl, compress) = _SPARSE_HEADER.unpack(raw)
    return SparseHeader(version, flags, capacity, grain, desc_off, desc_size, gd_off, compress)


def looks_like_text_descriptor(path: Path) -> bool:
    try:
        if path.stat().st_size > MAX_TEXT_DESCRIPTOR:
            return False
        head = path.read_bytes()[:4096]
    except OSError:
        return False
    # qemu-img pads its descriptors with NULs to a sector; NULs inside the text mean binary.
    text_part, _, rest = head.partition(b"\0")
    if rest.strip(b"\0"):
        return False
    text = text_part.decode("latin-1")
    return text.lstrip().startswith("# Disk DescriptorFile") or "createType" in text


def parse_descriptor(path: str | os.PathLike[str], policy: Policy | None = None
                     ) -> VmdkDescriptor:
    """Parse the descriptor of a VMDK: a text file, or the one embedded in a sparse extent."""
    path = Path(path)
    try:
        header = read_sparse_header(path)
    except OSError as exc:
        raise bad_input(path, f"cannot read: {exc.strerror}") from None
    if header is not None:
        return _parse_embedded(path, header, policy)
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic[:4] == COWD_MAGIC or magic == SESPARSE_MAGIC:
        kind = "vmfsSparse" if magic[:4] == COWD_MAGIC else "seSparse"
        raise bad_input(path, f"this is a {kind} snapshot extent, not a descriptor; "
                              "pass the -NNNNNN.vmdk descriptor that names it")
    if not looks_like_text_descriptor(path):
        raise bad_input(path, "not a VMDK descriptor (no sparse header, not a text descriptor)")
    text = path.read_bytes().split(b"\0", 1)[0].decode("utf-8", errors="replace")
    return parse_descriptor_text(text, path, policy=policy)


def _parse_embedded(path: Path, header: SparseHeader, policy: Policy | None) -> VmdkDescriptor:
    if header.descriptor_offset == 0 or header.descriptor_size == 0:
        # A sparse extent of a split or ESXi disk: the descriptor is elsewhere.
        raise bad_input(path, "sparse extent without an embedded descriptor; pass the "
                              "descriptor .vmdk that lists it")
    with open(path, "rb") as f:
        f.seek(header.descriptor_offset * SECTOR)
        raw = f.read(header.descriptor_size * SECTOR)
    if len(raw) < header.descriptor_size * SECTOR:
        raise bad_input(path, "embedded descriptor extends beyond the end of the file")
    text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    desc = parse_descriptor_text(text, path, embedded=True, policy=policy)
    desc.header = header
    if len(desc.extents) == 1 and desc.extents[0].type == "SPARSE":
        # A monolithic sparse file is its own extent, whatever name its embedded
        # descriptor was written with (qemu-img ignores that name): a renamed
        # file, such as an OVA's disk member, still reads.
        desc.extents[0] = replace(desc.extents[0], path=path)
    return desc


def parse_descriptor_text(text: str, path: Path, *, embedded: bool = False,
                          policy: Policy | None = None) -> VmdkDescriptor:
    """Parse descriptor text; ``path`` names the file for messages and relative paths."""
    desc = VmdkDescriptor(path=path, embedded=embedded)
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        extent = _EXTENT_LINE.match(line)
        if extent and extent["access"] in ACCESS_MODES:
            desc.extents.append(_extent(desc, extent, number, policy))
            continue
        kv = _KEY_LINE.match(line)
        if kv is None:
            raise bad_input(path, f"unparsable descriptor line {line[:60]!r}", number)
        _set_key(desc, kv["key"], kv["value"].strip().strip('"'), number)
    if not desc.extents:
        raise bad_input(path, "descriptor lists no extents")
    if desc.create_type is None:
        raise bad_input(path, "descriptor has no createType")
    if desc.is_delta:
        if not desc.parent_hint:
            raise bad_input(desc.where("parentCID"),
                            "delta disk (parentCID set) without parentFileNameHint")
        desc.parent_path = _resolve_parent(desc, policy)
    return desc


def _set_key(desc: VmdkDescriptor, key: str, value: str, number: int) -> None:
    desc.lines[key] = number
    lowered = key.lower()
    if lowered in ("cid", "parentcid"):
        try:
            cid = int(value, 16)
        except ValueError:
            raise bad_input(desc.path, f"{key} is not hexadecimal: {value!r}", number) from None
        if lowered == "cid":
            desc.cid = cid
        else:
            desc.parent_cid = cid
            desc.lines["parentCID"] = number
    elif lowered == "createtype":
        desc.create_type = value
    elif lowered == "version":
        desc.version = int(value) if value.isdigit() else None
    elif lowered == "parentfilenamehint":
        desc.parent_hint = value
    elif lowered.startswith("ddb."):
        desc.ddb[key] = value


def _extent(desc: VmdkDescriptor, m: re.Match[str], number: int,
            policy: Policy | None) -> Extent:
    etype, filename = m["type"], m["file"]
    if etype not in EXTENT_TYPES:
        raise bad_input(desc.path, f"unknown extent type {etype}", number)
    if etype == "ZERO":
        return Extent(m["access"], int(m["size"]), etype, None, None, 0, number)
    if not filename:
        raise bad_input(desc.path, f"{etype} extent without a file name", number)
    path = confined_path(desc.path, filename, number, what="extent", policy=policy)
    return Extent(m["access"], int(m["size"]), etype, filename, path,
                  int(m["offset"] or 0), number)


def confined_path(descriptor: Path, name: str, line: int | None, *, what: str,
                  policy: Policy | None = None) -> Path:
    """Resolve ``name`` next to ``descriptor``, confined to its directory
    (``vmshift.confine``): no absolute path, no '..' or symlink out, no device
    unless ``policy`` allows it. A file that does not exist yet passes here;
    ``missing_extents`` reports it."""
    where = Where(descriptor, line)
    path = relative(descriptor.parent, name, where, what=f"{what} path")
    check(path, [descriptor.parent], where, policy, must_exist=False)
    return path


def _resolve_parent(desc: VmdkDescriptor, policy: Policy | None) -> Path:
    hint = desc.parent_hint or ""
    line = desc.lines.get("parentFileNameHint")
    if hint.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", hint):
        # Workstation linked clones and ESXi write absolute hints that mean nothing on
        # this host. Look for the same name beside the child; resolve_chain() accepts it
        # only if its CID is the one the child recorded, so a stranger is never used.
        hint = PurePosixPath(hint.replace("\\", "/")).name
    return confined_path(desc.path, hint, line, what="parentFileNameHint", policy=policy)


def resolve_chain(path: str | os.PathLike[str], *, max_depth: int = 255,
                  policy: Policy | None = None) -> list[VmdkDescriptor]:
    """[top, parent, ..., base], each child's parentCID checked against its parent's CID."""
    chain = [parse_descriptor(path, policy)]
    while chain[-1].is_delta:
        child = chain[-1]
        parent_path = child.parent_path
        assert parent_path is not None
        if not parent_path.exists():
            raise bad_input(child.where("parentFileNameHint"),
                            f"parent disk {child.parent_hint!r} not found ({parent_path})")
        if len(chain) > max_depth or any(_same(parent_path, d.path) for d in chain):
            raise bad_input(child.where("parentFileNameHint"), "parent chain loops")
        parent = parse_descriptor(parent_path, policy)
        if parent.cid != child.parent_cid:
            raise bad_input(child.where("parentCID"),
                            f"parentCID {child.parent_cid:08x} does not match CID "
                            f"{_hex(parent.cid)} of parent {parent_path}: the parent was "
                            "modified after this snapshot was taken")
        chain.append(parent)
    return chain


def missing_extents(descs: VmdkDescriptor | list[VmdkDescriptor]) -> list[Extent]:
    """Extents whose file does not exist (ZERO extents have no file)."""
    items = descs if isinstance(descs, list) else [descs]
    return [e for d in items for e in d.extents if e.path is not None and not e.path.exists()]


def check_consistency(desc: VmdkDescriptor) -> None:
    """Cross-check createType against the extent types and the sparse header."""
    kinds = {e.type for e in desc.extents}
    ctype = (desc.create_type or "").lower()
    expected = {
        "monolithicsparse": {"SPARSE"}, "streamoptimized": {"SPARSE"},
        "twogbmaxextentsparse": {"SPARSE"}, "monolithicflat": {"FLAT"},
        "twogbmaxextentflat": {"FLAT"}, "vmfs": {"VMFS", "FLAT"},
        "vmfssparse": {"VMFSSPARSE"}, "sesparse": {"SESPARSE"},
        "vmfsrdm": {"VMFSRDM"}, "vmfsrawdevicemap": {"VMFSRDM"},
        "vmfspassthroughrawdevicemap": {"VMFSRAW"},
    }.get(ctype)
    if expected is not None and not kinds - {"ZERO"} <= expected:
        raise bad_input(desc.where("createType"),
                        f"createType {desc.create_type} but extents are "
                        f"{', '.join(sorted(kinds))}")
    header = desc.header
    if desc.embedded and header is not None and len(desc.extents) == 1:
        if desc.extents[0].size_sectors != header.capacity_sectors:
            raise bad_input(desc.path, f"descriptor says {desc.extents[0].size_sectors} "
                                       f"sectors, sparse header says {header.capacity_sectors}",
                            desc.extents[0].line)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _hex(value: int | None) -> str:
    return "none" if value is None else f"{value:08x}"


__all__ = ["BadInput", "Extent", "SparseHeader", "VmdkDescriptor", "check_consistency",
           "confined_path", "looks_like_text_descriptor", "missing_extents", "parse_descriptor",
           "parse_descriptor_text", "read_sparse_header", "resolve_chain"]
