"""OVA/OVF packages: find the envelope, check the manifest, place the disks.

An OVA is a tar whose first member is the ``.ovf``, usually followed by a
``.mf`` manifest (``SHA256(name)= hex`` or ``SHA1(name)= hex``) and the
disks. Everything is read in place: digests stream through the tar members,
and a disk becomes (the OVA, byte offset, size) so that libvirt reads it as a
``<slice>`` of the tar. Nothing is ever extracted or written.

A digest that does not match is bad input (exit 2): the package was altered
or damaged, and converting it would hand a tampered disk to the new host.
"""

from __future__ import annotations

import hashlib
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from vmshift.confine import Policy, Where, check, inside, relative
from vmshift.convert.ovf import Envelope, parse_envelope
from vmshift.errors import BadInput, bad_input
from vmshift.model import VirtualMachine

_MANIFEST_LINE = re.compile(r"^(?P<algo>SHA1|SHA256|SHA512)\((?P<name>[^)]+)\)\s*=\s*"
                            r"(?P<digest>[0-9a-fA-F]+)\s*$")
CHUNK = 1024 * 1024


@dataclass
class Package:
    vm: VirtualMachine
    path: Path
    verified_files: list[str] = field(default_factory=list)
    manifest: str | None = None


@dataclass
class _Member:
    name: str
    offset: int
    size: int
    opener: Callable[[], IO[bytes]]


def read_package(path: Path, *, progress: Callable[[int], None] | None = None,
                 policy: Policy | None = None) -> Package:
    """An .ova (tar) or a bare .ovf beside its files -> Package (vm + verified files).

    Every file the package names must be inside it (``vmshift.confine``; ``policy``
    may allow a device)."""
    if path.is_dir():
        raise bad_input(path, "is a directory, not an OVA or OVF")
    if not path.exists():
        raise bad_input(path, "no such file")
    if tarfile.is_tarfile(path):
        with tarfile.open(path, mode="r:") as tar:
            members = _tar_members(path, tar)
            return _read(path, members, in_tar=True, progress=progress, policy=policy)
    return _read(path, _dir_members(path), in_tar=False, progress=progress, policy=policy)


def _tar_members(path: Path, tar: tarfile.TarFile) -> dict[str, _Member]:
    members: dict[str, _Member] = {}
    for info in tar.getmembers():
        if not info.isfile():
            raise bad_input(path, f"tar member {info.name!r} is not a regular file "
                                  "(links and devices are refused)")
        name = inside(info.name)
        if name is None or info.name.startswith("/") or not name:
            raise bad_input(path, f"tar member {info.name!r}: absolute or climbing path")
        if name in members:
            raise bad_input(path, f"tar member {name!r} appears twice")
        members[name] = _Member(name, info.offset_data, info.size,
                                lambda info=info: tar.extractfile(info))  # type: ignore
    return members


class Members(Protocol):
    """The package's files by name: a tar's members, or the files beside an OVF."""

    def get(self, name: str, default: _Member | None = None) -> _Member | None: ...

    def __contains__(self, name: object) -> bool: ...

    def __getitem__(self, name: str) -> _Member: ...


class _DirMembers:
    """A bare OVF's files, looked up beside it on demand (the directory may hold
    anything else). A name must stay inside the directory, symlinks included."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def get(self, name: str, default: _Member | None = None) -> _Member | None:
        try:
            candidate = relative(self.base, name, Where(self.base))
            check(candidate, [self.base], Where(self.base))
        except BadInput:
            return default
        return _file_member(name, candidate)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __getitem__(self, name: str) -> _Member:
        member = self.get(name)
        if member is None:
            raise KeyError(name)
        return member


def _dir_members(ovf_path: Path) -> Members:
    return _DirMembers(ovf_path.parent)


def _file_member(name: str, file_path: Path) -> _Member:
    return _Member(name, 0, file_path.stat().st_size, lambda: open(file_path, "rb"))


def _read(path: Path, members: Members, *, in_tar: bool,
          progress: Callable[[int], None] | None, policy: Policy | None) -> Package:
    ovf_name = _ovf_name(path, members, in_tar)
    with members[ovf_name].opener() as handle:
        data = handle.read()
    envelope = parse_envelope(path, data)
    package = Package(vm=envelope.vm, path=path)
    manifest = _manifest(path, members, ovf_name)
    if manifest is None:
        envelope.vm.notes.append("no manifest (.mf): the package's integrity is not verified")
    else:
        package.manifest = manifest[0]
        covered = list(members) if isinstance(members, dict) else [  # a tar: every member
            ovf_name, *envelope.files.values()]
        _require_coverage(path, covered, manifest)
        package.verified_files = _verify(path, members, manifest[1], progress)
        cert = ovf_name[:-4] + ".cert"
        if cert in members:
            envelope.vm.notes.append("the package's signature (.cert) is not checked; its "
                                     "manifest digests are")
    _place_disks(path, ovf_name, envelope, members, in_tar, policy)
    return package


def _ovf_name(path: Path, members: Members, in_tar: bool) -> str:
    if not in_tar:
        if path.suffix.lower() != ".ovf":
            raise bad_input(path, "neither an OVA (tar) nor an .ovf file")
        return path.name
    ovfs = [n for n in members if n.lower().endswith(".ovf")]
    if len(ovfs) != 1:
        raise bad_input(path, f"an OVA holds exactly one .ovf; this one has {len(ovfs)}")
    return ovfs[0]


def _manifest(path: Path, members: Members,
              ovf_name: str) -> tuple[str, list[tuple[int, str, str, str]]] | None:
    """(manifest name, [(line, algo, file, digest)]) or None when there is none."""
    name = ovf_name[:-4] + ".mf"
    if name not in members:
        return None
    with members[name].opener() as handle:
        text = handle.read(1024 * 1024).decode("utf-8", errors="replace")
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        match = _MANIFEST_LINE.match(line.strip())
        if not match:
            raise BadInput(f"{path}: {name}:{number}: not a manifest line "
                           f"(expected SHA256(file)= digest)")
        entries.append((number, match.group("algo"), match.group("name").strip(),
                        match.group("digest").lower()))
    if not entries:
        raise BadInput(f"{path}: {name}: empty manifest")
    return name, entries


def _require_coverage(path: Path, names: list[str],
                      manifest: tuple[str, list[tuple[int, str, str, str]]]) -> None:
    """Every file of the package must be in its manifest: a disk whose line was
    removed would otherwise pass unchecked."""
    listed = {inside(entry[2]) for entry in manifest[1]}
    for name in names:
        if name != manifest[0] and not name.lower().endswith(".cert") and \
                inside(name) not in listed:
            raise BadInput(f"{path}: {name} is not covered by the manifest {manifest[0]}")


def _verify(path: Path, members: Members, entries: list[tuple[int, str, str, str]],
            progress: Callable[[int], None] | None) -> list[str]:
    verified = []
    for number, algo, file_name, expected in entries:
        member = members.get(inside(file_name) or "")
        if member is None:
            raise BadInput(f"{path}: manifest line {number}: {file_name!r} is listed but "
                           "missing from the package")
        actual = _digest(member, algo, progress)
        if actual != expected:
            raise BadInput(f"{path}: {file_name}: {algo} digest does not match the manifest "
                           f"(manifest {expected[:16]}..., content {actual[:16]}...): the "
                           "package was altered or damaged")
        verified.append(file_name)
    return verified


def _digest(member: _Member, algo: str, progress: Callable[[int], None] | None) -> str:
    digest = hashlib.new(algo.lower())
    with member.opener() as handle:
        for chunk in _chunks(handle):
            digest.update(chunk)
            if progress:
                progress(len(chunk))
    return digest.hexdigest()


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


def _place_disks(path: Path, ovf_name: str, envelope: Envelope, members: Members,
                 in_tar: bool, policy: Policy | None) -> None:
    """Each disk's source: the OVA plus a byte range, or the file beside the OVF."""
    for disk in envelope.vm.disks or []:
        file_id = envelope.disk_files[disk.label or ""]
        href = envelope.files[file_id]
        line = envelope.file_lines.get(file_id)
        if not in_tar:
            where = Where(path, line, "ovf:href")
            source = relative(path.parent, href, where, what="disk file")
            check(source, [path.parent], where, policy)
            disk.source = str(source)
            continue
        member = members.get(inside(href) or "")
        if member is None:
            raise bad_input(f"{path}: {ovf_name}", f"ovf:href: disk file {href!r} is missing "
                                                   "from the package", line)
        disk.source = os.path.abspath(path)
        disk.source_offset, disk.source_size = member.offset, member.size
