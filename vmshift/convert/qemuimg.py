"""The qemu-img engine: argument building, running with progress, error mapping.

Every qemu-img child is registered in ``CHILDREN`` so that a signal handler
(or a failing sibling disk) can kill exactly the processes this run started.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import subprocess
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vmshift.errors import BadInput, OperationFailed

QEMU_IMG = "qemu-img"
# How qemu-img reads the images opened through image_opts(): io_uring, or "threads"
# once qemu-img on this host has refused io_uring (see run_image_command()).
AIO = {"engine": "io_uring"}
# qemu-img -p rewrites one status line with '\r': "    (12.34/100%)".
_PERCENT = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
ProgressFn = Callable[[float], None]  # called with a fraction 0.0 .. 1.0


class Children:
    """The qemu-img processes this run started, killable from a signal handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self.stopping = False

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            if self.stopping:
                proc.kill()
            self._procs.add(proc)

    def remove(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        """Stop every child we started (by its own PID) and refuse new ones."""
        with self._lock:
            self.stopping = True
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    def reset(self) -> None:
        with self._lock:
            self.stopping = False


CHILDREN = Children()


class Cancelled(OperationFailed):
    """The run is being torn down (signal or a sibling's failure)."""


class QemuImgError(OperationFailed):
    """qemu-img failed; ``errno`` is set when its message names a system error."""

    def __init__(self, message: str, stderr: str, returncode: int) -> None:
        super().__init__(message)
        self.stderr = stderr
        self.returncode = returncode
        self.errno = _errno_of(stderr)


def _errno_of(stderr: str) -> int | None:
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EACCES, errno.EROFS):
        if os.strerror(code) in stderr:
            return code
    return None


def last_line(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    return lines[-1].removeprefix("qemu-img: ") if lines else "no message"


def run(args: Sequence[str], *, what: str, check: bool = True,
        ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[str]:
    """Run a short qemu-img command (info, measure, map, check, create)."""
    if CHILDREN.stopping:
        raise Cancelled("cancelled")
    try:
        proc = subprocess.run([QEMU_IMG, *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise OperationFailed("qemu-img not found: install qemu-utils") from None
    if check and proc.returncode not in ok_codes:
        raise QemuImgError(f"{what}: {last_line(proc.stderr)}", proc.stderr, proc.returncode)
    return proc


def info(path: Path, fmt: str | None = None, *, chain: bool = False) -> Any:
    """`qemu-img info --output=json` (a list of images with --backing-chain)."""
    args = ["info", "--output=json"] + (["--backing-chain"] if chain else [])
    args += (["-f", fmt] if fmt else []) + [str(path)]
    proc = run(args, what=f"{path}", check=False)
    if proc.returncode != 0:
        msg = last_line(proc.stderr)
        raise BadInput(f"{path}: qemu-img cannot read it: {msg}")
    return json.loads(proc.stdout)


def measure(path: Path, fmt: str, out_fmt: str, options: Sequence[str] = ()) -> dict[str, int]:
    args = ["measure", "--output=json", "-f", fmt, "-O", out_fmt]
    if options:
        args += ["-o", ",".join(options)]
    return json.loads(run([*args, str(path)], what=f"measuring {path}").stdout)


def allocated_bytes(path: Path, fmt: str) -> int:
    """Bytes that hold data (not holes, not known zeroes) in the guest-visible image."""
    proc = run(["map", "--output=json", "-f", fmt, str(path)], what=f"mapping {path}")
    return sum(e["length"] for e in json.loads(proc.stdout) if e.get("data") and
               not e.get("zero"))


def check(path: Path, fmt: str) -> tuple[bool, str]:
    """`qemu-img check` (formats that support it); (ok, message)."""
    proc = run(["check", "--output=human", "-f", fmt, str(path)], what="check", check=False)
    if proc.returncode == 0:
        return True, ""
    if proc.returncode == 63 or "does not support checks" in proc.stderr:
        return True, ""  # the format has no consistency check
    text = (proc.stderr + proc.stdout).strip().splitlines()
    errors = [ln for ln in text if "ERROR" in ln or "rror" in ln]
    return False, (errors[0] if errors else last_line(proc.stderr)).strip()


def run_with_progress(args: Sequence[str], on_progress: ProgressFn | None, *,
                      what: str) -> subprocess.CompletedProcess[str]:
    """Run a long qemu-img command with -p, feeding parsed fractions to ``on_progress``."""
    if CHILDREN.stopping:
        raise Cancelled("cancelled")
    with tempfile.TemporaryFile() as err:
        try:
            # stdin closed, stderr to a file: only stdout (the progress line) is a pipe.
            proc = subprocess.Popen([QEMU_IMG, *args], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=err)
        except FileNotFoundError:
            raise OperationFailed("qemu-img not found: install qemu-utils") from None
        CHILDREN.add(proc)
        try:
            other = _pump_progress(proc, on_progress)
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            CHILDREN.remove(proc)
        err.seek(0)
        stderr = err.read().decode("utf-8", errors="replace")
    if CHILDREN.stopping:
        raise Cancelled("cancelled")
    return subprocess.CompletedProcess(list(args), code, other, stderr)


def _pump_progress(proc: subprocess.Popen[bytes], on_progress: ProgressFn | None) -> str:
    """Feed progress lines to ``on_progress``; return the other stdout lines."""
    assert proc.stdout is not None
    pending, other = b"", []
    while True:
        chunk = proc.stdout.read1(4096)
        if not chunk:
            break
        pending += chunk
        *complete, pending = re.split(rb"[\r\n]", pending)
        for line in complete:
            fraction = parse_progress(line)
            if fraction is None:
                if line.strip():
                    other.append(line.decode("utf-8", errors="replace").strip())
            elif on_progress is not None:
                on_progress(fraction)
    if pending.strip() and parse_progress(pending) is None:
        other.append(pending.decode("utf-8", errors="replace").strip())
    return "\n".join(other)


def parse_progress(line: bytes) -> float | None:
    """'    (12.34/100%)' -> 0.1234; None for anything else."""
    m = _PERCENT.search(line)
    return None if m is None else min(float(m.group(1)) / 100.0, 1.0)


@dataclass
class ConvertArgs:
    """Everything that decides a `qemu-img convert` command line."""

    src: Path
    src_fmt: str
    dst: Path
    out_fmt: str
    create_options: list[str]
    compress: bool = False
    coroutines: int = 8
    out_of_order: bool = False
    target_cache: str = "unsafe"
    source_cache: str = "writeback"
    rate_limit: int | None = None  # bytes per second

    def argv(self) -> list[str]:
        args = ["convert", "-p", "-f", self.src_fmt, "-O", self.out_fmt,
                "-t", self.target_cache, "-T", self.source_cache, "-m", str(self.coroutines)]
        # qemu-img creates the target itself: it then knows the new image reads as
        # zeroes and skips writing zero areas (what --target-is-zero asserts for a -n
        # target). Measured: pre-creating it and using -n --target-is-zero was never
        # faster, and up to 2x slower from streamOptimized input.
        if self.create_options:
            args += ["-o", ",".join(self.create_options)]
        if self.compress:
            args.append("-c")
        if self.out_of_order:
            args.append("-W")
        if self.rate_limit:
            args += ["-r", str(self.rate_limit)]
        # The thread pool, not io_uring (see image_opts()): measured on the reference
        # disk with the machine busy, io_uring made convert 1.18x slower, as it copies
        # cached data in qemu-img's one main thread while the pool copies on every core.
        return [*args, str(self.src), str(self.dst)]


def image_opts(path: Path, fmt: str, cache: str = "writeback") -> str:
    """An --image-opts string; commas in paths are doubled, as QEMU's option syntax wants.

    ``cache`` is the -T/-t mode the command opens the image with."""
    is_device, size = _stat(path)
    protocol = "host_device" if is_device else "file"  # 'file' refuses a block device
    opts = f"driver={fmt},file.driver={protocol},file.filename={str(path).replace(',', ',,')}"
    # `compare` reads one request at a time; through io_uring instead of qemu's
    # thread pool (a thread hand-off per 64 KiB grain) it was 2x faster on the
    # reference disk (0.44 -> 0.22 s, warm cache, busy machine). But qemu 7.2's
    # io_uring resubmits a read that hits the end of the file forever (seen: a VMDK
    # text descriptor, a raw file of 1 MiB + 100 bytes: qemu-img hangs). qemu
    # reads whole sectors (whole blocks with O_DIRECT), clipped to the size rounded
    # up to them, so only a file whose size is a multiple of that unit is safe.
    unit = 4096 if cache in ("none", "directsync") else 512
    if AIO["engine"] != "threads" and size is not None and size % unit == 0:
        opts += f",file.aio={AIO['engine']}"
    if fmt == "qcow2":
        # Measured: `qemu-img compare` of a VMDK (one grain per block-status answer)
        # against a qcow2 asks qcow2 about the whole remaining range each time, and
        # qcow2 scans its L2 slice to the end: 8192 entries per 64 KiB grain with the
        # default slice. 512-byte slices (64 entries) made it 20x faster here (3.2 s ->
        # 0.15 s for a 2 GiB disk), and 2x faster again than 4 KiB slices on 4 KiB grains.
        opts += ",l2-cache-entry-size=512"
    return opts


def compare(a: Path, a_fmt: str, b: Path, b_fmt: str, on_progress: ProgressFn | None,
            *, source_cache: str = "writeback") -> tuple[bool, str]:
    """`qemu-img compare`: (identical, message). Exit 1 means different content."""
    proc = run_image_command(lambda: ["compare", "-p", "--image-opts", "-T", source_cache,
                                      image_opts(a, a_fmt, source_cache),
                                      image_opts(b, b_fmt, source_cache)],
                             on_progress, what="compare")
    if proc.returncode == 0:
        return True, ""
    if proc.returncode == 1:
        return False, (proc.stdout or proc.stderr).strip() or "content differs"
    raise QemuImgError(f"verification of {b} failed: {last_line(proc.stderr)}",
                       proc.stderr, proc.returncode)


def _stat(path: Path) -> tuple[bool, int | None]:
    """(is a block device, its size in bytes or None when unknown)."""
    try:
        st = path.stat()
        if stat.S_ISBLK(st.st_mode):
            with open(path, "rb") as dev:
                return True, dev.seek(0, os.SEEK_END)
    except OSError:
        return False, None  # qemu-img names the problem when it opens the path
    return False, st.st_size if stat.S_ISREG(st.st_mode) else None


def run_image_command(argv: Callable[[], list[str]], on_progress: ProgressFn | None, *,
                      what: str) -> subprocess.CompletedProcess[str]:
    """run_with_progress() for a command that opens images through image_opts().

    io_uring can be refused by the kernel (io_uring_disabled, seccomp) or missing
    from the qemu-img build; qemu-img then fails while opening the images, before
    it writes anything. Retry once with the thread pool, and keep that for the run.
    """
    proc = run_with_progress(argv(), on_progress, what=what)
    # qemu-img quotes the option string it could not open: look past our own option.
    refused = "io_uring" in proc.stderr.replace("file.aio=io_uring", "")
    if proc.returncode != 0 and AIO["engine"] != "threads" and refused:
        AIO["engine"] = "threads"
        proc = run_with_progress(argv(), on_progress, what=what)
    return proc
