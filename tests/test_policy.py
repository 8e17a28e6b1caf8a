"""The migration policies, tested without libvirt against the simulator.

Exhaustive grids plus hypothesis properties:
- no policy ever exceeds the user's caps (downtime, throttle range);
- post-copy happens only when permitted, throttling only when permitted;
- adaptive escalates in order: downtime -> throttle -> post-copy -> timeout;
- adaptive converges whenever the simulator says convergence is possible
  within the caps;
- Nova's step schedule equals Nova's for the same inputs.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vmshift.migrate.adaptive import adaptive
from vmshift.migrate.policies import POLICIES
from vmshift.migrate.policy import (
    MAX_THROTTLE,
    Kind,
    Level,
    Sample,
    Settings,
    TimeoutAction,
    fixed,
    initial_downtime_ms,
    nova,
    nova_data_gb,
    nova_downtime_steps,
)
from vmshift.migrate.simulator import (
    SWITCHOVER_MS,
    SimResult,
    Workload,
    convergence_possible,
    premeasured_dirty_bps,
    simulate,
)
from vmshift.units import GiB, MiB

# ------------------------------------------------------------------ Nova's schedule

def test_nova_schedule_matches_nova_docstring_example():
    # Nova's downtime_steps docstring: 10 steps, 30 s delay, 3 GB, 400 ms ->
    # every 90 s: 40, 76, 112, ... 400 ms.
    s = Settings(live_migration_downtime=400, live_migration_downtime_steps=10,
                 live_migration_downtime_delay=30, data_gb=3)
    assert list(nova_downtime_steps(s)) == [
        (0, 40), (90, 76), (180, 112), (270, 148), (360, 184), (450, 220),
        (540, 256), (630, 292), (720, 328), (810, 364), (900, 400)]


def test_nova_schedule_defaults_small_guest():
    # nova.conf defaults: 500 ms, 10 steps, 75 s/GiB; a 256 MiB guest counts
    # as 2 GiB (Nova's lower bound), so delay = int(75 * 2) = 150 s; base
    # 500/10 = 50, offset (500-50)/10 = 45.
    s = Settings(data_gb=nova_data_gb(256 * MiB))
    assert s.data_gb == 2.0
    assert list(nova_downtime_steps(s)) == [
        (0, 50), (150, 95), (300, 140), (450, 185), (600, 230), (750, 275),
        (900, 320), (1050, 365), (1200, 410), (1350, 455), (1500, 500)]


def test_nova_schedule_fractional_data_and_int_truncation():
    # 3 GiB RAM + one 5.5 GiB disk = 8.5 GiB; delay int(75*8.5) = 637;
    # 3 steps of 1000 ms: base 333.33, offset 222.22 -> int() truncates.
    s = Settings(live_migration_downtime=1000, live_migration_downtime_steps=3,
                 data_gb=nova_data_gb(3 * GiB, [int(5.5 * GiB)]))
    assert s.data_gb == 8.5
    assert list(nova_downtime_steps(s)) == [(0, 333), (637, 555), (1274, 777), (1911, 1000)]


def test_nova_options_are_clamped_to_novas_minimums():
    # Nova: downtime min 100 ms, steps min 3, delay min 3 s.
    s = Settings(live_migration_downtime=10, live_migration_downtime_steps=1,
                 live_migration_downtime_delay=1, data_gb=2)
    assert list(nova_downtime_steps(s)) == [(0, 33), (6, 55), (12, 77), (18, 100)]


def test_nova_data_gb_counts_each_device_at_least_2_gib():
    assert nova_data_gb(512 * MiB, [100 * MiB, 10 * GiB]) == 2 + 2 + 10


def _sample(elapsed: float, **kw) -> Sample:
    base = dict(elapsed=elapsed, memory_total=GiB, memory_remaining=GiB // 2,
                dirty_rate=0.0, transfer_rate=float(100 * MiB), iteration=1)
    base.update(kw)
    return Sample(**base)


def test_nova_policy_applies_the_step_due_and_its_completion_timeout():
    s = Settings(data_gb=2.0)
    assert nova([_sample(1)], s, 1)[0].value == 50
    # Nova uses "elapsed > marker": exactly at 150 s the 95 ms step is not due yet.
    assert nova([_sample(150, downtime_limit_ms=50)], s, 150) == []
    assert nova([_sample(151, downtime_limit_ms=50)], s, 151)[0].value == 95
    # completion timeout: 800 s per GiB, 2 GiB -> 1600 s, then abort.
    acts = nova([_sample(1600, downtime_limit_ms=500)], s, 1600)
    assert [a.kind for a in acts] == [Kind.ABORT]
    assert nova([_sample(1599, downtime_limit_ms=500)], s, 1599) == []


# ------------------------------------------------------------------ fixed

def test_fixed_sets_the_cap_once_and_postcopy_at_its_time():
    s = Settings(max_downtime_ms=700, postcopy=True, postcopy_after=10)
    assert [(a.kind, a.value) for a in fixed([_sample(0)], s, 0)] == [(Kind.SET_DOWNTIME, 700)]
    assert fixed([_sample(5, downtime_limit_ms=700)], s, 5) == []
    assert [a.kind for a in fixed([_sample(10, downtime_limit_ms=700)], s, 10)] == [Kind.POSTCOPY]
    # once in post-copy nothing more is asked
    assert fixed([_sample(20, downtime_limit_ms=700, postcopy_active=True)], s, 20) == []


def test_settings_refuse_incompatible_combinations():
    assert Settings(timeout_action=TimeoutAction.POSTCOPY).validate()
    assert Settings(postcopy_after=5).validate()
    assert Settings(ac_initial=0).validate()
    assert not Settings(postcopy=True, postcopy_after=5,
                        timeout_action=TimeoutAction.POSTCOPY).validate()


# ------------------------------------------------------------------ properties

def _levels(res: SimResult) -> list[Level]:
    return [a.level for _, a in res.actions]


def check_invariants(res: SimResult, s: Settings, policy_name: str) -> None:
    """What must hold for every policy on every run."""
    assert res.violations == [], res.violations
    for _, a in res.actions:
        if a.kind == Kind.SET_DOWNTIME:
            assert a.value is not None and 1 <= a.value <= s.max_downtime_ms
        if a.kind == Kind.THROTTLE:
            assert s.auto_converge and 0 < (a.value or 0) <= MAX_THROTTLE
        if a.kind == Kind.POSTCOPY:
            assert s.postcopy
        if a.kind in (Kind.PAUSE, Kind.ABORT):
            # only ever as the timeout action (Nova's completion timeout is its own)
            assert a.timeout and (s.timeout is not None or policy_name == "nova")
    if res.completed and not res.paused:
        # pre-copy stopped within the limit in force (plus device state)
        assert res.downtime_ms is not None
        assert res.downtime_ms <= s.max_downtime_ms + SWITCHOVER_MS
    if policy_name == "adaptive":
        check_escalation_order(res, s)


def check_escalation_order(res: SimResult, s: Settings) -> None:
    levels = _levels(res)
    assert levels == sorted(levels), f"escalation went backwards: {levels}"
    in_force = initial_downtime_ms(s)  # what the monitor sets at job start
    throttle_tried = not s.auto_converge
    for _, a in res.actions:
        if a.kind == Kind.SET_DOWNTIME:
            in_force = a.value
        cap_reached = in_force == s.max_downtime_ms
        if a.kind == Kind.THROTTLE:
            assert cap_reached, "throttled before the downtime reached its cap"
            throttle_tried = True
        if a.kind == Kind.POSTCOPY:
            assert cap_reached, "post-copy before the downtime reached its cap"
            if not a.timeout and not a.reason.startswith("--postcopy-after"):
                assert throttle_tried, "post-copy before throttling was tried"
        if a.timeout:
            assert cap_reached, "timeout action before the downtime reached its cap"


WORKLOADS = [
    Workload(256 * MiB, 0, 0),  # idle
    Workload(256 * MiB, 4 * MiB, 32 * MiB),  # light
    Workload(256 * MiB, 60 * MiB, 24 * MiB),  # hot, small working set
    Workload(256 * MiB, 80 * MiB, 200 * MiB),  # dirtier than the link
    Workload(1 * GiB, 30 * MiB, 700 * MiB),  # close to the link
]
BANDWIDTHS = [16 * MiB, 32 * MiB, 64 * MiB]
CAPS = [50, 300, 1000]


@pytest.mark.parametrize("policy_name", sorted(POLICIES))
def test_exhaustive_grid_invariants(policy_name):
    """Every workload x bandwidth x cap x permission combination."""
    policy = POLICIES[policy_name]
    runs = 0
    for work, bw, cap, ac, pc, action in itertools.product(
            WORKLOADS, BANDWIDTHS, CAPS, (False, True), (False, True),
            (TimeoutAction.ABORT, TimeoutAction.PAUSE, TimeoutAction.POSTCOPY)):
        if action == TimeoutAction.POSTCOPY and not pc:
            continue
        s = Settings(max_downtime_ms=cap, auto_converge=ac, postcopy=pc, timeout=120,
                     timeout_action=action, data_gb=nova_data_gb(work.ram))
        res = simulate(work, bw, policy, s, horizon=200, tick=1.0, substeps=4)
        check_invariants(res, s, policy_name)
        # the timeout is honoured: nothing runs on in pre-copy past it
        assert res.completed or res.aborted or res.postcopy or res.paused
        runs += 1
    # 2 throttle x (2 post-copy x 3 actions - the 2 post-copy actions without post-copy)
    assert runs == len(WORKLOADS) * len(BANDWIDTHS) * len(CAPS) * 2 * 5 and runs >= 100


def test_exhaustive_adaptive_converges_when_possible():
    """Over the grid, without a timeout: adaptive converges whenever the best
    static use of the permitted levers does (given time to react)."""
    checked = converged = 0
    for work, bw, cap, ac, pc in itertools.product(
            WORKLOADS, BANDWIDTHS, CAPS, (False, True), (False, True)):
        s = Settings(max_downtime_ms=cap, auto_converge=ac, postcopy=pc)
        possible = convergence_possible(work, bw, s, within=100)
        res = simulate(work, bw, adaptive, s, horizon=400, tick=1.0, substeps=4)
        check_invariants(res, s, "adaptive")
        if possible:
            checked += 1
            assert res.completed, (work, bw, cap, ac, pc, res.actions[-5:])
            converged += 1
    assert checked == converged and checked > 20


def test_adaptive_beats_nova_on_a_guest_dirtier_than_the_link():
    # 80 MiB/s dirtying over a 32 MiB/s link, 500 ms cap, throttling allowed:
    # Nova (QEMU's own auto-converge, slow steps) vs adaptive.
    work = Workload(256 * MiB, 80 * MiB, 200 * MiB)
    s = Settings(max_downtime_ms=500, auto_converge=True, timeout=300,
                 data_gb=nova_data_gb(work.ram))
    a = simulate(work, 32 * MiB, adaptive, s, horizon=400)
    n = simulate(work, 32 * MiB, nova, s, horizon=400, qemu_auto_converge=True)
    assert a.completed and a.downtime_ms <= 500 + SWITCHOVER_MS
    assert n.completed
    assert a.elapsed < n.elapsed


def test_adaptive_keeps_the_downtime_low_when_the_guest_is_easy():
    s = Settings(max_downtime_ms=1000)
    res = simulate(Workload(256 * MiB, 2 * MiB, 16 * MiB), 64 * MiB, adaptive, s)
    assert res.completed and res.downtime_ms < 200
    assert all(a.value < 1000 for _, a in res.actions if a.kind == Kind.SET_DOWNTIME)


def test_adaptive_without_permissions_aborts_at_timeout_and_never_postcopies():
    s = Settings(max_downtime_ms=100, timeout=60)
    res = simulate(Workload(256 * MiB, 100 * MiB, 250 * MiB), 16 * MiB, adaptive, s)
    assert res.aborted and not res.postcopy
    assert [a.kind for _, a in res.actions][-1] == Kind.ABORT


def _with_premeasure(s: Settings, work: Workload) -> Settings:
    return Settings(**{**s.__dict__, "premeasured_dirty_bps": premeasured_dirty_bps(work)})


def _postcopy_iteration(res: SimResult) -> int | None:
    """The pre-copy pass in which the policy switched to post-copy."""
    for t, a in res.actions:
        if a.kind == Kind.POSTCOPY:
            return next(x.iteration for x in res.samples if x.elapsed >= t)
    return None


# The bed's busy guest: 256 MiB, dirtying 32 MiB/s over a 16 MiB/s link.
BUSY = Workload(256 * MiB, 32 * MiB, 200 * MiB)


def test_adaptive_with_a_premeasured_dirty_rate_switches_in_the_first_pass():
    s = _with_premeasure(Settings(max_downtime_ms=500, postcopy=True, timeout=60,
                                  bandwidth_bps=16 * MiB), BUSY)
    res = simulate(BUSY, 16 * MiB, adaptive, s, horizon=200)
    check_invariants(res, s, "adaptive")
    assert res.completed and res.postcopy and _postcopy_iteration(res) == 1
    # as soon as the transfer rate confirms the measurement
    switch_t = next(t for t, a in res.actions if a.kind == Kind.POSTCOPY)
    assert switch_t <= 1.0
    # so the move costs little more than one copy of the RAM
    assert res.elapsed <= 1.1 * BUSY.ram / (16 * MiB)
    blind = simulate(BUSY, 16 * MiB, adaptive, Settings(**{**s.__dict__,
                     "premeasured_dirty_bps": None}), horizon=200)
    assert blind.completed and blind.elapsed > 1.5 * res.elapsed


def test_adaptive_waits_for_qemu_to_send_before_the_first_pass_switch():
    """libvirt's job exists before QEMU's migration does (memory_total 0
    while the destination is prepared); libvirt refuses a switch then."""
    s = _with_premeasure(Settings(max_downtime_ms=500, postcopy=True,
                                  bandwidth_bps=16 * MiB), BUSY)
    preparing = Sample(0.3, 0, 0, 0.0, 0.0, 1, downtime_limit_ms=500, downtime_set=True)
    assert all(a.kind != Kind.POSTCOPY for a in adaptive([preparing], s, 0.3))
    sending = Sample(0.8, BUSY.ram, BUSY.ram - 8 * MiB, 0.0, 16 * MiB, 1,
                     downtime_limit_ms=500, downtime_set=True)
    assert [a.kind for a in adaptive([preparing, sending], s, 0.8)] == [Kind.POSTCOPY]


def test_adaptive_asks_again_for_a_refused_switch_without_lowering_the_downtime():
    """A cap below QEMU's default (200 ms) equals the limit in force at the
    start. After libvirt refused the first switch, the samples show 200 ms as
    they did before any action: the policy must ask for the switch alone,
    not start over at the initial limit (20 ms), then raise it back."""
    s = _with_premeasure(Settings(max_downtime_ms=200, postcopy=True,
                                  bandwidth_bps=16 * MiB), BUSY)
    first = Sample(0.8, BUSY.ram, BUSY.ram - 8 * MiB, 0.0, 16 * MiB, 1, downtime_limit_ms=200)
    assert [(a.kind, a.value) for a in adaptive([first], s, 0.8)] == [
        (Kind.SET_DOWNTIME, 20), (Kind.SET_DOWNTIME, 200), (Kind.POSTCOPY, None)]
    # both limits took effect, the switch was refused
    refused = Sample(1.3, BUSY.ram, BUSY.ram - 16 * MiB, 0.0, 16 * MiB, 1,
                     downtime_limit_ms=200, downtime_set=True)
    assert [a.kind for a in adaptive([first, refused], s, 1.3)] == [Kind.POSTCOPY]


def test_adaptive_premeasure_of_an_easy_guest_changes_nothing():
    work = Workload(256 * MiB, 2 * MiB, 16 * MiB)
    s = _with_premeasure(Settings(max_downtime_ms=500, postcopy=True), work)
    res = simulate(work, 16 * MiB, adaptive, s, horizon=200)
    assert res.completed and not res.postcopy and res.downtime_ms <= 500 + SWITCHOVER_MS


def test_adaptive_premeasure_throttles_before_postcopy_when_permitted():
    """Throttling is the earlier lever: with --auto-converge, no first-pass switch."""
    s = _with_premeasure(Settings(max_downtime_ms=500, postcopy=True, auto_converge=True,
                                  timeout=120), BUSY)
    res = simulate(BUSY, 16 * MiB, adaptive, s, horizon=300)
    check_invariants(res, s, "adaptive")
    assert res.completed and _postcopy_iteration(res) != 1
    assert any(a.kind == Kind.THROTTLE for _, a in res.actions)


def test_adaptive_premeasure_respects_a_large_downtime_cap():
    """A small working set that fits in the cap is not hopeless."""
    work = Workload(256 * MiB, 200 * MiB, 8 * MiB)
    s = _with_premeasure(Settings(max_downtime_ms=2000, postcopy=True), work)
    res = simulate(work, 16 * MiB, adaptive, s, horizon=200)
    assert res.completed and not res.postcopy


# ------------------------------------------------------------------ hypothesis

workloads = st.builds(
    lambda ram_mib, dirty_frac, wss_frac, bw_mib: (
        Workload(ram_mib * MiB, dirty_frac * bw_mib * MiB, int(wss_frac * ram_mib * MiB)),
        bw_mib * MiB),
    ram_mib=st.integers(64, 4096),
    dirty_frac=st.floats(0, 4),  # dirty rate relative to the link
    wss_frac=st.floats(0, 1),
    bw_mib=st.integers(8, 1000),
)
permissions = st.builds(
    lambda cap, ac, pc, ini, inc, action, timeout, pc_after: Settings(
        max_downtime_ms=cap, auto_converge=ac, postcopy=pc, ac_initial=ini, ac_increment=inc,
        timeout_action=action if (pc or action != TimeoutAction.POSTCOPY) else TimeoutAction.ABORT,
        timeout=timeout, postcopy_after=pc_after if pc else None),
    cap=st.integers(1, 5000), ac=st.booleans(), pc=st.booleans(),
    ini=st.integers(1, 99), inc=st.integers(1, 99),
    action=st.sampled_from(list(TimeoutAction)),
    timeout=st.one_of(st.none(), st.floats(1, 300)),
    pc_after=st.one_of(st.none(), st.floats(0, 300)),
)
HYP = settings(max_examples=200, deadline=None,
               suppress_health_check=[HealthCheck.too_slow])


def _horizon(work: Workload, bw: float) -> float:
    # enough simulated time for many passes
    return 20 * work.ram / bw + 40


def _tick(horizon: float) -> float:
    # at most ~300 policy calls per run, to keep the test fast
    return max(1.0, horizon / 300)


@HYP
@given(workloads, permissions, st.sampled_from(sorted(POLICIES)), st.booleans())
def test_property_caps_and_permissions(wb, s, policy_name, premeasure):
    work, bw = wb
    s = Settings(**{**s.__dict__, "data_gb": nova_data_gb(work.ram)})
    if premeasure:
        s = _with_premeasure(s, work)
    res = simulate(work, bw, POLICIES[policy_name], s, horizon=_horizon(work, bw),
                   tick=_tick(_horizon(work, bw)),
                   substeps=4)
    check_invariants(res, s, policy_name)


@HYP
@given(workloads, permissions, st.booleans())
def test_property_adaptive_converges_whenever_possible(wb, s, premeasure):
    work, bw = wb
    horizon = _horizon(work, bw)
    s = Settings(**{**s.__dict__, "timeout": None, "postcopy_after": None})
    if premeasure:
        s = _with_premeasure(s, work)
    assume(convergence_possible(work, bw, s, within=horizon / 4))
    res = simulate(work, bw, adaptive, s, horizon=horizon, tick=_tick(horizon), substeps=4)
    assert res.completed, res.actions[-6:]
    check_invariants(res, s, "adaptive")


@HYP
@given(workloads, permissions)
def test_property_adaptive_converges_before_the_timeout_when_possible(wb, s):
    """With a timeout: if the best static use of the levers completes within
    a third of it, adaptive completes before the timeout action."""
    work, bw = wb
    timeout = _horizon(work, bw) / 2
    s = Settings(**{**s.__dict__, "timeout": timeout, "postcopy_after": None})
    assume(convergence_possible(work, bw, s, within=timeout / 3))
    res = simulate(work, bw, adaptive, s, horizon=timeout * 2, tick=_tick(timeout), substeps=4)
    assert res.completed and not any(a.timeout for _, a in res.actions), res.actions[-6:]


# The bed's below-cap guest: dirtying half the link's rate over most of its RAM.
HALF = Workload(256 * MiB, 8 * MiB, 200 * MiB)


def test_adaptive_switches_at_pass_two_when_precopy_would_converge_slowly():
    """Pre-copy converges (each pass halves), but its later passes would take
    as long again as sending the rest once: with post-copy permitted, adaptive
    switches at the start of pass 2 and finishes sooner than pre-copy alone."""
    s = _with_premeasure(Settings(max_downtime_ms=500, postcopy=True,
                                  bandwidth_bps=16 * MiB), HALF)
    res = simulate(HALF, 16 * MiB, adaptive, s, horizon=200)
    check_invariants(res, s, "adaptive")
    assert res.completed and res.postcopy and _postcopy_iteration(res) == 2
    pre = simulate(HALF, 16 * MiB, adaptive, Settings(**{**s.__dict__, "postcopy": False}),
                   horizon=200)
    assert pre.completed and not pre.postcopy
    assert res.elapsed * 1.25 <= pre.elapsed


def test_adaptive_keeps_precopy_when_its_later_passes_cost_little():
    """A small working set re-dirtied: the rest after pass 1 is small, so
    pre-copy's extra passes are not worth post-copy's costs."""
    work = Workload(256 * MiB, 8 * MiB, 24 * MiB)
    s = _with_premeasure(Settings(max_downtime_ms=500, postcopy=True), work)
    res = simulate(work, 16 * MiB, adaptive, s, horizon=200)
    assert res.completed and not res.postcopy
