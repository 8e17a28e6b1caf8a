"""Convergence policies for live migration: pure functions, no libvirt.

A policy maps (statistics history, settings, elapsed seconds) to the
actions the monitor should apply now. Everything a policy needs to know
about what was already done (the downtime limit in force, the throttle, the
post-copy switch) is part of each sample, so the functions are pure and the
simulator can drive them exactly as the libvirt monitor does.

Three policies:
- ``fixed``: what the user set is what they get (cap downtime at start,
  post-copy at --postcopy-after, the timeout action at --timeout).
- ``nova``: Nova's linear downtime stepping, with nova.conf's option names
  and defaults (see :func:`nova_downtime_steps`).
- ``adaptive``: vmshift's own. Predicts convergence from transfer rate
  against dirty rate and escalates only as far as allowed, in this order:
  downtime -> throttle (auto-converge) -> post-copy -> timeout action.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

GiB = 1024**3
MiB = 1024**2

# QEMU refuses a CPU throttle above 99 %.
MAX_THROTTLE = 99
# Nova's own lower bounds on its options (nova/conf/libvirt.py).
NOVA_MIN_DOWNTIME_MS = 100
NOVA_MIN_STEPS = 3
NOVA_MIN_DELAY_S = 3


# QEMU's own downtime limit when nobody sets one.
QEMU_DEFAULT_DOWNTIME_MS = 300


def initial_downtime_ms(s: Settings) -> int:
    """The limit the monitor sets the moment the job starts, before any
    policy runs: QEMU's default would already break a cap below 300 ms."""
    return min(QEMU_DEFAULT_DOWNTIME_MS, s.max_downtime_ms)


class Kind(StrEnum):
    SET_DOWNTIME = "set_downtime"  # migrateSetMaxDowntime(value ms)
    THROTTLE = "throttle"  # slow the guest's vCPUs to value %
    POSTCOPY = "postcopy"  # migrateStartPostCopy
    PAUSE = "pause"  # suspend the guest so pre-copy must finish
    ABORT = "abort"  # abortJob: the VM stays on the source


class Level(IntEnum):
    """Escalation level of an action; the adaptive policy never goes down."""

    DOWNTIME = 1
    THROTTLE = 2
    POSTCOPY = 3
    TIMEOUT = 4


@dataclass(frozen=True)
class Action:
    kind: Kind
    value: int | None = None
    reason: str = ""
    # True when the timeout (not the convergence prediction) caused it.
    timeout: bool = False

    @property
    def level(self) -> Level:
        if self.timeout:
            return Level.TIMEOUT
        return {Kind.SET_DOWNTIME: Level.DOWNTIME, Kind.THROTTLE: Level.THROTTLE,
                Kind.POSTCOPY: Level.POSTCOPY}.get(self.kind, Level.TIMEOUT)


@dataclass(frozen=True)
class Sample:
    """One reading of the migration job, plus what is currently in force."""

    elapsed: float  # seconds since the job started
    memory_total: int
    memory_remaining: int
    dirty_rate: float  # bytes/s, as measured (after any throttle)
    transfer_rate: float  # bytes/s
    iteration: int  # pre-copy pass number, 1 = the first full copy
    expected_downtime_ms: float | None = None
    disk_remaining: int = 0
    downtime_limit_ms: int = 300  # QEMU's default limit
    throttle_pct: int = 0
    postcopy_active: bool = False
    paused: bool = False


class TimeoutAction(StrEnum):
    ABORT = "abort"
    PAUSE = "pause"
    POSTCOPY = "postcopy"


@dataclass(frozen=True)
class Settings:
    """What the user allows. Caps are hard: no policy ever exceeds them."""

    max_downtime_ms: int = 500
    bandwidth_bps: float | None = None  # the user's cap, never raised by a policy
    auto_converge: bool = False  # permits throttling the guest
    ac_initial: int = 20
    ac_increment: int = 10
    postcopy: bool = False  # permits post-copy
    postcopy_after: float | None = None  # seconds: switch to post-copy by then
    timeout: float | None = None
    timeout_action: TimeoutAction = TimeoutAction.ABORT
    # nova.conf [libvirt] options, with Nova's defaults.
    live_migration_downtime: int = 500
    live_migration_downtime_steps: int = 10
    live_migration_downtime_delay: int = 75
    live_migration_completion_timeout: int = 800
    data_gb: float = 2.0  # Nova's "GiB of RAM + disk to transfer" (see nova_data_gb)

    def validate(self) -> list[str]:
        """Incompatible or out-of-range settings, as (field: problem) lines."""
        errs = []
        if self.max_downtime_ms < 1:
            errs.append("--max-downtime: must be at least 1 ms")
        if not 1 <= self.ac_initial <= MAX_THROTTLE:
            errs.append(f"--ac-initial: must be 1..{MAX_THROTTLE}")
        if not 1 <= self.ac_increment <= MAX_THROTTLE:
            errs.append(f"--ac-increment: must be 1..{MAX_THROTTLE}")
        if self.timeout_action == TimeoutAction.POSTCOPY and not self.postcopy:
            errs.append("--timeout-action postcopy: needs --postcopy (post-copy is opt-in)")
        if self.postcopy_after is not None and not self.postcopy:
            errs.append("--postcopy-after: needs --postcopy")
        if self.timeout is not None and self.timeout <= 0:
            errs.append("--timeout: must be positive")
        return errs


@dataclass
class _Decision:
    actions: list[Action] = field(default_factory=list)

    def add(self, kind: Kind, value: int | None, reason: str, timeout: bool = False) -> None:
        self.actions.append(Action(kind, value, reason, timeout))


Policy = Callable[[Sequence[Sample], Settings, float], list[Action]]


# --------------------------------------------------------------------- helpers

def _terminal(last: Sample) -> bool:
    """Past the point where a policy can still change anything."""
    return last.postcopy_active or last.paused


def _timeout_actions(s: Settings, elapsed: float, limit: float | None) -> list[Action]:
    if limit is None or limit <= 0 or elapsed < limit:
        return []
    why = f"not complete after {limit:.0f} s"
    if s.timeout_action == TimeoutAction.POSTCOPY and s.postcopy:
        return [Action(Kind.POSTCOPY, None, why, timeout=True)]
    if s.timeout_action == TimeoutAction.PAUSE:
        return [Action(Kind.PAUSE, None, why, timeout=True)]
    return [Action(Kind.ABORT, None, why, timeout=True)]


# ----------------------------------------------------------------------- fixed

def fixed(history: Sequence[Sample], s: Settings, elapsed: float) -> list[Action]:
    """The user's values, applied once; post-copy and timeout at their times."""
    if not history:
        return []
    last = history[-1]
    if _terminal(last):
        return []
    out = _Decision()
    if last.downtime_limit_ms != s.max_downtime_ms:
        out.add(Kind.SET_DOWNTIME, s.max_downtime_ms, "--max-downtime")
    if s.postcopy and s.postcopy_after is not None and elapsed >= s.postcopy_after:
        out.add(Kind.POSTCOPY, None, f"--postcopy-after {s.postcopy_after:g} s")
        return out.actions
    return out.actions + _timeout_actions(s, elapsed, s.timeout)


# ------------------------------------------------------------------------ nova

def nova_data_gb(ram_bytes: int, disk_bytes: Sequence[int] = ()) -> float:
    """GiB Nova scales its delay and timeout by: RAM plus each copied disk,
    each counted as at least 2 GiB (nova.conf help: "lower bound of a
    minimum of 2 GiB per device")."""
    total = max(ram_bytes / GiB, 2.0)
    for size in disk_bytes:
        total += max(size / GiB, 2.0)
    return total


def nova_downtime_steps(s: Settings) -> Iterator[tuple[int, int]]:
    """(seconds elapsed, downtime ms) pairs, the same schedule Nova computes:
    the delay scales with the data size; the downtime rises linearly from
    downtime/steps to downtime over `steps` steps."""
    downtime = max(s.live_migration_downtime, NOVA_MIN_DOWNTIME_MS)
    steps = max(s.live_migration_downtime_steps, NOVA_MIN_STEPS)
    delay = int(max(s.live_migration_downtime_delay, NOVA_MIN_DELAY_S) * s.data_gb)
    first = downtime / steps
    rise = (downtime - first) / steps
    for i in range(steps + 1):
        yield int(delay * i), int(first + rise * i)


def nova(history: Sequence[Sample], s: Settings, elapsed: float) -> list[Action]:
    """Nova's monitor: the last step whose time has passed, then the
    completion timeout (scaled by data size) with its timeout action."""
    if not history:
        return []
    last = history[-1]
    if _terminal(last):
        return []
    out = _Decision()
    due = None
    for at, downtime in nova_downtime_steps(s):
        if elapsed > at:
            due = downtime
    if due is not None and due != last.downtime_limit_ms:
        out.add(Kind.SET_DOWNTIME, min(due, s.max_downtime_ms), "nova downtime step")
    limit = s.live_migration_completion_timeout * s.data_gb
    if s.timeout is not None:
        limit = min(limit, s.timeout) if limit else s.timeout
    return out.actions + _timeout_actions(s, elapsed, limit or None)


# -------------------------------------------------------------------- adaptive

# The adaptive policy starts low and raises the limit only as far as the
# prediction needs, so an easy migration keeps a short pause.
ADAPTIVE_START_FRACTION = 0.1
# Margin on predictions: QEMU's own estimate of the transfer rate is noisy.
SAFETY = 1.25


def _rate(history: Sequence[Sample]) -> tuple[float, float]:
    """Recent transfer and dirty rates (bytes/s), averaged over a short window."""
    window = [h for h in history[-4:] if h.transfer_rate > 0]
    if not window:
        return 0.0, history[-1].dirty_rate
    bw = sum(h.transfer_rate for h in window) / len(window)
    dirty = sum(h.dirty_rate for h in window) / len(window)
    return bw, dirty


def _redirtied(history: Sequence[Sample]) -> int:
    """What the guest re-dirtied during the last pass: the remaining memory
    right after the latest bitmap sync. (Mid-pass the remaining figure falls
    as pages are sent, which says nothing about what a stop would cost.)"""
    starts = pass_starts(history)
    last = history[-1]
    return starts[-1] if starts else last.memory_remaining + last.disk_remaining


def needed_downtime_ms(history: Sequence[Sample]) -> float | None:
    """The downtime that would let the job complete now, or None if the
    transfer rate is not known yet."""
    bw, _ = _rate(history)
    if bw <= 0:
        return None
    return _redirtied(history) / bw * 1000.0


def pass_starts(history: Sequence[Sample]) -> list[int]:
    """Remaining memory at the start of each pass after the first: the size
    of what the guest re-dirtied during the previous pass."""
    return [h.memory_remaining + h.disk_remaining
            for prev, h in zip(history, history[1:], strict=False)
            if h.iteration != prev.iteration and h.iteration >= 2]


def converging(history: Sequence[Sample]) -> bool:
    """True when pre-copy will finish on its own: the transfer outruns the
    guest's dirtying with a margin, and the passes keep shrinking. (QEMU's
    dirty rate is capped by the working set, so the rate alone can look
    fine while each pass re-sends the same working set.)"""
    bw, dirty = _rate(history)
    if bw <= 0 or dirty * SAFETY >= bw:
        return False
    starts = pass_starts(history)
    return len(starts) < 2 or starts[-1] < 0.8 * starts[-2]


def _stuck_passes(history: Sequence[Sample]) -> int:
    """How many passes in a row started while throttled without shrinking."""
    n = 0
    rows = [(prev, h) for prev, h in zip(history, history[1:], strict=False)
            if h.iteration != prev.iteration and h.iteration >= 2]
    sizes = [h.memory_remaining + h.disk_remaining for _, h in rows]
    for i in range(len(rows) - 1, 0, -1):
        if rows[i][0].throttle_pct == 0 or sizes[i] < 0.8 * sizes[i - 1]:
            break
        n += 1
    return n


def _pass_changed(history: Sequence[Sample]) -> bool:
    """A new pre-copy pass started since the previous sample: the moment a
    fresh measurement of the re-dirtied set exists."""
    return len(history) >= 2 and history[-1].iteration != history[-2].iteration


def adaptive(history: Sequence[Sample], s: Settings, elapsed: float) -> list[Action]:
    """vmshift's policy; see the module docstring for the escalation order."""
    if not history:
        return []
    last = history[-1]
    if _terminal(last):
        return []
    cap = s.max_downtime_ms
    # Deadlines first: they override the prediction, but still in order
    # (the downtime goes to its cap before post-copy or the timeout action).
    deadline = _deadline_actions(history, s, elapsed, min(last.downtime_limit_ms, cap))
    if deadline:
        return deadline
    out = _Decision()
    downtime = last.downtime_limit_ms
    if len(history) == 1 or downtime > cap:
        start = max(1, min(cap, int(cap * ADAPTIVE_START_FRACTION)))
        downtime = start if len(history) == 1 else cap
        if downtime != last.downtime_limit_ms:
            out.add(Kind.SET_DOWNTIME, downtime, "initial limit")
    if last.iteration >= 2:
        need = needed_downtime_ms(history)
        moving = converging(history)
        if not moving and need is not None and need * SAFETY > downtime and downtime < cap:
            # Step 1: raise the limit straight to what the prediction needs,
            # within the cap. Raising it further would only lengthen the pause.
            target = min(cap, max(downtime + 1, math.ceil(need * SAFETY)))
            out.add(Kind.SET_DOWNTIME, target, f"needs ~{need:.0f} ms to complete")
            downtime = target
        stuck = not moving and (need is None or need * SAFETY > downtime)
        if stuck and downtime >= cap:
            out.actions += _escalate_beyond_downtime(history, s)
    return out.actions


def _escalate_beyond_downtime(history: Sequence[Sample], s: Settings) -> list[Action]:
    """Steps 2 and 3: throttle (at most once per pass, on the user's ladder),
    then post-copy once throttling is exhausted, not allowed, or has not
    helped for two passes (a long ladder must not eat the timeout)."""
    last = history[-1]
    stuck = _stuck_passes(history)
    throttled_out = last.throttle_pct >= MAX_THROTTLE or (s.postcopy and stuck >= 2)
    if s.auto_converge and not throttled_out:
        if last.throttle_pct == 0 or _pass_changed(history):
            pct = throttle_step(history, s, stuck)
            return [Action(Kind.THROTTLE, pct, "dirty rate outruns the transfer at the "
                           f"downtime cap: throttle to {pct} %")]
        return []
    if s.postcopy and (not s.auto_converge or _pass_changed(history)):
        return [Action(Kind.POSTCOPY, None, "pre-copy cannot converge within the caps")]
    return []


def throttle_step(history: Sequence[Sample], s: Settings, stuck: int = 0) -> int:
    """The next throttle on the user's ladder (initial, +increment, ...): the
    first rung predicted to make the transfer outrun the dirtying, at least
    one rung up, and twice as many rungs for each pass the throttle did not
    help (the measured dirty rate is capped by the working set, so the
    prediction is low). QEMU climbs one rung per pass."""
    last = history[-1]
    bw, dirty = _rate(history)
    raw = dirty / max(1e-6, 1 - last.throttle_pct / 100)  # what the guest would dirty unslowed
    wanted = 100 * (1 - bw / (raw * SAFETY)) if raw > 0 and bw > 0 else 0
    if last.throttle_pct == 0:
        pct = s.ac_initial
    else:
        pct = last.throttle_pct + s.ac_increment * 2 ** min(stuck, 6)
    while pct < wanted and pct < MAX_THROTTLE:
        pct += s.ac_increment
    return min(pct, MAX_THROTTLE)


def _deadline_actions(history: Sequence[Sample], s: Settings, elapsed: float,
                      downtime: int) -> list[Action]:
    """--postcopy-after and --timeout. Escalation order still holds: the
    downtime goes to its cap first, so nothing is skipped silently."""
    acts: list[Action] = []
    pc_due = s.postcopy and s.postcopy_after is not None and elapsed >= s.postcopy_after
    to = _timeout_actions(s, elapsed, s.timeout)
    if not (pc_due or to):
        return acts
    if downtime < s.max_downtime_ms:
        acts.append(Action(Kind.SET_DOWNTIME, s.max_downtime_ms, "deadline: downtime to cap"))
    if pc_due:
        acts.append(Action(Kind.POSTCOPY, None, f"--postcopy-after {s.postcopy_after:g} s"))
        return acts
    return acts + to


POLICIES: dict[str, Policy] = {"fixed": fixed, "nova": nova, "adaptive": adaptive}


def get_policy(name: str) -> Policy:
    return POLICIES[name]
