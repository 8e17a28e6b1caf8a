"""Safety around a conversion: free-space pre-check, temporary names with a
no-clobber commit, and an undo list run on failure or on SIGINT/SIGTERM.

The contract is all-or-nothing: outputs are written under hidden temporary
names and only renamed once every disk of the run is converted and verified;
anything created before a failure (files, pool volumes) is removed again.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from vmshift.convert.qemuimg import CHILDREN
from vmshift.errors import BadInput, OperationFailed

GiB = 1024**3


class Interrupted(OperationFailed):
    """SIGINT or SIGTERM arrived; everything the run created has been removed."""


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def parse_rate(value: str | None) -> int | None:
    """'100M' -> bytes per second (K, M, G are powers of 1024, like qemu-img -r)."""
    if not value:
        return None
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    v = value.strip().lower().removesuffix("b").removesuffix("/s")
    try:
        n = float(v[:-1]) * units[v[-1]] if v and v[-1] in units else float(v)
    except (ValueError, KeyError):
        raise BadInput(f"--rate-limit: {value!r} is not a rate (e.g. 100M)") from None
    if n <= 0:
        raise BadInput("--rate-limit: must be positive")
    return int(n)


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
    return final.with_name(f".{final.name}.vmshift-{os.getpid()}-{secrets.token_hex(3)}.part")


def commit(temp: Path, final: Path, *, force: bool) -> None:
    """Move a finished temp file into place; never clobber unless --force."""
    _fsync(temp)
    if force:
        os.replace(temp, final)
    else:
        try:
            os.link(temp, final)  # fails with EEXIST: no window where a file is replaced
        except FileExistsError:
            raise OperationFailed(f"{final} appeared during the conversion; not "
                                  "overwritten (use --force)") from None
        os.unlink(temp)
    _fsync_dir(final.parent)


def start_writeback(path: Path) -> None:
    """Ask the kernel to start writing ``path``'s dirty pages now, without waiting
    (sync_file_range SYNC_FILE_RANGE_WRITE), so that the fsync at commit finds most of
    the work done while verification was reading. Best effort: no-op where unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        libc.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0),
                             ctypes.c_uint(2))  # SYNC_FILE_RANGE_WRITE
    except AttributeError:
        pass
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        _fsync(directory)


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
