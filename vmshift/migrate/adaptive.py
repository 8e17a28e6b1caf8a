"""vmshift's adaptive convergence policy: a pure function, no libvirt.

It predicts convergence from the transfer rate against the dirty rate and
escalates only as far as the user allows, in this order: the downtime
toward its cap, then throttling (auto-converge), then post-copy, then the
timeout action. Two sources of the dirty rate:
- QEMU's own figure at each bitmap sync (pass 2 onwards);
- a measurement taken just before the job (``Settings.premeasured_dirty_bps``),
  which lets it decide during the first pass. Without throttling permitted,
  a guest that dirties faster than the link can carry is switched to
  post-copy as soon as the transfer rate confirms it: no pass could shrink,
  so every page sent before the switch and dirtied again would only be sent
  twice. Switching at once sends each page once (the shortest move), at the
  price of more demand paging on the destination and a longer window in
  which the guest's memory lives on both hosts (when a broken link needs
  post-copy recovery).
From pass 2 on, with post-copy permitted (and throttling not), it also
switches when pre-copy would converge but slowly: re-sending what the guest
dirtied during each pass would lengthen the move by PRECOPY_WASTE or more
over sending the rest once. (A guest dirtying half the link's rate makes
pre-copy's later passes take twice as long as post-copy's.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from vmshift.migrate.policy import (
    MAX_THROTTLE,
    Action,
    Decision,
    Kind,
    Sample,
    Settings,
    terminal,
    timeout_actions,
)
from vmshift.units import MiB

# The adaptive policy starts low and raises the limit only as far as the
# prediction needs, so an easy migration keeps a short pause.
ADAPTIVE_START_FRACTION = 0.1
# Margin on predictions: QEMU's own estimate of the transfer rate is noisy.
SAFETY = 1.25
# Post-copy has costs of its own (demand paging on the destination, the
# guest's memory split across two hosts until the end), so a pre-copy that
# converges is only given up when it would lengthen the move by this much.
PRECOPY_WASTE = 0.25


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
    return starts[-1] if starts else last.remaining


def needed_downtime_ms(history: Sequence[Sample]) -> float | None:
    """The downtime that would let the job complete now, or None if the
    transfer rate is not known yet."""
    bw, _ = _rate(history)
    if bw <= 0:
        return None
    return _redirtied(history) / bw * 1000.0


def _pass_boundaries(history: Sequence[Sample]) -> list[tuple[Sample, Sample]]:
    """(last sample of a pass, first sample of the next) for each pass after
    the first."""
    return [(prev, h) for prev, h in zip(history, history[1:], strict=False)
            if h.iteration != prev.iteration and h.iteration >= 2]


def pass_starts(history: Sequence[Sample]) -> list[int]:
    """Remaining memory at the start of each pass after the first: the size
    of what the guest re-dirtied during the previous pass."""
    return [h.remaining for _, h in _pass_boundaries(history)]


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
    rows = _pass_boundaries(history)
    sizes = [h.remaining for _, h in rows]
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
    if terminal(history):
        return []
    last = history[-1]
    cap = s.max_downtime_ms
    # Deadlines first: they override the prediction, but still in order
    # (the downtime goes to its cap before post-copy or the timeout action).
    deadline = _deadline_actions(history, s, elapsed, min(last.downtime_limit_ms, cap))
    if deadline:
        return deadline
    out = Decision()
    downtime = last.downtime_limit_ms
    # The start limit until one took effect: keyed on the latest sample, not
    # on the first call, so a call the monitor skipped or libvirt refused
    # loses nothing, and a later call (after a refused switch) does not
    # lower a limit already raised to a cap equal to the start one.
    untouched = not last.downtime_set
    if untouched or downtime > cap:
        start = max(1, min(cap, int(cap * ADAPTIVE_START_FRACTION)))
        downtime = start if untouched else cap
        if downtime != last.downtime_limit_ms:
            out.add(Kind.SET_DOWNTIME, downtime, "initial limit")
    if last.iteration == 1:
        out.actions += _first_pass_switch(history, s, downtime)
    if last.iteration >= 2 and s.postcopy and not s.auto_converge \
            and precopy_slower(history, s, elapsed):
        return out.actions + _switch(s, downtime, "pre-copy would converge, but re-sending "
                                     "what the guest dirties would lengthen the move by "
                                     f"over {PRECOPY_WASTE:.0%}")
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


def _link_rate(history: Sequence[Sample], s: Settings) -> float:
    """The measured transfer rate, or the --bandwidth cap before there is one."""
    return _rate(history)[0] or (s.bandwidth_bps or 0.0)


def precopy_hopeless(history: Sequence[Sample], s: Settings) -> bool:
    """From the dirty rate measured before the job: the guest re-dirties
    memory faster than the link carries it (so no later pass shrinks), and
    what it dirties in a second does not fit in the downtime cap either."""
    dirty = s.premeasured_dirty_bps
    bw = _link_rate(history, s)
    if dirty is None or bw <= 0:
        return False
    return dirty * SAFETY >= bw and dirty / bw * 1000.0 > s.max_downtime_ms


def precopy_slower(history: Sequence[Sample], s: Settings, elapsed: float) -> bool:
    """Pre-copy still converges (the transfer outruns the dirtying), but its
    remaining passes, each re-sending what the guest dirtied during the last
    (rest/(bw-dirty) in all), would take PRECOPY_WASTE of the whole move longer
    than post-copy sending the rest once (rest/bw). Not when the rest fits in
    the downtime cap: then pre-copy completes now."""
    bw, _ = _rate(history)
    # QEMU's figure from the latest bitmap sync (the first-pass samples, with
    # none yet, would dilute an average)
    dirty = history[-1].dirty_rate
    rest = history[-1].remaining
    if bw <= 0 or rest <= 0 or dirty * SAFETY >= bw:
        return False  # nothing known yet, or not converging: the escalation handles it
    if rest / bw * 1000.0 <= s.max_downtime_ms:
        return False
    post = rest / bw
    pre = rest / (bw - dirty)
    return pre - post >= PRECOPY_WASTE * (elapsed + post)


def _switch(s: Settings, downtime: int, reason: str) -> list[Action]:
    """Post-copy now, the downtime raised to its cap first (the order holds)."""
    acts = []
    if downtime < s.max_downtime_ms:
        acts.append(Action(Kind.SET_DOWNTIME, s.max_downtime_ms, "before the post-copy switch"))
    acts.append(Action(Kind.POSTCOPY, None, reason))
    return acts


def _first_pass_switch(history: Sequence[Sample], s: Settings, downtime: int) -> list[Action]:
    """Post-copy during the first pass when pre-copy is hopeless and post-copy
    is the next permitted lever (throttling, when permitted, comes first and
    is judged from pass 2 on)."""
    if not s.postcopy or s.auto_converge or not precopy_hopeless(history, s):
        return []
    if history[-1].memory_total <= 0:
        # libvirt's job is up but QEMU has not started sending (the
        # destination is still being prepared): a switch now is refused.
        return []
    bw = _link_rate(history, s)
    dirty = s.premeasured_dirty_bps or 0.0
    return _switch(s, downtime, f"guest dirties {dirty / MiB:.0f} MiB/s (measured before the "
                   f"job), the link carries {bw / MiB:.0f} MiB/s: pre-copy cannot converge; "
                   "switching in the first pass")


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
    to = timeout_actions(s, elapsed, s.timeout)
    if not (pc_due or to):
        return acts
    if downtime < s.max_downtime_ms:
        acts.append(Action(Kind.SET_DOWNTIME, s.max_downtime_ms, "deadline: downtime to cap"))
    if pc_due:
        acts.append(Action(Kind.POSTCOPY, None, f"--postcopy-after {s.postcopy_after:g} s"))
        return acts
    return acts + to
