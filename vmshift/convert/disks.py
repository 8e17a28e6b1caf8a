"""The disk conversion pipeline: plan -> convert -> verify -> (upload) -> commit.

One job per source disk, run in a thread pool of ``--parallel-disks``
workers (qemu-img does the work; the threads only wait on it). The run is
all-or-nothing: outputs are committed (renamed) only once every disk is
converted and verified, and the undo list removes everything on failure.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vmshift.convert import formats, qemuimg, safety
from vmshift.convert.progress import DiskProgress
from vmshift.convert.qemuimg import CHILDREN, ConvertArgs
from vmshift.convert.verify import verify_image
from vmshift.errors import BadInput, OperationFailed

if TYPE_CHECKING:  # libvirt is imported only when a pool is used (it costs 0.15 s)
    from vmshift.convert import pool as poolmod

# Defaults, measured by benchmarks/bench_disks.py (see README "## convert disk").
DEFAULT_COROUTINES = 8  # qemu-img default; 16 measured no faster (sparse), slower (stream)
DEFAULT_TARGET_CACHE = "unsafe"  # durability comes from one fsync at commit
DEFAULT_SOURCE_CACHE = "writeback"
OUTPUT_FORMATS = ("qcow2", "raw")
PREALLOCATION = ("off", "metadata", "falloc", "full")


@dataclass
class ConvertOptions:
    out_format: str = "qcow2"
    compress: bool = False
    cluster_size: int | None = None
    preallocation: str = "off"
    coroutines: int = DEFAULT_COROUTINES
    out_of_order: str = "auto"  # auto: only where safe (raw or preallocated)
    target_cache: str = DEFAULT_TARGET_CACHE
    source_cache: str = DEFAULT_SOURCE_CACHE
    bandwidth: int | None = None  # bytes per second (--bandwidth)
    parallel_disks: int = 1
    verify: bool = True
    sync: bool = True  # fsync the output (and its directory) before it is named
    force: bool = False
    snapshot: str | None = None
    source_format: str | None = None
    tmpdir: Path | None = None  # where pool uploads are staged
    pool: str | None = None
    connect: str | None = None
    json_mode: bool = False
    allow_devices: tuple[str, ...] = ()  # --allow-device: devices a source may be or name
    # Directories a source's backing chain may reach besides its own (convert vm's
    # overlays sit in a work directory over sources elsewhere).
    disk_dirs: tuple[Path, ...] = ()
    # Test hook: called with the finished (unverified) output, before verification.
    after_convert: Callable[[Path], None] | None = None


class Deferred:
    """Work that need not hold up the copy (qemu-img's confirmation of the
    source, the exact size estimate), run in a thread beside it."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self._value: object = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name="deferred",
                                        daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], object]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # handed to whoever waits for the result
            self._error = exc

    def result(self) -> object:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


@dataclass
class DiskJob:
    source: formats.SourceImage
    dst: Path | None = None  # final file (file output)
    volume: str | None = None  # volume name (pool output)
    required: int = 0  # bytes the output will occupy, estimated (or bounded, see plan)
    estimate_later: Deferred | None = None  # the exact estimate, when the bound sufficed
    temp: Path | None = None
    seconds: float = 0.0
    out_bytes: int = 0
    verified: bool = False
    argv: list[str] = field(default_factory=list)

    def report(self) -> dict[str, object]:
        return {"source": str(self.source.given), "read": str(self.source.path),
                "source_format": self.source.kind, "virtual_size": self.source.virtual_size,
                "output": str(self.dst) if self.dst else None, "volume": self.volume,
                "estimated_bytes": self.estimated(), "output_bytes": self.out_bytes,
                "seconds": round(self.seconds, 3), "verified": self.verified,
                "qemu_img": ["qemu-img", *self.argv]}

    def estimated(self) -> int:
        if self.estimate_later is not None:
            try:
                return int(self.estimate_later.result())  # type: ignore[call-overload]
            except Exception:  # the report keeps the bound the space check used
                return self.required
        return self.required


def check_options(o: ConvertOptions) -> None:
    if o.out_format not in OUTPUT_FORMATS:
        raise BadInput(f"--format: {o.out_format} is not one of {', '.join(OUTPUT_FORMATS)}")
    if o.compress and o.out_format != "qcow2":
        raise BadInput("--compress: only qcow2 output can be compressed")
    if o.compress and o.preallocation != "off":
        raise BadInput("--compress and --preallocation exclude each other")
    if o.out_format == "raw" and o.preallocation == "metadata":
        raise BadInput("--preallocation metadata: raw has no metadata; use falloc or full")
    if o.cluster_size is not None and o.out_format != "qcow2":
        raise BadInput("--cluster-size: only for qcow2 output")
    if o.cluster_size is not None and (o.cluster_size < 512 or o.cluster_size > 2 * 1024**2
                                       or o.cluster_size & (o.cluster_size - 1)):
        raise BadInput("--cluster-size: a power of two from 512 to 2M")
    if o.coroutines < 1 or o.coroutines > 16:
        raise BadInput("--coroutines: 1 to 16 (qemu-img's limit)")
    if o.parallel_disks < 1:
        raise BadInput("--parallel-disks: at least 1")
    if o.bandwidth is not None and o.bandwidth <= 0:
        raise BadInput("--bandwidth: must be more than 0")
    if (o.pool is None) != (o.connect is None):
        raise BadInput("--pool and --connect go together")


def create_options(o: ConvertOptions) -> list[str]:
    opts = []
    if o.out_format == "qcow2":
        opts.append("compat=1.1")
        if o.cluster_size:
            opts.append(f"cluster_size={o.cluster_size}")
    if o.preallocation != "off":
        opts.append(f"preallocation={o.preallocation}")
    return opts


def out_of_order(o: ConvertOptions) -> bool:
    """-W fragments a sparse qcow2 (clusters get allocated in completion order);
    it is safe where every cluster's place is fixed: raw, or preallocated qcow2."""
    if o.out_of_order != "auto":
        return o.out_of_order == "on"
    return not o.compress and (o.out_format == "raw" or o.preallocation != "off")


def estimate(src: formats.SourceImage, o: ConvertOptions) -> int:
    """Bytes the output will occupy: qemu-img measure for qcow2, data bytes for raw."""
    if o.out_format == "qcow2":
        m = qemuimg.measure(src.path, src.format, "qcow2", create_options(o))
        return int(m["fully-allocated"] if o.preallocation != "off" else m["required"])
    if o.preallocation != "off":
        return src.virtual_size
    return qemuimg.allocated_bytes(src.path, src.format)


def upper_bound(src: formats.SourceImage, o: ConvertOptions) -> int:
    """The most the output can occupy, known without reading the source: the
    virtual size, plus for qcow2 an L2 entry and a refcount per cluster and a
    few clusters of header and tables (generously)."""
    if o.out_format != "qcow2":
        return src.virtual_size
    cluster = o.cluster_size or 64 * 1024
    return src.virtual_size + (src.virtual_size // cluster + 1) * 16 + 16 * cluster + 2**20


def convert_args(job: DiskJob, target: Path, o: ConvertOptions) -> ConvertArgs:
    src = job.source
    return ConvertArgs(src=src.path, src_fmt=src.format, dst=target, out_fmt=o.out_format,
                       create_options=create_options(o), compress=o.compress,
                       coroutines=o.coroutines, out_of_order=out_of_order(o),
                       target_cache=o.target_cache, source_cache=o.source_cache,
                       rate_limit=o.bandwidth)


class Run:
    """One `convert disk` run: the jobs, their undo list and their progress."""

    def __init__(self, jobs: list[DiskJob], o: ConvertOptions,
                 target: poolmod.PoolTarget | None) -> None:
        self.jobs, self.o, self.target = jobs, o, target
        self.undo = safety.Undo()
        self.progress = DiskProgress(jobs, json_mode=o.json_mode)
        self.failed = threading.Event()

    def execute(self) -> None:
        CHILDREN.reset()
        with safety.signals_raise():
            try:
                self._run_all()
                self._commit()
            except BaseException:
                safety.ignore_signals()
                self.failed.set()
                CHILDREN.kill_all()
                self._wait_workers()
                left = self.undo.run()
                CHILDREN.reset()  # the run is over; a later run in this process may start
                self.progress.close()
                if left:
                    raise OperationFailed("conversion failed and cleanup was incomplete: "
                                          + "; ".join(left)) from None
                raise
            self.progress.close()

    def _run_all(self) -> None:
        self._pool = cf.ThreadPoolExecutor(max_workers=self.o.parallel_disks,
                                           thread_name_prefix="disk")
        futures = [self._pool.submit(self._one, i, job) for i, job in enumerate(self.jobs)]
        pending = set(futures)
        while pending:
            # A short timeout keeps the main thread responsive to signals.
            done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_EXCEPTION)
            for fut in done:
                if fut.exception() is not None:
                    raise _real_error(futures, fut)
        self._pool.shutdown(wait=True)

    def _wait_workers(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _one(self, index: int, job: DiskJob) -> None:
        if self.failed.is_set():
            return
        start = time.monotonic()
        staging = self._staging_path(job)
        job.temp = staging
        self.undo.add_file(staging)
        args = convert_args(job, staging, self.o)
        # A file output is fsynced at commit: write it back while qemu-img copies.
        # A staged upload is deleted after the upload and never needs the disk.
        job.argv = args.argv()
        confirm = Deferred(job.source.confirm) if job.source.confirm is not None else None
        durable = job.dst is not None and self.o.sync
        with safety.writeback(staging) if durable else contextlib.nullcontext():
            proc = qemuimg.run_with_progress(job.argv, self.progress.converter(index),
                                             what="convert")
        if confirm is not None:
            confirm.result()  # qemu-img's refusal of the source says more than the copy's
        if proc.returncode != 0:
            raise _convert_error(job, staging, proc)
        self.progress.finish(index, "convert")
        if self.o.after_convert is not None:
            self.o.after_convert(staging)
        if self.o.verify:
            verify_image(job.source.path, job.source.format, staging, self.o.out_format,
                         self.progress.verifier(index))
            self.progress.finish(index, "verify")
            job.verified = True
        job.out_bytes = staging.stat().st_blocks * 512
        if self.target is not None:
            self._upload(index, job, staging)
        job.seconds = time.monotonic() - start

    def _staging_path(self, job: DiskJob) -> Path:
        if job.dst is not None:
            return safety.temp_name(job.dst)
        tmpdir = self.o.tmpdir or Path("/var/tmp")
        return safety.temp_name(tmpdir / f"{job.volume}")

    def _upload(self, index: int, job: DiskJob, staging: Path) -> None:
        from vmshift import volumes
        from vmshift.convert.verify import verify_upload

        assert self.target is not None and job.volume is not None
        if self.o.force and self.target.exists(job.volume):
            self.target.pool.storageVolLookupByName(job.volume).delete(0)
        size = staging.stat().st_size
        # Created as a raw volume of exactly the bytes we send: a fresh, all-zero file,
        # so holes skipped by the sparse stream read as zeroes (a qcow2 volume made by
        # libvirt would leave its own header bytes wherever our image has a hole).
        # The pool refresh afterwards lets libvirt probe the real format and size.
        vol = volumes.create(self.target.pool, job.volume, size, "raw")
        self.undo.add(f"delete volume {job.volume}", lambda: vol.delete(0))
        volumes.upload(self.target.conn, vol, staging, self.progress.uploader(index, size),
                       self.failed.is_set, self.o.bandwidth)
        self.progress.finish(index, "upload")
        self.target.pool.refresh(0)
        if self.o.verify:
            verify_upload(self.target, vol, staging)

    def _commit(self) -> None:
        for job in self.jobs:
            if job.dst is not None and job.temp is not None:
                safety.commit(job.temp, job.dst, force=self.o.force, sync=self.o.sync)
                if not self.o.force:
                    # Until the last disk is committed, an earlier one is still "partial"
                    # as far as the VM is concerned: undo it if a later commit fails.
                    self.undo.add_file(job.dst)
            elif job.temp is not None:
                job.temp.unlink(missing_ok=True)
        # Committed outputs are no longer partial: forget their undo actions.
        self.undo = safety.Undo()


def _real_error(futures: list[cf.Future[None]], failed: cf.Future[None]) -> BaseException:
    """The first error that is not a consequence of another disk's failure."""
    exc = failed.exception()
    assert exc is not None
    if isinstance(exc, qemuimg.Cancelled):
        for fut in futures:
            other = fut.exception() if fut.done() else None
            if other is not None and not isinstance(other, qemuimg.Cancelled):
                return other
    return exc


def _convert_error(job: DiskJob, staging: Path, proc: object) -> OperationFailed:
    stderr = getattr(proc, "stderr", "")
    err = qemuimg.QemuImgError("", stderr, getattr(proc, "returncode", 1))
    where = staging.parent
    if err.errno is not None and err.errno in (28, 122):  # ENOSPC, EDQUOT
        return OperationFailed(
            f"no space left in {where} while writing {job.dst or job.volume} from "
            f"{job.source.given} (the free-space check passed, so something else filled "
            "the filesystem meanwhile); partial output removed, source untouched")
    return OperationFailed(f"converting {job.source.given} failed: "
                           f"{qemuimg.last_line(stderr)}; partial output removed")
