"""A small pre-copy migration simulator, to test policies without libvirt.

The model follows QEMU's pre-copy loop closely enough for policy decisions:
- pass 1 sends all RAM; each later pass sends the pages dirtied during the
  previous one (capped by the guest's working set, the memory it keeps
  re-dirtying);
- the job completes (stop-and-copy) as soon as the pending bytes fit in the
  downtime limit at the transfer rate; the achieved downtime is that time;
- throttling slows the vCPUs, so the dirty rate falls by the throttle %;
- post-copy switches the guest to the destination: the source stops
  dirtying and the rest is pulled at the link rate, so it always completes;
- pause stops the dirtying too, at the cost of a long downtime;
- QEMU's own auto-converge (``qemu_auto_converge``) raises the throttle at
  a pass end when more than half of what was sent was dirtied again.

The dirty rate the policy sees is what QEMU reports: pages found dirty at
a bitmap sync divided by the time since the previous sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vmshift.migrate.policy import (
    MAX_THROTTLE,
    Action,
    Kind,
    Policy,
    Sample,
    Settings,
    initial_downtime_ms,
)

# Device state and the final handshake cost a little even with no RAM left.
SWITCHOVER_MS = 5.0


@dataclass(frozen=True)
class Workload:
    ram: int  # bytes of guest RAM
    dirty_bps: float  # bytes/s the guest dirties when not throttled
    wss: int  # bytes it keeps re-dirtying (its working set)


@dataclass
class SimResult:
    completed: bool
    aborted: bool
    elapsed: float
    downtime_ms: float | None
    postcopy: bool
    paused: bool
    transferred: int
    actions: list[tuple[float, Action]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    # Actions the policy asked for that the settings did not permit.
    violations: list[str] = field(default_factory=list)


@dataclass
class _State:
    to_send: float
    dirtied: float = 0.0
    iteration: int = 1
    pass_start: float = 0.0
    pass_sent: float = 0.0
    measured_dirty: float = 0.0
    downtime_ms: int = 300
    downtime_set: bool = False
    throttle: int = 0
    postcopy: bool = False
    paused_at: float | None = None
    transferred: float = 0.0

    def pending(self) -> float:
        return self.to_send + self.dirtied


def simulate(work: Workload, bandwidth_bps: float, policy: Policy, settings: Settings, *,
             tick: float = 0.5, horizon: float = 3600.0, substeps: int = 5,
             qemu_auto_converge: bool = False) -> SimResult:
    """Run one migration under `policy` until it completes, aborts or the
    horizon passes (then it is reported as not completed)."""
    st = _State(to_send=float(work.ram), downtime_ms=initial_downtime_ms(settings))
    history: list[Sample] = []
    res = SimResult(False, False, 0.0, None, False, False, 0)
    h = tick / substeps
    t = 0.0
    while t < horizon:
        history.append(_sample(st, work, bandwidth_bps, t))
        for act in policy(history, settings, t):
            res.actions.append((t, act))
            if _apply(act, st, settings, res, t):
                res.aborted = True
                res.elapsed = t
                return _finish(res, st, history)
        for _ in range(substeps):
            t += h
            done = _advance(st, work, bandwidth_bps, h, t, qemu_auto_converge, settings)
            if done is not None:
                res.completed, res.elapsed, res.downtime_ms = True, t, done
                return _finish(res, st, history)
    res.elapsed = t
    return _finish(res, st, history)


def _finish(res: SimResult, st: _State, history: list[Sample]) -> SimResult:
    res.postcopy = st.postcopy
    res.paused = st.paused_at is not None
    res.transferred = int(st.transferred)
    res.samples = history
    return res


def premeasured_dirty_bps(work: Workload, period: float = 1.0) -> float:
    """What libvirt's calc-dirty-rate (page sampling over PERIOD) reports:
    distinct pages dirtied in the period, so a small working set caps it."""
    return min(work.dirty_bps, work.wss / period)


def _sample(st: _State, work: Workload, bw: float, t: float) -> Sample:
    pending = st.pending()
    return Sample(elapsed=t, memory_total=work.ram, memory_remaining=int(pending),
                  dirty_rate=st.measured_dirty, transfer_rate=bw if t > 0 else 0.0,
                  iteration=st.iteration, expected_downtime_ms=pending / bw * 1000.0,
                  downtime_limit_ms=st.downtime_ms, downtime_set=st.downtime_set,
                  throttle_pct=st.throttle,
                  postcopy_active=st.postcopy, paused=st.paused_at is not None)


def _apply(act: Action, st: _State, s: Settings, res: SimResult, t: float) -> bool:
    """Apply one action; True when it ends the job (abort)."""
    if act.kind == Kind.SET_DOWNTIME:
        if act.value is None or act.value > s.max_downtime_ms:
            res.violations.append(f"downtime {act.value} ms above cap {s.max_downtime_ms}")
        st.downtime_ms, st.downtime_set = int(act.value or st.downtime_ms), True
    elif act.kind == Kind.THROTTLE:
        if not s.auto_converge:
            res.violations.append("throttle without --auto-converge")
        if act.value is None or not 0 < act.value <= MAX_THROTTLE:
            res.violations.append(f"throttle {act.value} out of range")
        st.throttle = int(act.value or 0)
    elif act.kind == Kind.POSTCOPY:
        if not s.postcopy:
            res.violations.append("post-copy without --postcopy")
        st.postcopy = True
    elif act.kind == Kind.PAUSE:
        st.paused_at = t
    elif act.kind == Kind.ABORT:
        return True
    return False


def _advance(st: _State, work: Workload, bw: float, h: float, t: float,
             qemu_ac: bool, s: Settings) -> float | None:
    """Move time on by h; the achieved downtime in ms when the job completes.
    A step is split at each pass end, as QEMU checks at every bitmap sync."""
    left = h
    for _ in range(10_000):  # passes shrink geometrically when converging
        # QEMU cannot sync its bitmap more often than every millisecond or so.
        step = min(left, max(st.to_send / bw, 1e-3)) if st.to_send > 0 else left
        done = _piece(st, work, bw, step, t - left + step)
        if done is not None:
            return done
        left -= step
        if st.to_send <= 0 and not st.postcopy:
            _new_pass(st, t - left, qemu_ac, s)
        if left <= 1e-12:
            return None
    return None


def _piece(st: _State, work: Workload, bw: float, h: float, t: float) -> float | None:
    sent = min(st.to_send, bw * h)
    st.to_send -= sent
    if st.to_send < 1.0:  # float residue: the pass is done
        sent += st.to_send
        st.to_send = 0.0
    st.pass_sent += sent
    st.transferred += sent
    if st.postcopy:
        # The guest runs on the destination; pages left are pulled on demand.
        st.to_send += st.dirtied
        st.dirtied = 0.0
        return SWITCHOVER_MS if st.to_send <= 0 else None
    if st.paused_at is None:
        rate = work.dirty_bps * (1 - st.throttle / 100)
        st.dirtied = min(float(work.wss), st.dirtied + rate * h)
    limit = bw * st.downtime_ms / 1000.0
    if st.pending() <= limit:
        final = st.pending() / bw * 1000.0 + SWITCHOVER_MS
        st.transferred += st.pending()
        if st.paused_at is not None:
            return (t - st.paused_at) * 1000.0 + final
        return final
    return None


def _new_pass(st: _State, t: float, qemu_ac: bool, s: Settings) -> None:
    """A bitmap sync: what was dirtied becomes the next pass."""
    span = max(t - st.pass_start, 1e-9)
    st.measured_dirty = st.dirtied / span
    if qemu_ac and st.dirtied > 0.5 * st.pass_sent:
        st.throttle = s.ac_initial if st.throttle == 0 else min(
            st.throttle + s.ac_increment, MAX_THROTTLE)
    st.to_send, st.dirtied = st.dirtied, 0.0
    st.iteration += 1
    st.pass_start, st.pass_sent = t, 0.0


def best_static(history: list[Sample], s: Settings, elapsed: float) -> list[Action]:
    """The oracle's policy: every permitted lever fully pulled from the start
    (downtime at the cap, the maximum throttle, post-copy at once)."""
    if len(history) != 1:
        return []
    acts = [Action(Kind.SET_DOWNTIME, s.max_downtime_ms, "oracle")]
    if s.auto_converge:
        acts.append(Action(Kind.THROTTLE, MAX_THROTTLE, "oracle"))
    if s.postcopy:
        acts.append(Action(Kind.POSTCOPY, None, "oracle"))
    return acts


def convergence_possible(work: Workload, bw: float, s: Settings, within: float) -> bool:
    """Whether any use of the permitted levers completes within `within` s
    with the downtime at or below the cap (pause is excluded: it breaks the
    cap by design)."""
    r = simulate(work, bw, best_static, s, horizon=within)
    return r.completed and r.elapsed <= within
