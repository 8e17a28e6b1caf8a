"""List the members of a Linux initramfs, the way the kernel unpacks it.

An initramfs is a concatenation of newc cpio archives. Debian 12 puts an
uncompressed early-microcode cpio in front (when a microcode package is
installed) and then the main archive, zstd-compressed by default. The kernel
reads them one after the other, so a lister must too: stopping at the first
TRAILER!!! would only show the microcode.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from vmshift.errors import OperationFailed, bad_input

NEWC_MAGICS = (b"070701", b"070702")
HEADER_LEN = 110
TRAILER = "TRAILER!!!"
# Magic numbers of the compressors initramfs-tools and dracut can use.
COMPRESSORS: tuple[tuple[bytes, str], ...] = (
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x89LZO", "lzop"),
    (b"\x5d\x00\x00", "lzma"),
)
# External decompressors for formats the standard library cannot read.
EXTERNAL = {"zstd": ["zstd", "-dcq"], "lz4": ["lz4", "-dcq"], "lzop": ["lzop", "-dcq"]}
MODULE_RE = re.compile(r"(?:^|/)([^/]+)\.ko(?:\.(?:xz|zst|gz))?$")


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _skip(stream: BinaryIO, n: int) -> None:
    while n:
        chunk = stream.read(min(n, 1 << 20))
        if not chunk:
            raise EOFError
        n -= len(chunk)


def _cpio_members(stream: BinaryIO, first: bytes, where: str) -> Iterator[str]:
    """Names in one newc archive; ``first`` holds its first 6 bytes, already read."""
    header = first + _read_exact(stream, HEADER_LEN - len(first))
    while True:
        if header[:6] not in NEWC_MAGICS:
            raise bad_input(where, f"not a newc cpio header: {header[:6]!r}")
        filesize = int(header[54:62], 16)
        namesize = int(header[94:102], 16)
        name_block = _read_exact(stream, _align4(HEADER_LEN + namesize) - HEADER_LEN)
        name = name_block[: namesize - 1].decode("utf-8", "replace")
        if name == TRAILER:
            return
        yield name
        _skip(stream, _align4(filesize))
        header = _read_exact(stream, HEADER_LEN)


def _next_segment_start(stream: BinaryIO) -> bytes:
    """Skip the zero padding between archives; return the next 6 bytes (b'' at the end)."""
    while True:
        byte = stream.read(1)
        if not byte:
            return b""
        if byte != b"\0":
            return byte + stream.read(5)


def _decompressed(stream: BinaryIO, kind: str, where: str) -> tuple[BinaryIO, object]:
    """A readable stream of the decompressed rest of ``stream``."""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=stream), None
    if kind in ("xz", "lzma"):
        return lzma.LZMAFile(stream), None
    if kind == "bzip2":
        return bz2.BZ2File(stream), None
    argv = EXTERNAL[kind]
    if shutil.which(argv[0]) is None:
        raise OperationFailed(f"{where}: the initramfs is {kind}-compressed and "
                              f"`{argv[0]}` is not installed")
    proc = subprocess.Popen(argv, stdin=stream, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    return proc.stdout, proc


def list_initramfs(path: str | Path) -> list[str]:
    """Every member name of every archive in the initramfs at ``path``."""
    where = str(path)
    names: list[str] = []
    with open(path, "rb") as raw:
        stream: BinaryIO = raw
        start = stream.read(6)
        while start:
            if start in NEWC_MAGICS:
                try:
                    names.extend(_cpio_members(stream, start, where))
                except EOFError:
                    raise bad_input(where, "truncated cpio archive") from None
                start = _next_segment_start(stream)
                continue
            kind = next((k for magic, k in COMPRESSORS if start.startswith(magic)), None)
            if kind is None:
                raise bad_input(where, f"unknown initramfs segment (starts {start!r})")
            offset = raw.tell() - len(start)
            with open(path, "rb", buffering=0) as tail:
                # A fresh unbuffered file: an external decompressor reads its fd.
                tail.seek(offset)
                names.extend(_compressed_members(tail, kind, where))  # type: ignore[arg-type]
            break
    return names


def _compressed_members(raw: BinaryIO, kind: str, where: str) -> list[str]:
    """Names in the compressed tail (which may itself hold several archives)."""
    body, proc = _decompressed(raw, kind, where)
    names: list[str] = []
    try:
        first = _next_segment_start(body)
        while first:
            names.extend(_cpio_members(body, first, where))
            first = _next_segment_start(body)
    except EOFError:
        raise bad_input(where, f"truncated {kind}-compressed cpio archive") from None
    except (OSError, lzma.LZMAError) as exc:
        raise bad_input(where, f"corrupt {kind} data: {exc}") from None
    finally:
        if isinstance(proc, subprocess.Popen):
            body.close()
            proc.wait()
    if isinstance(proc, subprocess.Popen) and proc.returncode not in (0, None):
        raise bad_input(where, f"`{EXTERNAL[kind][0]}` could not decompress it "
                        f"(exit {proc.returncode})")
    return names


def kernel_modules(names: list[str]) -> set[str]:
    """Module names (``virtio_blk``) among initramfs member paths."""
    found = set()
    for name in names:
        match = MODULE_RE.search(name)
        if match:
            found.add(match.group(1).replace("-", "_"))
    return found


def virtio_modules(names: list[str]) -> set[str]:
    """The virtio modules (virtio, virtio_pci, virtio_blk, virtio_scsi...) present."""
    return {m for m in kernel_modules(names) if "virtio" in m}


__all__ = ["list_initramfs", "kernel_modules", "virtio_modules"]
