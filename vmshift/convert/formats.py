"""Source detection: what an input file is, by content, cross-checked with its
extension, its VMDK descriptor and qemu-img's own probe.

A mismatch is refused rather than guessed around: a "disk.vmdk" that is
really a raw flat extent, or a ".qcow2" that is raw, usually means the user
picked the wrong file, and converting it would produce a wrong disk.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vmshift import confine
from vmshift.convert import qemuimg, vmdk
from vmshift.convert.vmdk_sparse import check_sparse_extent
from vmshift.errors import BadInput, bad_input

SUPPORTED = ("vmdk", "raw", "qcow2", "vdi", "vpc", "vhdx")
# Extensions that name exactly one format; .img/.bin are used for raw and qcow2 alike.
EXTENSIONS = {".vmdk": "vmdk", ".qcow2": "qcow2", ".qcow": "qcow2", ".vdi": "vdi",
              ".vhd": "vpc", ".vpc": "vpc", ".vhdx": "vhdx", ".raw": "raw", ".dd": "raw"}
# qemu-img reads these VMDK forms; RDM extents live on a LUN, not in a file.
READABLE_VMDK = {"monolithicsparse", "streamoptimized", "monolithicflat", "twogbmaxextentsparse",
                 "twogbmaxextentflat", "vmfs", "vmfssparse", "sesparse"}


@dataclass
class SourceImage:
    given: Path  # what the user named
    path: Path  # the image actually read (a snapshot point may differ from ``given``)
    format: str  # qemu-img driver name
    kind: str  # human description, e.g. "vmdk (streamOptimized)"
    virtual_size: int
    files: list[Path] = field(default_factory=list)  # every file read (chain + extents)
    chain: list[Path] = field(default_factory=list)  # top .. base
    stream_optimized: bool = False
    # qemu-img's own reading of the source, which only confirms what our parser
    # found: run alongside the copy (it costs a process start) or, with
    # --dry-run, before the plan is printed. BadInput when it disagrees.
    confirm: Callable[[], None] | None = None


def sniff(path: Path) -> str:
    """The format by content: vmdk, qcow2, vdi, vpc, vhdx or raw."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
            size = f.seek(0, 2)
            f.seek(max(size - 512, 0))
            tail = f.read(512)
    except IsADirectoryError:
        raise bad_input(path, "is a directory, not a disk image") from None
    except OSError as exc:
        raise bad_input(path, f"cannot read: {exc.strerror}") from None
    if not size:  # no format at all, and qemu-img would call it a 0-byte raw disk
        raise bad_input(path, "is empty (0 bytes), not a disk image")
    if head[:4] in (vmdk.SPARSE_MAGIC, vmdk.COWD_MAGIC) or head[:8] == vmdk.SESPARSE_MAGIC:
        return "vmdk"
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if head[0x40:0x44] == b"\x7f\x10\xda\xbe":
        return "vdi"
    if head[:8] == b"vhdxfile":
        return "vhdx"
    if head[:8] == b"conectix" or tail[:8] == b"conectix":
        return "vpc"
    if vmdk.looks_like_text_descriptor(path):
        return "vmdk"
    return "raw"


def detect(path: Path, forced: str | None = None) -> str:
    """Content format, cross-checked against the extension and qemu-img's probe.

    ``forced`` (--source-format) only skips the extension check: it must still
    agree with the content, e.g. to read a flat extent named .vmdk as raw.
    """
    content = sniff(path)
    if forced is not None:
        if forced != content:
            raise bad_input(path, f"--source-format {forced} but the content is {content}")
        return forced
    by_ext = EXTENSIONS.get(path.suffix.lower())
    if by_ext == "vmdk" and content == "raw":
        raise bad_input(path, "named .vmdk but holds raw data: this looks like a flat "
                              "extent; pass the descriptor .vmdk that lists it")
    if by_ext is not None and by_ext != content and by_ext != "raw":
        raise bad_input(path, f"content is {content} but the extension says {by_ext}")
    if content == "vmdk":
        return content  # cross-checked against its descriptor by _open_vmdk()
    probed = qemuimg.info(path).get("format")
    if probed != content:
        raise bad_input(path, f"content looks like {content} but qemu-img probes {probed}")
    return content


def open_source(given: Path, *, snapshot: str | None = None, forced: str | None = None,
                policy: confine.Policy | None = None) -> SourceImage:
    """Detect, validate and pick the snapshot point of one source disk.

    Its chain (VMDK extents and parents, backing files) is confined to its
    directory, and a device is read only when ``policy`` allows it.
    """
    if not given.exists():
        raise bad_input(given, "no such file")
    if given.is_block_device() or given.is_char_device():
        confine.check(given, [], confine.Where(given), policy)
    fmt = detect(given, forced)
    if fmt == "vmdk":
        return _open_vmdk(given, snapshot, policy)
    return _open_generic(given, fmt, snapshot, policy)


def _open_vmdk(given: Path, snapshot: str | None, policy: confine.Policy | None) -> SourceImage:
    chain = vmdk.resolve_chain(given, policy=policy)
    for desc in chain:
        _check_vmdk(desc)
    chosen = _pick(given, [d.path for d in chain], snapshot)
    top = chain[[d.path for d in chain].index(chosen)]
    sub = chain[chain.index(top):]
    files = [d.path for d in sub] + [e.path for d in sub for e in d.extents if e.path]
    stream = bool(top.header and top.header.stream_optimized)
    return SourceImage(given, chosen, "vmdk", f"vmdk ({top.create_type})",
                       top.capacity_bytes, _unique(files), [d.path for d in chain],
                       stream, confirm=lambda: _confirm_vmdk(top))


def _check_vmdk(desc: vmdk.VmdkDescriptor) -> None:
    ctype = (desc.create_type or "").lower()
    vmdk.check_consistency(desc)
    if any(e.type in vmdk.DEVICE_EXTENTS for e in desc.extents) or "rdm" in ctype \
            or "rawdevice" in ctype:
        raise bad_input(desc.where("createType"),
                        f"unsupported VMDK type {desc.create_type}: raw device mappings point "
                        "at a LUN, not a file; copy the LUN itself as a raw source")
    if ctype not in READABLE_VMDK:
        raise bad_input(desc.where("createType"),
                        f"unsupported VMDK type {desc.create_type} (qemu-img reads "
                        "monolithicSparse, streamOptimized, monolithicFlat, twoGbMaxExtent*, "
                        "vmfs, vmfsSparse and seSparse)")
    missing = vmdk.missing_extents(desc)
    if missing:
        e = missing[0]
        raise bad_input(desc.path, f"extent file {e.filename!r} is missing ({e.path})", e.line)
    for extent in desc.extents:
        if extent.type == "SPARSE" and extent.path is not None:
            check_sparse_extent(extent.path)


def _vmdk_info(desc: vmdk.VmdkDescriptor) -> dict[str, object]:
    """qemu-img's view of a VMDK our parser accepted; its refusal means 'unsupported'."""
    try:
        return dict(qemuimg.info(desc.path, "vmdk"))
    except BadInput as exc:
        # qemu-img 7.2 reads vmfsSparse (COWD) and seSparse deltas, but not every
        # variant; say "unsupported" clearly rather than pass on a raw qemu message.
        raise bad_input(desc.path, f"unsupported {desc.create_type} VMDK (qemu-img cannot "
                                   f"read it): {exc.message.split(': ', 1)[-1]}") from None


def _confirm_vmdk(desc: vmdk.VmdkDescriptor) -> None:
    size = int(_vmdk_info(desc)["virtual-size"])
    if size != desc.capacity_bytes:
        raise bad_input(desc.path, f"its extents add up to {desc.capacity_bytes} bytes, but "
                                   f"qemu-img reads a {size}-byte disk")


def _open_generic(given: Path, fmt: str, snapshot: str | None,
                  policy: confine.Policy | None) -> SourceImage:
    images = confine.backing_chain(given, fmt, policy, qemuimg.info)
    chain = [Path(i["filename"]) for i in images]
    chosen = _pick(given, chain, snapshot)
    index = [_key(c) for c in chain].index(_key(chosen))
    if fmt in ("qcow2", "vdi", "vhdx"):
        ok, message = qemuimg.check(chosen, fmt)
        if not ok:
            raise bad_input(chosen, f"image is corrupt: {message}")
    size = images[index]["virtual-size"]
    return SourceImage(given, chosen, images[index].get("format", fmt), fmt, int(size),
                       chain[index:], chain)


def _pick(given: Path, chain: list[Path], snapshot: str | None) -> Path:
    """The chain member ``snapshot`` names: a file name, or 'base'; default the top."""
    if snapshot is None or snapshot in ("current", "top"):
        return chain[0]
    if snapshot == "base":
        return chain[-1]
    for member in chain:
        if snapshot in (member.name, str(member)) or _key(Path(snapshot)) == _key(member):
            return member
    names = ", ".join(m.name for m in chain)
    raise BadInput(f"--snapshot: {snapshot!r} is not in the chain of {given} ({names})")


def _key(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path


def _unique(paths: list[Path]) -> list[Path]:
    seen: dict[Path, None] = {}
    for p in paths:
        seen.setdefault(p, None)
    return list(seen)
