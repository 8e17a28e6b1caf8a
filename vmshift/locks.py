"""Exclusive locks between processes: an flock on a lock file.

The one way vmshift keeps two processes apart (a domain being migrated, the
maintenance state, a test bed, a guest build, a plan's runner). An flock
belongs to the open file, so the kernel drops it when the process dies: a
crash never leaves a stale lock behind. The lock file is a file of its own,
never the file it guards: a file replaced by rename is a new inode, and a lock
on the old one would guard nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class Held(Exception):
    """Another process holds the lock (raised only when not waiting for it)."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held{': ' + holder if holder else ''}")
        self.path = path
        self.holder = holder  # what the holder wrote into the lock file, or ""


@contextlib.contextmanager
def exclusive(path: Path, *, wait: bool = True, holder: str | None = None,
              mode: int = 0o644) -> Iterator[None]:
    """Hold an exclusive flock on PATH (created if missing) for the block.

    WAIT: block until it is free; otherwise raise Held at once, carrying what
    the holder wrote. HOLDER: a line written into the lock file once it is
    ours, for the message of whoever finds it held. OSError when PATH cannot
    be opened."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise Held(path, os.pread(fd, 512, 0).decode(errors="replace").strip()) from None
        if holder is not None:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock
