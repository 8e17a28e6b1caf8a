"""Planning a disk run: sources, destinations, refusals and the space pre-check.

Everything here only reads; nothing is created until the plan is complete,
so a refused run (bad input, existing target, not enough space) leaves no
trace at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from vmshift import confine
from vmshift.convert import formats, safety
from vmshift.convert.disks import (
    ConvertOptions,
    Deferred,
    DiskJob,
    check_options,
    estimate,
    upper_bound,
)
from vmshift.errors import BadInput, OperationFailed, bad_input
from vmshift.units import human

if TYPE_CHECKING:  # libvirt is imported only when a pool is used
    from vmshift.convert import pool as poolmod

SUFFIX = {"qcow2": ".qcow2", "raw": ".raw"}


def plan(sources: list[Path], dst: str, o: ConvertOptions, *, defer: bool = False
         ) -> tuple[list[DiskJob], poolmod.PoolTarget | None]:
    """DEFER: the run follows at once, so what only confirms (qemu-img's reading of
    a VMDK, the exact size estimate when a bound already fits) runs beside the copy
    instead of before it; without it (--dry-run) everything is checked now."""
    check_options(o)
    if o.snapshot is not None and len(sources) > 1:
        raise BadInput("--snapshot: only with a single source disk")
    policy = confine.Policy.of(devices=o.allow_devices, disk_dirs=o.disk_dirs)
    images = [formats.open_source(s, snapshot=o.snapshot, forced=o.source_format,
                                  policy=policy) for s in sources]
    if not defer:
        for img in images:
            if img.confirm is not None:
                img.confirm()
                img.confirm = None
    jobs = [DiskJob(source=img) for img in images]
    target = None
    if o.pool is not None:
        from vmshift.convert import pool as poolmod

        assert o.connect is not None
        target = poolmod.open_pool(o.connect, o.pool)
        _name_volumes(jobs, dst, o, target)
    else:
        _place_files(jobs, Path(dst), o)
    _estimate(jobs, o, target, defer)
    return jobs, target


def _estimate(jobs: list[DiskJob], o: ConvertOptions, target: poolmod.PoolTarget | None,
              defer: bool) -> None:
    if defer:
        for job in jobs:
            job.required = upper_bound(job.source, o)
        try:
            _check_space(jobs, o, target)
        except OperationFailed:
            pass  # short of the bound: the exact estimate decides
        else:
            for job in jobs:
                job.estimate_later = Deferred(lambda src=job.source: estimate(src, o))
            return
    for job in jobs:
        job.required = estimate(job.source, o)
    _check_space(jobs, o, target)


def _output_names(jobs: list[DiskJob], dst: str, o: ConvertOptions) -> list[str]:
    if "{name}" in dst:
        return [dst.replace("{name}", j.source.given.name.split(".")[0]) for j in jobs]
    if len(jobs) > 1:
        raise BadInput(f"{dst}: with several sources, DST must be a directory or contain "
                       "'{name}' (replaced by each source's name)")
    return [dst]


def _place_files(jobs: list[DiskJob], dst: Path, o: ConvertOptions) -> None:
    suffix = SUFFIX[o.out_format]
    if dst.is_dir():
        finals = [dst / (j.source.given.name.split(".")[0] + suffix) for j in jobs]
    else:
        finals = [Path(n) for n in _output_names(jobs, str(dst), o)]
    if len({f.resolve() for f in finals}) != len(finals):
        raise BadInput(f"{dst}: two sources would be written to the same output")
    read = {p.resolve() for j in jobs for p in j.source.files + j.source.chain}
    for job, final in zip(jobs, finals, strict=True):
        if not final.parent.is_dir():
            raise bad_input(final, "output directory does not exist")
        if final.resolve() in read:
            raise bad_input(final, "is one of the source's own files; refused even with "
                                   "--force (sources are never written)")
        if final.exists() and not o.force:
            raise bad_input(final, "exists; refusing to overwrite it (use --force)")
        if not os.access(final.parent, os.W_OK):
            raise bad_input(final.parent, "output directory is not writable")
        job.dst = final


def _name_volumes(jobs: list[DiskJob], dst: str, o: ConvertOptions,
                  target: poolmod.PoolTarget) -> None:
    names = _output_names(jobs, dst, o)
    if len(set(names)) != len(names):
        raise BadInput(f"{dst}: two sources would get the same volume name")
    for job, name in zip(jobs, names, strict=True):
        if "/" in name or not name:
            raise BadInput(f"{name!r}: a volume name, not a path (with --pool, DST is the "
                           "volume name)")
        if target.exists(name) and not o.force:
            raise BadInput(f"volume {name} exists in pool {target.name} on {target.uri}; "
                           "refusing to overwrite it (use --force)")
        job.volume = name
    tmpdir = o.tmpdir or Path("/var/tmp")
    if not tmpdir.is_dir():
        raise bad_input(tmpdir, "--tmpdir does not exist")


def _check_space(jobs: list[DiskJob], o: ConvertOptions,
                 target: poolmod.PoolTarget | None) -> None:
    needs: dict[Path, int] = {}
    for job in jobs:
        where = job.dst.parent if job.dst is not None else (o.tmpdir or Path("/var/tmp"))
        needs[where] = needs.get(where, 0) + job.required
    safety.check_free_space(needs)
    if target is not None:
        need, free = sum(j.required for j in jobs), target.available()
        if need > free:
            raise OperationFailed(
                f"not enough free space in pool {target.name} on {target.uri}: this "
                f"conversion needs about {human(need)}, {human(free)} is "
                "available; nothing was written")
