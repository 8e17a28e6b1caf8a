"""Consistency check of hosted sparse extents (grain directory and grain tables).

Measured with qemu-img 7.2: a grain directory entry pointing past the end of
the file passes `qemu-img check` and converts "successfully" into zeroes, and
a grain table entry past EOF converts silently as zeroes too. A migration
must not turn a damaged disk into a quietly different one, so the tables are
checked here before anything is copied. Only metadata is read (a few hundred
KiB for a disk of several GiB).
"""

from __future__ import annotations

import struct
from pathlib import Path

from vmshift.convert.vmdk import SECTOR, SPARSE_MAGIC, read_sparse_header
from vmshift.errors import bad_input

GD_AT_END = 0xFFFFFFFFFFFFFFFF  # streamOptimized: the real header is in the footer
_NUM_GTES_OFFSET = 44  # numGTEsPerGT in the hosted sparse header


def check_sparse_extent(path: Path) -> None:
    """Raise BadInput naming the file if its grain directory or tables point outside it."""
    header = read_sparse_header(path)
    if header is None:
        return
    size = path.stat().st_size
    sectors = (size + SECTOR - 1) // SECTOR
    with open(path, "rb") as f:
        gd_offset, gtes = header.gd_offset, _num_gtes(f)
        if gd_offset == GD_AT_END:
            gd_offset, gtes = _footer_gd(f, path, size)
        if header.grain_sectors == 0 or gtes == 0:
            raise bad_input(path, "sparse header has a zero grain size or grain table size")
        grains = -(-header.capacity_sectors // header.grain_sectors)
        tables = -(-grains // gtes)
        if gd_offset == 0 or gd_offset >= sectors:
            raise bad_input(path, f"grain directory offset {gd_offset} is beyond the end "
                                  f"of the file ({sectors} sectors): the extent is corrupt")
        f.seek(gd_offset * SECTOR)
        raw = f.read(tables * 4)
        if len(raw) < tables * 4:
            raise bad_input(path, "grain directory is truncated: the extent is corrupt")
        directory = struct.unpack(f"<{tables}I", raw)
        for index, gt_offset in enumerate(directory):
            if gt_offset == 0:
                continue
            if gt_offset + (gtes * 4 + SECTOR - 1) // SECTOR > sectors:
                raise bad_input(path, f"grain directory entry {index} points to sector "
                                      f"{gt_offset}, beyond the end of the file "
                                      f"({sectors} sectors): corrupt grain directory")
            _check_table(f, path, gt_offset, gtes, index, sectors)


def _check_table(f, path: Path, gt_offset: int, gtes: int, index: int,  # type: ignore[no-untyped-def]
                 sectors: int) -> None:
    f.seek(gt_offset * SECTOR)
    table = struct.unpack(f"<{gtes}I", f.read(gtes * 4))
    for slot, grain in enumerate(table):
        # 1 marks a grain the guest zeroed (VMware's zeroed-grain GTE).
        if grain > 1 and grain >= sectors:
            raise bad_input(path, f"grain table {index} entry {slot} points to sector {grain}, "
                                  f"beyond the end of the file ({sectors} sectors): "
                                  "corrupt grain table")


def _num_gtes(f) -> int:  # type: ignore[no-untyped-def]
    f.seek(_NUM_GTES_OFFSET)
    return int(struct.unpack("<I", f.read(4))[0])


def _footer_gd(f, path: Path, size: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """streamOptimized: footer = marker sector + header copy, then end-of-stream marker."""
    if size < 3 * SECTOR:
        raise bad_input(path, "streamOptimized extent too short for its footer")
    f.seek(size - 2 * SECTOR)
    footer = f.read(SECTOR)
    if footer[:4] != SPARSE_MAGIC:
        raise bad_input(path, "streamOptimized extent has no footer (truncated upload?)")
    gd_offset = struct.unpack_from("<Q", footer, 56)[0]
    gtes = struct.unpack_from("<I", footer, _NUM_GTES_OFFSET)[0]
    return int(gd_offset), int(gtes)
