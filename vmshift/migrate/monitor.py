"""The monitor loop: read libvirt job statistics, ask the policy, apply.

The migration call itself blocks in a worker thread; this loop runs in the
main thread, so Ctrl-C and SIGTERM land here and abort the job cleanly
(abortJob), which leaves the VM running on the source.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import libvirt

from vmshift.migrate.jobevents import PassWatch
from vmshift.migrate.policy import (
    Action,
    Kind,
    Policy,
    Sample,
    Settings,
    initial_downtime_ms,
)
from vmshift.output import Progress
from vmshift.units import MiB

log = logging.getLogger(__name__)
POLL_S = 0.5
# No byte moved for this long: the link or the destination is gone. QEMU
# would otherwise wait for TCP to give up (minutes), the guest still fine.
STALL_S = 15.0
# Until the first byte moves, libvirt is still setting the job up: the
# destination starts its QEMU (seconds on a loaded host, minutes when it
# preallocates large memory) and the two QEMUs connect (with --tls, a
# handshake). A stall then is only declared after this much longer wait.
SETUP_S = 120.0
VCPU_PERIOD_US = 100_000


@dataclass
class Applied:
    t: float
    kind: str
    value: int | None
    reason: str
    ok: bool = True
    error: str | None = None


@dataclass
class MonitorState:
    downtime_ms: int
    throttle: int = 0
    downtime_set: bool = False  # a policy's limit took effect
    postcopy: bool = False
    paused: bool = False
    aborted_by: str | None = None  # "signal", "timeout", "stall", "postcopy-stall"
    actions: list[Applied] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    last_stats: dict[str, Any] = field(default_factory=dict)
    job_seen: bool = False
    qemu_throttles: bool = False
    progress_bytes: int = -1
    progress_at: float = 0.0
    stalled_s: float = 0.0  # how long nothing had moved when the monitor gave up
    interrupted: int | None = None  # the signal the user sent, whether or not it aborted


def to_sample(stats: dict[str, Any], st: MonitorState, elapsed: float) -> Sample:
    page = int(stats.get("memory_page_size", 4096) or 4096)
    return Sample(
        elapsed=elapsed, memory_total=int(stats.get("memory_total", 0)),
        memory_remaining=int(stats.get("memory_remaining", 0)),
        dirty_rate=float(stats.get("memory_dirty_rate", 0)) * page,
        transfer_rate=float(stats.get("memory_bps", 0)),
        iteration=int(stats.get("memory_iteration", 1) or 1),
        expected_downtime_ms=stats.get("downtime"),
        disk_remaining=int(stats.get("disk_remaining", 0)),
        downtime_limit_ms=st.downtime_ms, downtime_set=st.downtime_set,
        # QEMU's own auto-converge (the fallback) reports its throttle here
        throttle_pct=max(st.throttle, int(stats.get("auto_converge_throttle", 0) or 0)),
        postcopy_active=st.postcopy, paused=st.paused)


def job_active(stats: dict[str, Any]) -> bool:
    return stats.get("type") in (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)


def active_job_stats(dom: libvirt.virDomain) -> dict[str, Any] | None:
    """The running job's statistics; None when there is none (not started
    yet, finished) or libvirt did not answer this time."""
    try:
        stats = dom.jobStats(0)
    except libvirt.libvirtError:
        return None
    return stats if job_active(stats) else None


def set_throttle(dom: libvirt.virDomain, pct: int) -> None:
    """Slow the guest's vCPUs to (100 - pct) % through the cgroup quota:
    a throttle vmshift controls at run time (QEMU's own auto-converge can
    only be switched on before the job starts)."""
    quota = -1 if pct <= 0 else max(1000, VCPU_PERIOD_US * (100 - pct) // 100)
    dom.setSchedulerParametersFlags({"vcpu_period": VCPU_PERIOD_US, "vcpu_quota": quota},
                                    libvirt.VIR_DOMAIN_AFFECT_LIVE)


def apply(dom: libvirt.virDomain, act: Action, st: MonitorState, rec: Applied) -> None:
    """Carry out ACT; REC, already in the report, gets the outcome."""
    try:
        if act.kind == Kind.SET_DOWNTIME and act.value is not None:
            dom.migrateSetMaxDowntime(act.value, 0)
            st.downtime_ms, st.downtime_set = act.value, True
        elif act.kind == Kind.THROTTLE and act.value is not None:
            if st.qemu_throttles:
                # The vCPU quota is unavailable (no cgroup CPU controller): the
                # job runs with QEMU's auto-converge, which does the throttling.
                rec.reason += " (delegated to QEMU auto-converge)"
            else:
                set_throttle(dom, act.value)
                st.throttle = act.value
        elif act.kind == Kind.POSTCOPY:
            dom.migrateStartPostCopy(0)
            st.postcopy = True
        elif act.kind == Kind.PAUSE:
            dom.suspend()
            st.paused = True
        elif act.kind == Kind.ABORT:
            st.aborted_by = st.aborted_by or "timeout"
            dom.abortJob()
    except libvirt.libvirtError as exc:
        rec.ok, rec.error = False, exc.get_error_message()
        log.warning("%s failed: %s", act.kind.value, rec.error)


def pause_postcopy(dom: libvirt.virDomain, t: float, reason: str) -> Applied:
    """Pause a post-copy job whose link died (QEMU's migrate-pause): both
    sides then wait in 'postcopy-paused', the state libvirt's post-copy
    recovery resumes from; otherwise QEMU waits for TCP to give up (minutes)."""
    rec = Applied(round(t, 2), "pause_postcopy", None, reason)
    try:
        dom.abortJobFlags(libvirt.VIR_DOMAIN_ABORT_JOB_POSTCOPY)
    except libvirt.libvirtError as exc:
        rec.ok, rec.error = False, exc.get_error_message()
        log.warning("pausing the post-copy job failed: %s", rec.error)
    return rec


class Actuator:
    """Runs the policy's libvirt calls in a thread of their own, in order.

    libvirt sometimes holds a migrateSetMaxDowntime call until the whole job
    ends (seen on the test bed in about one migration in ten), and the
    monitor must keep polling, noticing a stall and honouring Ctrl-C meanwhile.
    """

    def __init__(self) -> None:
        self._q: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="vmshift-actions", daemon=True)
        self._thread.start()

    def submit(self, call: Callable[[], None]) -> None:
        with self._lock:
            self._pending += 1
        self._q.put(call)

    def idle(self) -> bool:
        with self._lock:
            return self._pending == 0

    def _run(self) -> None:
        while (call := self._q.get()) is not None:
            try:
                call()
            finally:
                with self._lock:
                    self._pending -= 1

    def close(self, timeout: float = 5.0) -> None:
        """Stop after what is queued; a call libvirt still holds is left to
        finish on its own (the thread is a daemon)."""
        self._q.put(None)
        self._thread.join(timeout)


class Interrupt:
    """Set by the SIGINT/SIGTERM handler; the loop aborts the job."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self.count = 0  # signals received: a second Ctrl-C escalates where "finish" was asked

    def __call__(self, signum: int, frame: object) -> None:
        self.signal = signum
        self.count += 1

    @contextmanager
    def trapped(self) -> Iterator[Interrupt]:
        """Record SIGINT/SIGTERM instead of raising, for the whole block: a
        migration's job, its post-copy recovery and the report after it, so
        that no Ctrl-C in between loses the word on where the guest is."""
        old = {s: signal.signal(s, self) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def monitor(dom: libvirt.virDomain, worker: threading.Thread, policy: Policy, s: Settings,
            interrupt: Interrupt, bar: Progress | None, t0: float,
            qemu_throttles: bool = False, wake: PassWatch | None = None) -> MonitorState:
    """Poll until the migration thread ends; WAKE (when given) cuts a poll
    short when a pre-copy pass begins or the job ends."""
    st = MonitorState(downtime_ms=initial_downtime_ms(s), qemu_throttles=qemu_throttles)
    actuator = Actuator()
    aborting = False
    while worker.is_alive():
        if wake is not None:
            wake.wait(POLL_S)
        else:
            worker.join(POLL_S)
        if not worker.is_alive():
            break
        elapsed = time.monotonic() - t0
        if interrupt.signal is not None and st.interrupted is None:
            st.interrupted = interrupt.signal
            if st.postcopy:
                # Keep watching: a stall must still be paused, or QEMU waits
                # for TCP to give up; recovery then sees the signal and stops.
                log.warning("interrupted after the post-copy switch: the guest already runs "
                            "on the destination, not aborting")
            elif not aborting:
                aborting = True
                st.aborted_by = "signal"
                if _abort_job(dom):
                    st.actions.append(Applied(round(elapsed, 2), "abort", None,
                                              f"signal {interrupt.signal}"))
                continue
        stats = active_job_stats(dom)
        if stats is None:
            continue
        if not st.job_seen:
            st.job_seen = True
            actuator.submit(lambda t=elapsed: _apply_initial(dom, st, t))
        st.last_stats = stats
        st.samples.append(to_sample(stats, st, elapsed))
        _trace(stats, st)
        if not aborting and stalled(st, elapsed):
            aborting = True
            _on_stall(dom, st, elapsed)
        if bar is not None:
            _show(bar, stats, st)
        if aborting:
            continue
        if not actuator.idle():
            continue  # the policy sees the effect of its last actions first
        for act in policy(st.samples, s, elapsed):
            rec = Applied(round(elapsed, 2), act.kind.value, act.value, act.reason)
            st.actions.append(rec)  # in the policy's order, whenever libvirt answers
            if act.kind == Kind.ABORT:
                apply(dom, act, st, rec)  # at once, never queued behind a stuck call
                aborting = True
            else:
                actuator.submit(lambda a=act, r=rec: apply(dom, a, st, r))
    actuator.close()
    return st


def _on_stall(dom: libvirt.virDomain, st: MonitorState, elapsed: float) -> None:
    """No byte moved for too long: abort a pre-copy job (the VM stays on the
    source). Never abort after the switch (the guest runs on the
    destination): pause, so that vmshift's recovery can resume it."""
    if st.postcopy:
        st.aborted_by = "postcopy-stall"
        st.actions.append(pause_postcopy(
            dom, elapsed, f"network: no progress for {st.stalled_s:.0f} s after the switch"))
        return
    st.aborted_by = "stall"
    st.actions.append(Applied(round(elapsed, 2), "abort", None, stall_reason(st)))
    _abort_job(dom)


def stall_reason(st: MonitorState) -> str:
    setup = " (no byte moved since the job started)" if st.progress_bytes <= 0 else ""
    return f"network: no progress for {st.stalled_s:.0f} s{setup}"


def _abort_job(dom: libvirt.virDomain) -> bool:
    """Abort a pre-copy job (the VM stays on the source); False if libvirt refused."""
    try:
        dom.abortJob()
    except libvirt.libvirtError as exc:
        log.warning("abortJob failed: %s", exc.get_error_message())
        return False
    return True


def _trace(stats: dict[str, Any], st: MonitorState) -> None:
    """VMSHIFT_MIGRATE_TRACE=FILE: every sample as a JSON line, to replay the
    policy offline against what libvirt really reported."""
    path = os.environ.get("VMSHIFT_MIGRATE_TRACE")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"stats": stats, "sample": asdict(st.samples[-1])}) + "\n")


def _progress(stats: dict[str, Any]) -> int:
    return int(stats.get("memory_processed", 0)) + int(stats.get("disk_processed", 0))


def stalled(st: MonitorState, now: float) -> bool:
    """True when the transferred byte count has not moved for STALL_S, or
    for SETUP_S while none has moved yet."""
    current = _progress(st.last_stats)
    if current != st.progress_bytes:
        st.progress_bytes, st.progress_at = current, now
        return False
    st.stalled_s = now - st.progress_at
    return st.stalled_s >= (SETUP_S if current <= 0 else STALL_S)


def _apply_initial(dom: libvirt.virDomain, st: MonitorState, t: float) -> None:
    try:
        dom.migrateSetMaxDowntime(st.downtime_ms, 0)
    except libvirt.libvirtError as exc:
        log.warning("cannot set the initial downtime: %s", exc.get_error_message())


def _show(bar: Progress, stats: dict[str, Any], st: MonitorState) -> None:
    page = int(stats.get("memory_page_size", 4096) or 4096)
    done = int(stats.get("memory_processed", 0)) + int(stats.get("disk_processed", 0))
    total = int(stats.get("memory_total", 0)) + int(stats.get("disk_total", 0))
    if total and bar.total != total:
        bar.total = total
        if bar._bar is not None:
            bar._bar.total = total
    bar.update_to(done, mem_left=f"{int(stats.get('memory_remaining', 0)) // MiB}M",
                  disk_left=f"{int(stats.get('disk_remaining', 0)) // MiB}M",
                  rate=f"{int(stats.get('memory_bps', 0)) // MiB}M/s",
                  dirty=f"{int(stats.get('memory_dirty_rate', 0)) * page // MiB}M/s",
                  iter=int(stats.get("memory_iteration", 0) or 0),
                  exp_downtime=f"{stats.get('downtime', '?')}ms",
                  limit=f"{st.downtime_ms}ms")
