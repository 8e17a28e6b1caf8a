"""Safety around a conversion: free-space pre-check, temporary names with a
no-clobber commit, and an undo list run on failure or on SIGINT/SIGTERM.

The contract is all-or-nothing: outputs are written under hidden temporary
names and only renamed once every disk of the run is converted and verified;
anything created before a failure (files, pool volumes) is removed again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from vmshift.convert.qemuimg import CHILDREN
from vmshift.errors import OperationFailed
from vmshift.units import human


class Interrupted(OperationFailed):
    """SIGINT or SIGTERM arrived; everything the run created has been removed."""


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def check_free_space(needs: dict[Path, int]) -> None:
    """``needs``: directory -> bytes this run will write there. Raise when short."""
    by_fs: dict[int, tuple[Path, int]] = {}
    for directory, need in needs.items():
        dev = os.stat(directory).st_dev
        first, total = by_fs.get(dev, (directory, 0))
        by_fs[dev] = (first, total + need)
    for directory, need in by_fs.values():
        free = free_bytes(directory)
        if need > free:
            raise OperationFailed(
                f"not enough free space in {directory}: this conversion needs about "
                f"{human(need)}, {human(free)} is free; nothing was written")


def temp_name(final: Path) -> Path:
    """A hidden sibling of ``final`` (same filesystem, so the rename is atomic)."""
    return final.with_name(f".{final.name}.vmshift-{os.getpid()}-{os.urandom(3).hex()}.part")


def commit(temp: Path, final: Path, *, force: bool, sync: bool = True) -> None:
    """Move a finished temp file into place; never clobber unless --force.
    SYNC: its data on disk first, so the name never points at a partial file."""
    if sync:
        fsync_file(temp)
    if force:
        os.replace(temp, final)
    else:
        try:
            os.link(temp, final)  # fails with EEXIST: no window where a file is replaced
        except FileExistsError:
            raise OperationFailed(f"{final} appeared during the conversion; not "
                                  "overwritten (use --force)") from None
        os.unlink(temp)
    if sync:
        _fsync_dir(final.parent)


# How often the kernel is asked to write back what qemu-img wrote since the last time.
WRITEBACK_INTERVAL = 0.1


@contextlib.contextmanager
def writeback(path: Path, interval: float = WRITEBACK_INTERVAL) -> Iterator[None]:
    """While the block runs (qemu-img writing ``path``), keep the kernel writing the
    file's dirty pages to disk, and once more when it ends.

    The commit must fsync the output; with the default 'unsafe' target cache the
    whole output would still be in the page cache then, and the fsync would write it
    all after the copy. Started now (sync_file_range SYNC_FILE_RANGE_WRITE: start the
    writes, do not wait for them), the disk writes overlap the copy and the
    verification, and the fsync only waits for the last of them. Best effort: where
    sync_file_range is missing this does nothing and the fsync does all the work.
    """
    stop = threading.Event()
    worker = threading.Thread(target=_writeback_loop, args=(path, stop, interval),
                              name="writeback", daemon=True)
    worker.start()
    try:
        yield
    finally:
        stop.set()
        worker.join()


def _writeback_loop(path: Path, stop: threading.Event, interval: float) -> None:
    start_writes, fd = None, None
    try:
        while True:
            stopping = stop.wait(interval)
            if start_writes is None:
                # Imported only now, in this thread, while qemu-img already runs.
                import ctypes

                libc = ctypes.CDLL(None, use_errno=True)
                start_writes = getattr(libc, "sync_file_range", None)
                if start_writes is None:
                    return
                start_writes.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong,
                                         ctypes.c_uint]
            if fd is None:
                with contextlib.suppress(OSError):  # qemu-img has not created it yet
                    fd = os.open(path, os.O_RDONLY)
            if fd is not None:
                start_writes(fd, 0, 0, 2)  # SYNC_FILE_RANGE_WRITE, the whole file
            if stopping:
                return
    finally:
        if fd is not None:
            os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush one file's data to disk (before a rename makes it visible)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fsync_file(directory)


class Undo:
    """A thread-safe list of undo actions, run newest first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._actions: list[tuple[str, Callable[[], None]]] = []

    def add(self, what: str, action: Callable[[], None]) -> tuple[str, Callable[[], None]]:
        item = (what, action)
        with self._lock:
            self._actions.append(item)
        return item

    def add_file(self, path: Path) -> tuple[str, Callable[[], None]]:
        return self.add(f"remove {path}", lambda: path.unlink(missing_ok=True))

    def discard(self, item: tuple[str, Callable[[], None]]) -> None:
        with self._lock:
            if item in self._actions:
                self._actions.remove(item)

    def run(self) -> list[str]:
        """Run every action; return the ones that failed (reported, not raised)."""
        failures = []
        while True:
            with self._lock:
                if not self._actions:
                    return failures
                what, action = self._actions.pop()
            try:
                action()
            except Exception as exc:  # cleanup must go on; report what was left
                failures.append(f"{what}: {exc}")


def ignore_signals() -> None:
    """While undoing, a further Ctrl-C must not cut the cleanup short (main thread only;
    signals_raise() restores the previous handlers when the run ends)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """In the main thread, turn SIGINT/SIGTERM into Interrupted and kill our children.

    The children are killed inside the handler itself so that a worker thread
    blocked on a qemu-img pipe returns at once and the undo list can run.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        ignore_signals()  # a second signal during cleanup must not abort the cleanup
        CHILDREN.kill_all()
        raise Interrupted(f"interrupted by {signal.Signals(signum).name}; "
                          "partial output removed")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
