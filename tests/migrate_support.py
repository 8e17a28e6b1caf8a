"""Helpers shared by the migrate tests: run the real CLI, read libvirt state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt

from vmshift.testbed import libvirthost, procs, state
from vmshift.testbed.hosts import TestHost

VMSHIFT = str(Path(sys.executable).parent / "vmshift")
MiB = 1 << 20


@dataclass
class Run:
    rc: int
    doc: dict[str, Any] | None
    out: str
    err: str


def vmshift(*args: str, timeout: float = 240, env: dict[str, str] | None = None) -> Run:
    p = subprocess.run([VMSHIFT, *args], capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})})
    return Run(p.returncode, _doc(p.stdout), p.stdout, p.stderr)


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([VMSHIFT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(p: subprocess.Popen[str], timeout: float = 180) -> Run:
    """Wait for a vmshift started by start(); see overdue() for one that
    outlives TIMEOUT."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise overdue(p, timeout, lambda: p.communicate()[1]) from None
    return Run(p.returncode, _doc(out), out, err)


def overdue(p: subprocess.Popen[str], timeout: float,
            read_stderr: Callable[[], str]) -> AssertionError:
    """Kill P, which outlived TIMEOUT (no process of the test's is left
    behind); the failure carries its last words, stderr without progress."""
    p.kill()
    p.wait()
    lines = [x for x in read_stderr().splitlines() if not x.startswith('{"event": "progress"')]
    return AssertionError(f"vmshift still running after {timeout:g} s; its stderr "
                          "without progress lines ends: " + "\n".join(lines[-25:]))


def _doc(out: str) -> dict[str, Any] | None:
    try:
        return json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        return None


def migrate_args(mode: str, name: str, a: TestHost, b: TestHost, *extra: str) -> list[str]:
    return ["migrate", mode, name, "--source", a.uri, "--dest", b.uri,
            "--migrate-uri", b.migrate_uri, "--json", *extra]


def state_on(host: TestHost, name: str) -> tuple[bool, bool] | None:
    """(active, persistent) of NAME on HOST, or None when it is not there."""
    conn = host.connect()
    try:
        dom = conn.lookupByName(name)
        return bool(dom.isActive()), bool(dom.isPersistent())
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def wait_job_active(host: TestHost, name: str, timeout: float = 30,
                    min_bytes: int = 8 * MiB) -> dict[str, Any]:
    """Block until NAME has a migration job that has moved MIN_BYTES; returns
    the job stats (the proof that the fault strikes a running job)."""
    conn = host.connect()
    try:
        dom = conn.lookupByName(name)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            stats = dom.jobStats(0)
            if stats.get("type") in (libvirt.VIR_DOMAIN_JOB_BOUNDED,
                                     libvirt.VIR_DOMAIN_JOB_UNBOUNDED) \
                    and stats.get("memory_processed", 0) + stats.get("disk_processed", 0) \
                    >= min_bytes:
                return stats
            time.sleep(0.2)
        raise AssertionError(f"no active migration job for {name} within {timeout} s")
    finally:
        conn.close()


def qemu_img_identical(a: str, b: str) -> bool:
    p = subprocess.run(["qemu-img", "compare", "-U", a, b], capture_output=True, text=True,
                       timeout=120)
    return p.returncode == 0


def daemon_logs(*hosts: TestHost, lines: int = 40) -> str:
    """The last lines of each host's libvirtd log and of its QEMU logs, for a
    failure message: the bed goes away with its logs when the run ends."""
    parts = []
    for h in hosts:
        logdir = state.data_dir(h.bed) / h.name / "log"
        for log in [logdir / "libvirtd.log", *sorted(logdir.glob("qemu/*.log"))]:
            text = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {h.bed}/{h.name} {log.relative_to(logdir)}\n" + "\n".join(text))
    return "\n".join(parts)


def libvirtd_pid(bed: str, host_name: str) -> int:
    st = state.read_state(bed)
    return int(next(x for x in st["hosts"] if x["name"] == host_name)["libvirtd"]["pid"])


def restart_libvirtd(bed: str, host_name: str, stop_first: bool = False) -> None:
    """Repair: start the host's libvirtd again in its namespaces (the holder
    process keeping them is untouched) and record the new PID in the state.
    STOP_FIRST: end the running one first."""
    st = state.read_state(bed)
    h = next(x for x in st["hosts"] if x["name"] == host_name)
    if stop_first:
        procs.stop(procs.Proc(**h["libvirtd"]))
    if procs.alive(procs.Proc(**h["libvirtd"])):
        return
    daemon = libvirthost.start_libvirtd(procs.Proc(**h["holder"]), Path(h["dir"]))
    h["libvirtd"] = daemon.to_dict()
    state.write_state(st)
    conn = libvirthost.wait_connect(f"qemu+tcp://{h['address']}/system", daemon,
                                    Path(h["dir"]) / "log" / "libvirtd.log")
    conn.close()


def peak_overlap(spans: Iterable[tuple[Any, Any]]) -> int:
    """The most (start, end) intervals open at once; an end and a start at the
    same moment do not overlap. Times of any ordered kind (seconds, ISO text)."""
    edges = sorted([e for s, t in spans for e in ((s, 1), (t, -1))], key=lambda e: (e[0], e[1]))
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def remove_converted(host: TestHost, name: str) -> None:
    """Undefine NAME on HOST and delete its volumes from the host's private pool
    (what `convert vm --output libvirt --pool PRIVATE --name NAME` made)."""
    from vmshift.convert.vm.output import remove_domain

    conn = host.connect()
    try:
        remove_domain(conn, name)
        pool = conn.storagePoolLookupByName(host.private_pool)
        pool.refresh(0)
        for vol in pool.listVolumes():
            if vol.startswith(name):
                pool.storageVolLookupByName(vol).delete(0)
    finally:
        conn.close()
