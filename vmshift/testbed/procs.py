"""Processes and namespaces of the test bed.

Every long-lived process the bed starts is recorded as (pid, start time), so
that ``down`` ends exactly those processes and never an unrelated one that
happens to reuse a PID. Short commands run with an argument list, never a shell.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from vmshift.errors import OperationFailed
from vmshift.testbed import state


@dataclass
class Proc:
    """A process the bed started: enough to recognise it again later."""

    role: str
    pid: int
    start: int  # /proc/PID/stat field 22: distinguishes a reused PID

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def run(argv: list[str], *, check: bool = True, timeout: float = 60,
        input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a short command; on failure raise OperationFailed naming it."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              input=input_text, check=False)
    except FileNotFoundError as exc:
        raise OperationFailed(f"{argv[0]} is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise OperationFailed(f"{' '.join(argv)} took longer than {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        err = (done.stderr or done.stdout).strip().splitlines()
        raise OperationFailed(f"{' '.join(argv)} failed: {err[-1] if err else done.returncode}")
    return done


def _mount_ns(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/mnt")


def nsenter(holder: int, argv: list[str], *, net: bool = True,
            **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a command inside a host's mount, UTS (and network) namespaces.

    Refuses when HOLDER shares this process's mount namespace: a mount or
    umount meant for a bed host must never land in the machine's namespace.
    """
    if _mount_ns(holder) == _mount_ns("self"):
        raise OperationFailed(f"pid {holder} has no mount namespace of its own yet")
    spaces = ["-m", "-u"] + (["-n"] if net else [])
    return run(["nsenter", "-t", str(holder), *spaces, "--", *argv], **kw)  # type: ignore[arg-type]


def start_time(pid: int) -> int | None:
    """The kernel's start time of PID, or None when it is gone or a zombie."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def spawn(role: str, argv: list[str], log: Path) -> Proc:
    """Start a daemon in its own session, output to LOG; return its record."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True)
    for _ in range(50):
        st = start_time(child.pid)
        if st is not None:
            return Proc(role, child.pid, st)
        if child.poll() is not None:
            break
        time.sleep(0.01)
    raise OperationFailed(f"{role} ({argv[0]}) exited at once; see {log}")


def spawn_holder(role: str, argv: list[str], log: Path, timeout: float = 10.0) -> Proc:
    """Start a namespace holder (``... unshare ... sleep infinity``) and wait
    until it has really become ``sleep`` in a mount namespace of its own.

    Until then the process may still be ``ip netns exec`` or ``unshare`` in the
    machine's namespaces, and an nsenter into it would act on the machine.
    """
    proc = spawn(role, argv, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            comm = Path(f"/proc/{proc.pid}/comm").read_text().strip()
            if comm == "sleep" and _mount_ns(proc.pid) != _mount_ns("self"):
                return proc
        except OSError:
            pass
        if not alive(proc):
            break
        time.sleep(0.02)
    stop(proc)
    raise OperationFailed(f"{role}: namespaces not ready within {timeout:.0f} s; see {log}")


def alive(proc: Proc) -> bool:
    return start_time(proc.pid) == proc.start


def _reap(pid: int) -> None:
    # Our own children (when the bed was started from this process) must be
    # reaped here; orphans are reaped by PID 1.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(proc: Proc, *, grace: float = 10.0) -> None:
    """SIGTERM the recorded process, then SIGKILL after GRACE seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not alive(proc):
            _reap(proc.pid)
            return
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(proc.pid)
            if not alive(proc):
                return
            time.sleep(0.05)
    if alive(proc):
        raise OperationFailed(f"{proc.role} (pid {proc.pid}) did not exit after SIGKILL")


def netns_pids(netns: str) -> list[int]:
    """PIDs inside a network namespace the bed created (QEMU, gluster bricks...)."""
    done = run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def stop_netns_processes(netns: str, role: str) -> None:
    """End what runs in one of the bed's own network namespaces.

    Only the bed's daemons can have started processes there (QEMU children of
    its libvirtd, glusterd's brick daemons), so they are the bed's to end.
    """
    procs = [Proc(role, pid, st) for pid in netns_pids(netns)
             if (st := start_time(pid)) is not None]
    for proc in procs:
        stop(proc, grace=5.0)


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def foreign_mounts(holder: int, keep: list[str]) -> list[str]:
    """Mounts copied from the machine that belong to other beds.

    A copy of another bed's gluster mount or netns file would keep that bed's
    FUSE client or namespace alive after its own ``down``: drop them here.
    """
    mine = set(keep)
    found = []
    for line in Path(f"/proc/{holder}/mountinfo").read_text().splitlines():
        target = line.split()[4]
        bed_paths = ("/run/netns/", f"{state.DATA_ROOT}/", f"{state.RUN_ROOT}/")
        if target.startswith(bed_paths) and target not in mine:
            found.append(target)
    return sorted(found, key=len, reverse=True)
