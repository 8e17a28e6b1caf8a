"""The schedule `vmshift plan show` prints: when each row of a valid plan would
start and end, as `plan run` would run it (docs/plan.md).

A pure function of the parsed plan, the sizes known and the limits, so it is
tested without hosts. Waves run one after another, in plan order except that
a wave comes after every wave it depends on. Within a wave rows start as soon
as a slot is free: at most ``max_parallel`` at once and ``max_per_source``
per source host, the highest priority first (then the plan's order), never
before their window opens. A row whose window closes before it can start is
not started; one that would end after its window closes is started and
reported as not fitting. Times are seconds from the plan's start.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vmshift.plan.estimate import (
    DEFAULT_DISK,
    DEFAULT_MEMORY,
    Estimate,
    Size,
    estimate,
    source_host,
)
from vmshift.plan.schema import PlanRow
from vmshift.units import human


@dataclass(frozen=True)
class Limits:
    max_parallel: int = 2
    max_per_source: int = 1


@dataclass(frozen=True)
class Job:
    """What the scheduler needs of a row."""

    index: int  # position in the plan (ties after priority)
    wave: str
    source: str  # the source host --max-per-source counts
    duration: float
    priority: int = 0
    opens: float | None = None  # window start, seconds from the plan's start
    closes: float | None = None  # window end


@dataclass
class Slot:
    job: Job
    start: float | None = None  # None: never started (its window closed first)
    end: float | None = None
    ready: float = 0.0  # when a slot was first free for it (its wave's start at least)

    @property
    def fits(self) -> bool:
        if self.end is None:  # never started
            return False
        return self.job.closes is None or self.end <= self.job.closes


@dataclass
class WaveSlot:
    name: str
    depends_on: list[str]
    start: float
    end: float
    slots: list[Slot] = field(default_factory=list)


def wave_order(jobs: list[Job], depends: Mapping[str, set[str]]) -> list[str]:
    """Waves in order of first appearance, moved after the waves they depend on
    (a cycle, which validation refuses, leaves the rest in plan order)."""
    first = list(dict.fromkeys(j.wave for j in jobs))
    rank = {w: i for i, w in enumerate(first)}
    waiting = {w: {d for d in depends.get(w, ()) if d in rank and d != w} for w in first}
    needed_by: dict[str, list[str]] = {}
    for wave, deps in waiting.items():
        for dep in deps:
            needed_by.setdefault(dep, []).append(wave)
    ready = [rank[w] for w in first if not waiting[w]]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        wave = first[heapq.heappop(ready)]
        order.append(wave)
        for other in needed_by.get(wave, ()):
            waiting[other].discard(wave)
            if not waiting[other]:
                heapq.heappush(ready, rank[other])
    done = set(order)
    return order + [w for w in first if w not in done]


def schedule_wave(jobs: list[Job], start: float, limits: Limits) -> list[Slot]:
    """List scheduling from START: at each moment, start the best rows that are
    ready (window open) and whose source host has room, up to the limits."""
    slots = [Slot(j, ready=start) for j in jobs]
    pending = [(max(start, j.opens or start), -j.priority, j.index, k)
               for k, j in enumerate(jobs)]
    heapq.heapify(pending)
    ready: list[tuple[int, int, int]] = []
    blocked: dict[str, list[tuple[int, int, int]]] = {}  # waiting for their source
    running: list[tuple[float, int]] = []
    per_source: dict[str, int] = {}
    now = start
    while pending or ready or running:
        while pending and pending[0][0] <= now:
            _, prio, index, k = heapq.heappop(pending)
            heapq.heappush(ready, (prio, index, k))
        while ready and len(running) < limits.max_parallel:
            item = heapq.heappop(ready)
            slot = slots[item[2]]
            job = slot.job
            slot.ready = now
            if job.closes is not None and now >= job.closes:
                continue  # its window closed before it could start: never started
            if per_source.get(job.source, 0) >= limits.max_per_source:
                blocked.setdefault(job.source, []).append(item)
                continue
            slot.start, slot.end = now, now + job.duration
            per_source[job.source] = per_source.get(job.source, 0) + 1
            heapq.heappush(running, (slot.end, item[2]))
        upcoming = [t for t in (running[0][0] if running else None,
                                pending[0][0] if pending else None) if t is not None]
        if not upcoming:
            break
        now = min(upcoming)
        while running and running[0][0] <= now:
            source = slots[heapq.heappop(running)[1]].job.source
            per_source[source] -= 1
            for item in blocked.pop(source, []):
                heapq.heappush(ready, item)
    return slots


def schedule(jobs: list[Job], depends: Mapping[str, set[str]], limits: Limits
             ) -> list[WaveSlot]:
    """Every wave in order, each starting when the one before it ends."""
    by_wave: dict[str, list[Job]] = {}
    for job in jobs:
        by_wave.setdefault(job.wave, []).append(job)
    out = []
    now = 0.0
    for wave in wave_order(jobs, depends):
        slots = schedule_wave(by_wave[wave], now, limits)
        end = max((s.end for s in slots if s.end is not None), default=now)
        out.append(WaveSlot(wave, sorted(depends.get(wave, ())), now, end, slots))
        now = end
    return out


# --- from a plan ----------------------------------------------------------------

@dataclass
class PlanSchedule:
    start: datetime
    limits: Limits
    waves: list[WaveSlot]
    rows: list[PlanRow]
    estimates: list[Estimate]

    @property
    def end(self) -> float:
        return self.waves[-1].end if self.waves else 0.0

    def at(self, offset: float) -> datetime:
        return self.start + timedelta(seconds=offset)

    def not_fitting(self) -> int:
        return sum(not s.fits for w in self.waves for s in w.slots)

    def why(self, slot: Slot) -> str | None:
        """Why a row does not fit its window, or None."""
        job = slot.job
        if slot.fits or job.closes is None:
            return None
        closes = self.at(job.closes).isoformat(timespec="seconds")
        if slot.end is None:
            return (f"its window closes at {closes}, before a slot is free for it "
                    f"({self.at(slot.ready).isoformat(timespec='seconds')})")
        late = clock(slot.end - job.closes)
        return f"needs {clock(job.duration)}; it would end {late} after its window " \
               f"closes at {closes}"


def _offset(moment: datetime | None, start: datetime) -> float | None:
    return None if moment is None else (moment - start).total_seconds()


def plan_schedule(rows: list[PlanRow], start: datetime, limits: Limits,
                  sizes: Mapping[tuple[str, str], Size] | None = None,
                  bandwidth: int | None = None) -> PlanSchedule:
    """The schedule of a valid plan's ROWS from START. SIZES: what hosts reported,
    by (source URI, domain); BANDWIDTH: --bandwidth, for rows without one."""
    sizes = sizes or {}
    estimates, jobs = [], []
    depends: dict[str, set[str]] = {}
    for index, row in enumerate(rows):
        key = (row.source.text, row.vm or "") if row.source else ("", "")
        est = estimate(row, sizes.get(key), bandwidth)
        estimates.append(est)
        wave = row.wave or ""
        depends.setdefault(wave, set()).update(row.depends_on)
        jobs.append(Job(index, wave, source_host(row), est.seconds, row.priority,
                        _offset(row.window_start, start), _offset(row.window_end, start)))
    return PlanSchedule(start, limits, schedule(jobs, depends, limits), rows, estimates)


def clock(seconds: float) -> str:
    """H:MM:SS (hours may pass 24), rounded up to the second."""
    whole = int(-(-seconds // 1))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


# --- output ---------------------------------------------------------------------

def _when(sched: PlanSchedule, offset: float | None) -> dict[str, object]:
    if offset is None:
        return {"offset_s": None, "at": None}
    return {"offset_s": round(offset, 1), "at": sched.at(offset).isoformat(timespec="seconds")}


def _in_order(wave: WaveSlot) -> list[Slot]:
    """By start; rows never started last."""
    return sorted(wave.slots, key=lambda s: (s.start is None, s.start or 0.0, s.job.index))


def document(sched: PlanSchedule) -> dict[str, object]:
    """The plan_schedule document's payload (docs/plan.md)."""
    waves = []
    for wave in sched.waves:
        rows = []
        for slot in _in_order(wave):
            row, est = sched.rows[slot.job.index], sched.estimates[slot.job.index]
            rows.append({"line": row.line, "vm": row.vm, "type": row.type,
                         "source_host": slot.job.source, "priority": row.priority,
                         "start": _when(sched, slot.start), "end": _when(sched, slot.end),
                         "duration_s": round(est.seconds, 1), "estimate": est,
                         "fits": slot.fits, "why": sched.why(slot)})
        waves.append({"wave": wave.name, "depends_on": wave.depends_on,
                      "start": _when(sched, wave.start), "end": _when(sched, wave.end),
                      "rows": rows})
    return {"start": sched.start.isoformat(timespec="seconds"),
            "limits": {"max_parallel": sched.limits.max_parallel,
                       "max_per_source": sched.limits.max_per_source},
            "waves": waves,
            "total": {"rows": len(sched.rows), "waves": len(sched.waves),
                      "duration_s": round(sched.end, 1),
                      "end": sched.at(sched.end).isoformat(timespec="seconds"),
                      "not_fitting": sched.not_fitting(),
                      "assumed": sum(e.assumed for e in sched.estimates)}}


def text(sched: PlanSchedule) -> list[str]:
    """The schedule for people: a table per wave, then the total."""
    from vmshift.output import table

    out: list[str] = []
    header = ["line", "vm", "type", "source host", "start", "at", "duration", "end",
              "window"]
    for wave in sched.waves:
        after = f", after {', '.join(wave.depends_on)}" if wave.depends_on else ""
        out.append(f"wave {wave.name}{after}: +{clock(wave.start)} .. +{clock(wave.end)} "
                   f"({_iso(sched, wave.start)} .. {_iso(sched, wave.end)})")
        rows = []
        for slot in _in_order(wave):
            row, est = sched.rows[slot.job.index], sched.estimates[slot.job.index]
            rows.append([str(row.line), row.vm or "", row.type or "", slot.job.source,
                         _plus(slot.start), _iso(sched, slot.start),
                         clock(est.seconds) + ("*" if est.assumed else ""), _plus(slot.end),
                         "fits" if slot.fits else f"NO: {sched.why(slot)}"])
        out += ["  " + line for line in table(rows, header)] + [""]
    assumed = sum(e.assumed for e in sched.estimates)
    out.append(f"total: {len(sched.rows)} VMs in {len(sched.waves)} waves, "
               f"{clock(sched.end)}, ends {_iso(sched, sched.end)}; "
               f"{sched.not_fitting()} not fitting their window")
    if assumed:
        out.append(f"* {assumed} estimates from assumed sizes (--offline, or a source "
                   f"that is not a libvirt host): memory {human(DEFAULT_MEMORY)}, disks "
                   f"{human(DEFAULT_DISK)}")
    return out


def _plus(offset: float | None) -> str:
    return "-" if offset is None else "+" + clock(offset)


def _iso(sched: PlanSchedule, offset: float | None) -> str:
    return "-" if offset is None else sched.at(offset).isoformat(timespec="seconds")
