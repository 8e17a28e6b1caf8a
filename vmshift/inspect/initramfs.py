"""Which virtio drivers an initramfs carries, read straight from its cpio stream.

An initramfs is a sequence of cpio "newc" archives, each optionally
compressed, one after another. Debian 12's starts with an *uncompressed*
early-microcode archive followed by a zstd-compressed main archive, so tools
that assume "one gzip stream" (zcat | cpio, libguestfs' initrd-list) see
nothing useful. This parser walks the segments the way the kernel does.
"""

from __future__ import annotations

import bz2
import lzma
import os
import re
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from vmshift.inspect.result import VIRTIO_MODULES, Initramfs

NEWC_MAGICS = (b"070701", b"070702")
HEADER_LEN = 110
TRAILER = "TRAILER!!!"
_MODULE_FILE = re.compile(r"(?:^|/)([^/]+)\.ko(?:\.(?:xz|zst|gz|bz2))?$")
DECOMPRESS_TIMEOUT = 300

# Leading bytes of each compressor the kernel accepts for an initramfs.
MAGICS: list[tuple[bytes, str]] = [
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x04\x22\x4d\x18", "lz4"),
    (b"\x89LZO", "lzo"),
    (b"\x5d\x00\x00", "lzma"),
]
# Compressors Python lacks; their command-line tools read stdin, write stdout.
TOOLS = {"zstd": ["zstd", "-dcq"], "lz4": ["lz4", "-dcq"], "lzo": ["lzop", "-dc"]}


class InitramfsError(Exception):
    pass


@dataclass
class CpioEntry:
    name: str
    mode: int
    size: int


def parse_newc(buf: bytes, pos: int = 0) -> tuple[list[CpioEntry], int]:
    """Parse one newc archive from ``pos``; return its entries and the end offset."""
    entries: list[CpioEntry] = []
    while True:
        header = buf[pos:pos + HEADER_LEN]
        if len(header) < HEADER_LEN or header[:6] not in NEWC_MAGICS:
            raise InitramfsError(f"bad cpio header at offset {pos}")
        try:
            fields = [int(header[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        except ValueError as exc:
            raise InitramfsError(f"bad cpio header at offset {pos}") from exc
        mode, filesize, namesize = fields[1], fields[6], fields[11]
        name_start = pos + HEADER_LEN
        name = buf[name_start:name_start + namesize - 1].decode("utf-8", "replace")
        data_start = _align4(name_start + namesize)
        pos = _align4(data_start + filesize)
        if pos > len(buf):
            raise InitramfsError(f"cpio entry {name!r} runs past the end of the image")
        if name == TRAILER:
            return entries, pos
        entries.append(CpioEntry(name, mode, filesize))


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _skip_padding(buf: bytes, pos: int) -> int:
    while pos < len(buf) and buf[pos] == 0:
        pos += 1
    return pos


def _compression(buf: bytes, pos: int) -> str | None:
    for magic, name in MAGICS:
        if buf.startswith(magic, pos):
            return name
    return None


def _decompress(kind: str, data: bytes) -> tuple[bytes, int | None]:
    """Decompress one segment; return the output and the compressed length used
    (None when a tool consumed everything, i.e. the segment is taken as the last)."""
    if kind == "gzip":
        d = zlib.decompressobj(wbits=31)
        out = d.decompress(data)
        return out, len(data) - len(d.unused_data)
    if kind in ("xz", "lzma"):
        d2 = lzma.LZMADecompressor(format=lzma.FORMAT_XZ if kind == "xz" else lzma.FORMAT_ALONE)
        out = d2.decompress(data)
        return out, len(data) - len(d2.unused_data)
    if kind == "bzip2":
        d3 = bz2.BZ2Decompressor()
        out = d3.decompress(data)
        return out, len(data) - len(d3.unused_data)
    tool = TOOLS.get(kind)
    if tool is None:
        raise InitramfsError(f"unsupported compression {kind}")
    try:
        proc = subprocess.run(tool, input=data, capture_output=True, check=False,
                              timeout=DECOMPRESS_TIMEOUT)
    except FileNotFoundError as exc:
        raise InitramfsError(f"{tool[0]} is not installed, cannot read a {kind} initramfs") \
            from exc
    # The kernel pads after the last segment; the tools then complain about
    # trailing bytes after writing everything, which is not an error for us.
    if not proc.stdout:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise InitramfsError(f"{kind} decompression failed: {msg[-1] if msg else proc.returncode}")
    return proc.stdout, None


def iter_segments(buf: bytes) -> Iterator[tuple[str, list[CpioEntry]]]:
    """Yield (compression, entries) for each archive in the image, in order."""
    pos = 0
    while True:
        pos = _skip_padding(buf, pos)
        if pos >= len(buf):
            return
        if buf[pos:pos + 6] in NEWC_MAGICS:
            entries, pos = parse_newc(buf, pos)
            yield "none", entries
            continue
        kind = _compression(buf, pos)
        if kind is None:
            raise InitramfsError(f"unknown data at offset {pos} (neither cpio nor a "
                                 "known compression)")
        out, used = _decompress(kind, buf[pos:])
        inner = 0
        while True:
            inner = _skip_padding(out, inner)
            if inner >= len(out):
                break
            entries, inner = parse_newc(out, inner)
            yield kind, entries
        if used is None:
            return
        pos += used


def module_names(entries: list[CpioEntry]) -> set[str]:
    names = set()
    for e in entries:
        m = _MODULE_FILE.search(e.name)
        if m:
            names.add(m.group(1).replace("-", "_"))
    return names


def scan_initramfs_bytes(path: str, buf: bytes, builtin: set[str]) -> Initramfs:
    """Virtio presence for one initramfs image; ``builtin`` counts as present."""
    kinds: list[str] = []
    found: set[str] = set()
    try:
        for kind, entries in iter_segments(buf):
            kinds.append(kind)
            found |= module_names(entries)
    except InitramfsError as exc:
        return Initramfs(path, kinds, None, str(exc))
    if not kinds:
        return Initramfs(path, kinds, None, "empty image")
    virtio = {m: (m in found or m in builtin) for m in VIRTIO_MODULES}
    return Initramfs(path, kinds, virtio)


def scan_initramfs_file(guest_path: str, host_file: str | os.PathLike[str],
                        builtin: set[str]) -> Initramfs:
    with open(host_file, "rb") as f:
        return scan_initramfs_bytes(guest_path, f.read(), builtin)


def builtin_modules(text: str | None) -> set[str]:
    """Module names from a modules.builtin file (lines like kernel/.../virtio_blk.ko)."""
    if not text:
        return set()
    names = set()
    for line in text.splitlines():
        m = _MODULE_FILE.search(line.strip())
        if m:
            names.add(m.group(1).replace("-", "_"))
    return names
