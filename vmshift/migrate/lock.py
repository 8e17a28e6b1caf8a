"""One vmshift operation per domain at a time (on this machine).

An flock (vmshift.locks) on a file named after the domain's UUID: the kernel
drops it when the process dies, so a crashed run never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vmshift import locks
from vmshift.errors import Refused

LOCK_DIR = Path(os.environ.get("VMSHIFT_LOCK_DIR", "/run/vmshift/locks"))


@contextlib.contextmanager
def domain_lock(uuid: str, name: str, what: str,
                document: tuple[str, dict[str, Any]] | None = None) -> Iterator[None]:
    """Hold the domain's lock, or refuse (exit 3): --json then prints DOCUMENT (the
    command's own, kind and payload) with the finding domain.busy added."""
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    path = LOCK_DIR / f"{uuid}.lock"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locks.exclusive(path, wait=False, mode=0o600,
                                                holder=f"pid {os.getpid()}: {what}"))
        except locks.Held as held:
            why = (f"domain {name!r} is busy: another vmshift operation holds "
                   f"{path} ({held.holder or 'unknown'})")
            finding = {"id": "domain.busy", "severity": "blocker", "message": why}
            kind, payload = document or ("migrate", {})
            raise Refused(why, detail=[finding],
                          document=(kind, {**payload, "findings": [finding]})) from None
        yield
