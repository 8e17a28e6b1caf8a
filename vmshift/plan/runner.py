"""`vmshift plan run`: the waves of a valid plan, through an executor, with every
move of every row recorded in the state first (docs/plan.md, "plan run").

The runner owns the state machine and the schedule; an executor (the local
one by default) only carries out what it is handed. In order:

1. rows left running by a runner that died are reconciled: an execution still
   running is waited for, one that ended is judged by its result, one that left
   no result by reality (vmshift.plan.reality);
2. rows that failed or were skipped in an earlier run get a new chance;
3. the waves run in order (a wave after those it depends on); within a wave a
   row starts when a slot is free (``max_parallel``, ``max_per_source``), its
   window is open and its backoff has passed, the highest priority first.

A row is never started outside its window: it waits for it to open (or is
skipped with ``outside_window="skip"``), and is skipped once it has closed.
A row whose target host is in maintenance is skipped. A failed row is retried
up to ``retries`` times per run, after ``retry_delay`` x 2^(n-1) seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmshift.errors import OperationFailed
from vmshift.migrate.monitor import Interrupt
from vmshift.plan import reality
from vmshift.plan.estimate import source_host
from vmshift.plan.executor import Executor, Outcome, RowRun
from vmshift.plan.schedule import Job, wave_order
from vmshift.plan.schema import PlanRow
from vmshift.plan.state import Key, RunState, key_of, logs_dir
from vmshift.plan.validate import Plan

POLL_S = 0.5


@dataclass(frozen=True)
class Options:
    max_parallel: int = 2
    max_per_source: int = 1
    retries: int = 0
    retry_delay: float = 30.0
    outside_window: str = "wait"  # wait | skip
    on_interrupt: str = "finish"  # finish | abort
    wave: str | None = None  # run only this wave


@dataclass
class Summary:
    """What the run did, for the final report and the exit code."""

    started: list[str] = field(default_factory=list)  # rows started, "wave/vm"
    reconciled: list[dict[str, str]] = field(default_factory=list)
    interrupted: bool = False
    peak_parallel: int = 0


@dataclass
class _Flight:
    row: PlanRow
    handle: str


class Runner:
    def __init__(self, plan: Plan, state: RunState, executor: Executor, opts: Options,
                 argv: Callable[[PlanRow], list[str]],
                 maintenance: Callable[[str], str | None] = lambda uri: None,
                 clock: Callable[[], float] = time.time,
                 progress: Callable[[dict[str, Any]], None] = lambda event: None) -> None:
        self.plan, self.state, self.executor, self.o = plan, state, executor, opts
        self.argv, self.maintenance, self.clock, self.progress = argv, maintenance, clock, \
            progress
        self.rows = {key_of(r): r for r in plan.rows}
        self.position = {key_of(r): i for i, r in enumerate(plan.rows)}
        self.logs = {Key(r["wave"], r["vm"], r["source"]): Path(r["log"])
                     for r in state.rows()}
        self.cancelled: set[Key] = set()
        self.flying: dict[Key, _Flight] = {}
        self.tries: dict[Key, int] = {}  # attempts made in this run
        self.not_before: dict[Key, float] = {}
        self.summary = Summary()
        self.interrupt = Interrupt()

    # --- the run ---------------------------------------------------------------

    def run(self) -> Summary:
        with self.interrupt.trapped():
            self._reconcile()
            for wave in self._waves():
                if self.interrupt.signal is not None:
                    break
                self._run_wave(wave)
            self._drain()
        self.summary.interrupted = self.interrupt.signal is not None
        return self.summary

    def _waves(self) -> list[str]:
        jobs = [Job(i, r.wave or "", source_host(r), 0.0) for i, r in enumerate(self.plan.rows)]
        depends: dict[str, set[str]] = {}
        for r in self.plan.rows:
            depends.setdefault(r.wave or "", set()).update(r.depends_on)
        order = wave_order(jobs, depends)
        return [w for w in order if self.o.wave in (None, w)]

    def _states(self) -> dict[Key, str]:
        return {Key(r["wave"], r["vm"], r["source"]): r["state"] for r in self.state.rows()}

    def _run_wave(self, wave: str) -> None:
        keys = sorted((k for k, r in self.rows.items() if r.wave == wave),
                      key=lambda k: (-self.rows[k].priority, self.position[k]))
        states = self._states()
        for key in keys:
            if states[key] in ("failed", "skipped"):
                self.state.retry(key)  # a new run gives each a new chance
        self._skip_blocked(keys)
        while self.interrupt.signal is None:
            self._land()
            states = self._states()
            waiting = [k for k in keys if states[k] == "pending"]
            if not waiting and not any(self.flying[k].row.wave == wave for k in self.flying):
                return
            for key in waiting:
                self._consider(key)
            time.sleep(POLL_S)

    def _skip_blocked(self, keys: list[Key]) -> None:
        """Rows whose depends_on waves have a row that did not succeed: skipped."""
        states = self._states()
        unfinished = {k.wave for k, s in states.items() if s != "succeeded"}
        for key in keys:
            bad = sorted(unfinished & set(self.rows[key].depends_on))
            if bad and states[key] == "pending":
                self._skip(key, f"wave {', '.join(bad)} (depends_on) did not fully succeed")

    def _consider(self, key: Key) -> None:
        """Start KEY now if its window, backoff, target and the limits allow."""
        row, now = self.rows[key], self.clock()
        if row.window_end is not None and now >= row.window_end.timestamp():
            self._skip(key, f"its window closed at {row.window_end.isoformat()}")
            return
        if row.window_start is not None and now < row.window_start.timestamp():
            if self.o.outside_window == "skip":
                self._skip(key, f"outside its window (opens {row.window_start.isoformat()}; "
                                "--outside-window skip)")
            return
        if now < self.not_before.get(key, 0.0) or not self._slot_free(row):
            return
        busy = self.maintenance(row.target) if row.target else None
        if busy:
            self._skip(key, f"target {row.target} is in maintenance {busy}")
            return
        self._start(key)

    def _slot_free(self, row: PlanRow) -> bool:
        if len(self.flying) >= self.o.max_parallel:
            return False
        host = source_host(row)
        return sum(source_host(f.row) == host for f in self.flying.values()) \
            < self.o.max_per_source

    def _start(self, key: Key) -> None:
        row = self.rows[key]
        attempt = self.state.start(key)
        self.tries[key] = self.tries.get(key, 0) + 1
        run = RowRun(attempt, self.argv(row), self.logs[key],
                     self._result(key, attempt))
        try:
            handle = self.executor.submit(run)
        except OSError as exc:
            self.state.finish(key, "failed", error=f"cannot start: {exc}")
            return
        self.state.set_handle(key, handle)
        self.state.step(key, " ".join(run.argv[:2]))  # "migrate live", "convert vm"
        self.flying[key] = _Flight(row, handle)
        self.summary.started.append(f"{key.wave}/{key.vm}")
        self.summary.peak_parallel = max(self.summary.peak_parallel, len(self.flying))
        self.progress({"event": "row_started", "wave": key.wave, "vm": key.vm,
                       "attempt": attempt, "type": row.type})

    def _land(self) -> None:
        """Record every execution that has ended since the last look."""
        if self.interrupt.signal is not None and (self.o.on_interrupt == "abort"
                                                  or self.interrupt.count >= 2):
            for key, f in self.flying.items():
                if key not in self.cancelled:
                    self.cancelled.add(key)
                    self.executor.cancel(f.handle)
        for key, f in list(self.flying.items()):
            outcome = self.executor.poll(f.handle)
            if outcome is None:
                continue
            del self.flying[key]
            self._record(key, f, outcome)

    def _record(self, key: Key, f: _Flight, outcome: Outcome) -> str:
        """Record how F ended; what was found, in words (for a reconciled row)."""
        metrics = {"type": f.row.type, "target": f.row.target, **outcome.metrics}
        if outcome.state == "unknown":
            found = self._reality(key)
            if found.state == "pending":
                self.state.reconcile(key, "pending", error=found.why)
                return f"{outcome.error}; pending: {found.why}"
            self.state.reconcile(key, found.state, error=None if found.state == "succeeded"
                                 else found.why, metrics=metrics)
            outcome = Outcome(found.state, None if found.state == "succeeded" else found.why)
        elif key in self.tries:
            self.state.finish(key, outcome.state, error=outcome.error, metrics=metrics)
        else:  # a previous runner's execution
            self.state.reconcile(key, outcome.state, error=outcome.error, metrics=metrics)
        retry = outcome.state == "failed" and self.tries.get(key, 0) <= self.o.retries \
            and self.interrupt.signal is None
        self.progress({"event": "row_ended", "wave": key.wave, "vm": key.vm,
                       "state": outcome.state, "error": outcome.error, "retry": retry})
        if retry:
            self.state.retry(key)
            if key in self.tries:  # backoff after this run's attempts, not a dead runner's
                self.not_before[key] = self.clock() + \
                    self.o.retry_delay * 2 ** (self.tries[key] - 1)
        return f"ended: {outcome.state}" + (f": {outcome.error}" if outcome.error else "")

    def _drain(self) -> None:
        """Wait for what still runs (interrupted: finished or aborted, as asked)."""
        while self.flying:
            self._land()
            if self.flying:
                time.sleep(POLL_S)

    def _skip(self, key: Key, why: str) -> None:
        self.state.skip(key, why)
        self.progress({"event": "row_skipped", "wave": key.wave, "vm": key.vm, "why": why})

    # --- after a crash ---------------------------------------------------------

    def _reconcile(self) -> None:
        """Rows a dead runner left running: waited for, judged, or checked."""
        for key in self.state.running():
            handle = self.state.handle(key)
            row = self.rows[key]
            note = {"wave": key.wave, "vm": key.vm}
            if handle is not None:
                flight = _Flight(row, handle)
                outcome = self.executor.poll(handle)
                if outcome is None:
                    # still running (executions outlive their runner): wait for it
                    self.flying[key] = flight
                    found = "still running: waited for"
                else:
                    found = self._record(key, flight, outcome)
                self.summary.reconciled.append({**note, "found": found})
                continue
            found = self._reality(key)
            self.state.reconcile(key, found.state, error=None if found.state == "succeeded"
                                 else found.why)
            self.summary.reconciled.append({**note, "found": f"{found.state}: {found.why}"})

    def _reality(self, key: Key) -> reality.Finding:
        try:
            return reality.where(self.rows[key])
        except OperationFailed as exc:
            # nothing can be decided: leave it failed, never start it blind
            return reality.Finding("failed", f"cannot check where it is: {exc.message}")

    # --- files -----------------------------------------------------------------

    def _result(self, key: Key, attempt: int) -> Path:
        return logs_dir(self.state.path) / f"{self.logs[key].stem}.attempt-{attempt}.json"

