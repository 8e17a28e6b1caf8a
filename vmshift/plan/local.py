"""The local executor: each row runs as a `vmshift ... --json` process on this
machine (docs/plan.md, "What each row runs").

The process is started in a session of its own, its JSON document goes to the
attempt's result file and its stderr (progress and errors) to the row's log.
It does not depend on the runner: a runner killed mid-wave leaves its rows'
migrations and conversions running to their own end, and the next runner
finds them by their handle (``local:PID:START:RESULT``; START, the process's
start time in clock ticks since boot, tells a live process from a recycled PID)
and waits for their result file instead of starting them again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from vmshift.plan.executor import Outcome, RowRun

PREFIX = "local"


class LocalExecutor:
    def __init__(self, program: list[str] | None = None) -> None:
        # the vmshift of this interpreter, whatever PATH says
        self.program = program or [sys.executable, "-m", "vmshift"]
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def submit(self, run: RowRun) -> str:
        run.result.parent.mkdir(parents=True, exist_ok=True)
        with open(run.result, "wb") as out, open(run.log, "ab") as log:
            _header(log, run)
            child = subprocess.Popen([*self.program, *run.argv], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=log, start_new_session=True)
        handle = f"{PREFIX}:{child.pid}:{_start_time(child.pid)}:{run.result}"
        self._children[handle] = child
        return handle

    def poll(self, handle: str) -> Outcome | None:
        pid, start, result = _parse(handle)
        child = self._children.get(handle)
        if child is not None:
            code = child.poll()
            if code is None:
                return None
            del self._children[handle]
            return judge(_document(result), code)
        if _start_time(pid) == start:  # a previous runner's process, still running
            return None
        return judge(_document(result), None)

    def cancel(self, handle: str) -> None:
        """SIGTERM: the engines stop cleanly (a live migration is aborted and the
        VM stays on the source; never after a post-copy switch)."""
        pid, start, _ = _parse(handle)
        if handle in self._children or _start_time(pid) == start:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def judge(doc: dict[str, Any] | None, code: int | None) -> Outcome:
    """A row's outcome from its command's document and exit code (None: the
    process was not this runner's child, so only its document speaks)."""
    metrics = metrics_of(doc or {})
    if doc is None:
        if code is None:
            return Outcome("unknown", "it ended without a result (killed?)")
        return Outcome("failed", f"exit {code} without a result document (see the log)")
    ok = doc.get("outcome") == "ok" and (code is None or code == 0)
    if ok:
        return Outcome("succeeded", None, metrics)
    return Outcome("failed", _error(doc, code), metrics)


def metrics_of(doc: dict[str, Any]) -> dict[str, Any]:
    """What the report shows of a row, from a `migrate` or `convert_vm` document."""
    detail = (doc.get("error") or {}).get("detail") if doc.get("kind") == "error" else doc
    detail = detail if isinstance(detail, dict) else {}
    seconds = detail.get("total_time_s", detail.get("total_seconds"))
    moved = detail.get("bytes_transferred")
    if moved is None and detail.get("disks"):
        moved = sum(int(d.get("bytes_written") or 0) for d in detail["disks"])
    return {"seconds": seconds, "bytes": moved, "downtime_ms": detail.get("downtime_ms")}


def _error(doc: dict[str, Any], code: int | None) -> str:
    err = doc.get("error")
    message = err.get("message") if isinstance(err, dict) else err
    exit_code = code if code is not None else (err or {}).get("exit_code") \
        if isinstance(err, dict) else None
    return f"{message or 'failed'}" + (f" (exit {exit_code})" if exit_code else "")


def _document(path: Path) -> dict[str, Any] | None:
    """The command's one JSON document, or None if it wrote none (killed)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _header(log: IO[bytes], run: RowRun) -> None:
    log.write(f"--- attempt {run.attempt}: vmshift {' '.join(run.argv)}\n".encode())
    log.flush()


def _parse(handle: str) -> tuple[int, int, Path]:
    prefix, pid, start, result = handle.split(":", 3)
    if prefix != PREFIX:
        raise ValueError(f"not a local executor's handle: {handle!r}")
    return int(pid), int(start), Path(result)


def _start_time(pid: int) -> int:
    """The process's start time (field 22 of /proc/PID/stat), -1 when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    # the command name (field 2) may hold spaces and parentheses: split after it
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has ended (its parent has not reaped it)
        return -1
    return int(fields[19])
