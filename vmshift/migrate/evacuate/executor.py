"""Run an evacuation plan: migrations in parallel up to a limit, one shared
bandwidth budget, and a stop on failure or Ctrl-C when asked.

Each VM moves through the migrate engine itself (``job.run_and_judge`` for a
running VM, ``offline.run_offline`` for a shut-off one) in a thread of its
own, with its own connections and the domain's lock. The main thread only
starts jobs, re-splits the budget and watches for signals: a Ctrl-C stops
starting new jobs and, with ``on_interrupt="abort"``, asks each running job's
monitor to abort (a job past a post-copy switch is never aborted; the monitor
knows that).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import libvirt

from vmshift.errors import VmshiftError
from vmshift.libvirtconn import connect
from vmshift.migrate import facts as F
from vmshift.migrate import report
from vmshift.migrate.evacuate.placement import Placement, Plan
from vmshift.migrate.job import run_and_judge
from vmshift.migrate.live import LiveRequest
from vmshift.migrate.lock import domain_lock
from vmshift.migrate.monitor import Interrupt
from vmshift.migrate.offline import OfflineRequest, run_offline
from vmshift.migrate.policy import Settings
from vmshift.output import Progress

POLL_S = 0.2


@dataclass
class RunOptions:
    max_parallel: int = 2
    bandwidth_mib: int | None = None  # the budget shared by the running migrations
    policy: str = "adaptive"
    settings: Settings = field(default_factory=Settings)
    migrate_uris: dict[str, str | None] = field(default_factory=dict)  # target URI -> stream
    live_extra: dict[str, Any] = field(default_factory=dict)  # LiveRequest fields
    offline: OfflineRequest = field(default_factory=lambda: OfflineRequest("", None))
    recover_timeout: float = 300.0
    on_failure: str = "continue"  # continue | stop
    on_interrupt: str = "finish"  # finish | abort
    json_mode: bool = False


@dataclass
class Outcome:
    """What happened to one VM of the plan."""

    vm: str
    target: str
    target_uri: str
    mode: str  # live | offline
    outcome: str = "not started"  # moved | failed | not started
    started_s: float | None = None  # since the evacuation began
    ended_s: float | None = None
    time_s: float | None = None
    bytes: int | None = None
    downtime_ms: int | None = None
    error: str | None = None
    where: str | None = None  # where the VM is, in the migrate engine's words
    bandwidth_mib: list[int] = field(default_factory=list)  # each share it was given

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Running:
    placement: Placement
    outcome: Outcome
    slot: int  # its progress bar's line (the host total is line 0)
    interrupt: Interrupt = field(default_factory=Interrupt)
    thread: threading.Thread | None = None
    request: LiveRequest | None = None
    dom: libvirt.virDomain | None = None  # set by the job once it has the domain


class Evacuation:
    def __init__(self, plan: Plan, source_uri: str, o: RunOptions) -> None:
        self.plan, self.source_uri, self.o = plan, source_uri, o
        self.outcomes = [Outcome(p.guest.name, p.target.name, p.target.uri,
                                 "live" if p.guest.running else "offline")
                         for p in plan.placements]
        self.peak_parallel = 0
        self.stopped_by: str | None = None  # "failure" | "signal N"
        self._t0 = 0.0
        self._slots = list(range(o.max_parallel))

    def run(self) -> list[Outcome]:
        """Run every placement; return each VM's outcome (in plan order)."""
        self._t0 = time.monotonic()
        pending = deque(zip(self.plan.placements, self.outcomes, strict=True))
        running: list[_Running] = []
        total = Progress(f"evacuate {len(pending)} VM(s)", len(pending), unit="VM",
                         json_mode=self.o.json_mode, position=0)
        with total, Interrupt().trapped() as signalled:
            while pending or running:
                self._on_signal(signalled, running)
                batch = []
                while pending and len(running) < self.o.max_parallel and not self.stopped_by:
                    batch.append(self._prepare(*pending.popleft()))
                    running.append(batch[-1])
                self.peak_parallel = max(self.peak_parallel, len(running))
                # One re-split per round, after the ends and the starts: a share
                # never jumps up for an instant between one job and the next.
                self._resplit(running)
                for r in batch:  # each starts with its share already in its request
                    r.outcome.started_s = round(time.monotonic() - self._t0, 2)
                    assert r.thread is not None
                    r.thread.start()
                if self.stopped_by and not running:
                    break
                _wait(running)
                for r in [r for r in running if not _alive(r)]:
                    running.remove(r)
                    self._slots.append(r.slot)
                    total.update_to(total.done + 1)
                    if r.outcome.outcome == "failed" and self.o.on_failure == "stop":
                        self.stopped_by = self.stopped_by or "failure"
        return self.outcomes

    def _on_signal(self, signalled: Interrupt, running: list[_Running]) -> None:
        """Ctrl-C: start no more. The running jobs are aborted with --on-interrupt
        abort, or at a second Ctrl-C (never after a post-copy switch)."""
        if signalled.signal is None:
            return
        self.stopped_by = f"signal {signalled.signal}"
        if self.o.on_interrupt == "abort" or signalled.count >= 2:
            for r in running:  # each job's monitor aborts
                if r.interrupt.signal is None:
                    r.interrupt.signal = signalled.signal

    def _prepare(self, p: Placement, out: Outcome) -> _Running:
        self._slots.sort()
        r = _Running(p, out, self._slots.pop(0))
        if p.guest.running:
            r.request = self._live_request(p)
        r.thread = threading.Thread(target=self._job, args=(r, r.slot + 1), daemon=True,
                                    name=f"evacuate-{p.guest.name}")
        return r

    def _live_request(self, p: Placement) -> LiveRequest:
        return LiveRequest(domain=p.guest.name, source=self.source_uri, dest=p.target.uri,
                           policy=self.o.policy, settings=self.o.settings,
                           bandwidth_mib=self.o.bandwidth_mib,
                           migrate_uri=self.o.migrate_uris.get(p.target.uri),
                           **self.o.live_extra)

    def _resplit(self, running: list[_Running]) -> None:
        """Give each running live migration an equal share of the budget:
        set before its job starts (the request), or live on QEMU's job."""
        live = [r for r in running if r.request is not None]
        if self.o.bandwidth_mib is None or not live:
            return
        share = max(1, self.o.bandwidth_mib // len(live))
        for r in live:
            if r.outcome.bandwidth_mib[-1:] == [share]:
                continue
            r.outcome.bandwidth_mib.append(share)
            assert r.request is not None
            r.request.bandwidth_mib = share
            if r.dom is not None:
                _set_speed(r.dom, share, r.request.settings.postcopy)

    def _job(self, r: _Running, position: int) -> None:
        out = r.outcome
        try:
            if r.request is not None:
                self._live(r, position)
            else:
                self._offline(r)
        except VmshiftError as exc:
            out.outcome, out.error = "failed", exc.message
            out.where = out.where or "not moved: the VM stays on the source"
        except libvirt.libvirtError as exc:
            out.outcome, out.error = "failed", exc.get_error_message()
        except Exception as exc:  # reported with the VM, never lost in a thread
            out.outcome, out.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            out.ended_s = round(time.monotonic() - self._t0, 2)

    def _live(self, r: _Running, position: int) -> None:
        assert r.request is not None
        req, out = r.request, r.outcome
        src = connect(self.source_uri, role="source")
        try:
            dst = connect(req.dest, role="target")
            try:
                dom = F.lookup_domain(src, req.domain)
                with domain_lock(dom.UUIDString(), req.domain, f"evacuate -> {req.dest}"):
                    r.dom = dom
                    rep = report.Report(req.domain, "live", self.source_uri, req.dest,
                                        ok=False, policy=req.policy)
                    run_and_judge(rep, req, src, dst, dom, True, self.o.recover_timeout,
                                  self.o.json_mode, r.interrupt, position)
                _fill(out, rep)
            finally:
                dst.close()
        finally:
            src.close()

    def _offline(self, r: _Running) -> None:
        p, out = r.placement, r.outcome
        o = self.o.offline
        req = OfflineRequest(p.guest.name, o.dest_pool, o.network_map)
        src = connect(self.source_uri, role="source")
        try:
            dst = connect(p.target.uri, role="target")
            try:
                dom = F.lookup_domain(src, p.guest.name)
                with domain_lock(dom.UUIDString(), p.guest.name, f"evacuate -> {p.target.uri}"):
                    t0 = time.monotonic()
                    dfacts = F.domain_facts(dom, src, dst)
                    res = run_offline(req, src, dst, dom, dfacts, self.o.json_mode)
                out.time_s = round(time.monotonic() - t0, 2)
                out.bytes = sum(c.bytes for c in res.copied)
                out.outcome, out.where = "moved", "defined on the target (shut off)"
            finally:
                dst.close()
        finally:
            src.close()


def _alive(r: _Running) -> bool:
    return r.thread is not None and r.thread.is_alive()


def _wait(running: list[_Running]) -> None:
    """Up to POLL_S for the oldest job, so signals and ends are seen promptly."""
    if running and running[0].thread is not None:
        running[0].thread.join(POLL_S)


def _fill(out: Outcome, rep: report.Report) -> None:
    out.time_s, out.bytes, out.downtime_ms = rep.total_time_s, rep.bytes_transferred, \
        rep.downtime_ms
    out.where = rep.where
    if rep.ok:
        out.outcome = "moved"
    else:
        out.outcome, out.error = "failed", f"({rep.category}) {rep.error}"


def _set_speed(dom: libvirt.virDomain, mib: int, postcopy: bool) -> None:
    """A running job's new share; best effort (the job may just have ended)."""
    flags = [0] + ([libvirt.VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY] if postcopy else [])
    for flag in flags:
        try:
            dom.migrateSetMaxSpeed(mib, flag)
        except libvirt.libvirtError:
            pass
