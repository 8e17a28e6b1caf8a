"""Stage 4: the disk engine copies every overlay out, source and changes flattened.

The engine converts the disks concurrently, verifies each output against its
overlay (so the verified image is the source *with* the guest's changes),
and commits all of them or none.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from vmshift.convert import disks
from vmshift.convert.disk_plan import plan
from vmshift.inspect.probe import ImageProbe


@dataclass
class CopiedDisk:
    overlay: str
    path: str  # the file the domain will use (a volume's path in its pool)
    volume: str | None
    virtual_size: int
    bytes_written: int
    seconds: float
    verified: bool


def copy_out(overlays: list[ImageProbe], *, out_format: str, output_dir: Path | None,
             uri: str | None, pool: str | None, force: bool, json_mode: bool,
             dry_run: bool, sources: list[Path], allow_devices: tuple[str, ...] = (),
             verify: bool = True) -> tuple[list[CopiedDisk], int]:
    """Copy (or with DRY_RUN only plan) the overlays; returns the disks and bytes needed.

    Each overlay's backing file is a source disk: the sources' own directories
    are where the chain may lead, and nowhere else.
    """
    o = disks.ConvertOptions(out_format=out_format, parallel_disks=len(overlays), force=force,
                             verify=verify, pool=pool, connect=uri, json_mode=json_mode,
                             allow_devices=allow_devices,
                             disk_dirs=tuple({p.resolve().parent for p in sources}))
    if pool:
        jobs, target = plan([Path(ov.path) for ov in overlays], "{name}" + f".{out_format}", o)
    elif dry_run and output_dir is not None and not output_dir.is_dir():
        # A dry run creates nothing, not even DIR: plan into a stand-in, report DIR.
        with tempfile.TemporaryDirectory(prefix="vmshift-dryrun-") as stand_in:
            jobs, target = plan([Path(ov.path) for ov in overlays], stand_in, o)
        for job in jobs:
            job.dst = output_dir / Path(str(job.dst)).name
    else:
        jobs, target = plan([Path(ov.path) for ov in overlays], str(output_dir), o)
    needed = sum(j.required for j in jobs)
    if dry_run:
        return [CopiedDisk(str(j.source.given), str(j.dst or j.volume), j.volume,
                           j.source.virtual_size, 0, 0.0, False) for j in jobs], needed
    disks.Run(jobs, o, target).execute()
    out = []
    for job in jobs:
        path = str(job.dst) if job.dst else str(
            target.pool.storageVolLookupByName(job.volume).path())  # type: ignore[union-attr]
        out.append(CopiedDisk(str(job.source.given), path, job.volume,
                              job.source.virtual_size, job.out_bytes, job.seconds,
                              job.verified))
    return out, needed
