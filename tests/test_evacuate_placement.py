"""vmshift.migrate.evacuate.placement: which target takes each VM.

Concrete cases first, then hypothesis properties that replay a plan against
the documented rule and capacity, independently of the implementation.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from vmshift.errors import BadInput
from vmshift.migrate.evacuate.placement import (
    ORDERS,
    Guest,
    Limits,
    Plan,
    Target,
    ordered,
    plan,
)

MIB = 1024  # in KiB
GIB = 1024 * MIB


def vm(name: str, gib: float, vcpus: int = 1, **kw: object) -> Guest:
    return Guest(name, f"uuid-{name}", int(gib * GIB), vcpus, **kw)  # type: ignore[arg-type]


def host(name: str, free_gib: float, total_gib: float = 16, cpus: int = 8,
         **kw: object) -> Target:
    return Target(name, f"qemu+tcp://{name}/system", int(total_gib * GIB),
                  int(free_gib * GIB), cpus, **kw)  # type: ignore[arg-type]


def where(p: Plan) -> dict[str, str]:
    return {pl.guest.name: pl.target.name for pl in p.placements}


def names(p: Plan) -> list[str]:
    return [pl.guest.name for pl in p.placements]


# --- concrete cases -------------------------------------------------------------------

def test_equal_guests_spread_over_two_equal_targets():
    p = plan([vm(f"a{i}", 1) for i in range(1, 5)], [host("hostc", 8), host("hostb", 8)],
             Limits(), "largest-first")
    assert where(p) == {"a1": "hostb", "a2": "hostc", "a3": "hostb", "a4": "hostc"}
    assert not p.unplaced
    # 8 GiB free - 512 MiB reserve = 7.5 GiB admissible on each
    assert p.placements[0].reason == ("most memory left after placement: 6.5 GiB; "
                                      "2 of 2 targets admissible; tie with hostc: first by name")
    assert p.placements[1].reason == ("most memory left after placement: 6.5 GiB; "
                                      "2 of 2 targets admissible")
    assert p.placements[2].reason.endswith("tie with hostc: first by name")


def test_the_emptier_target_fills_first_until_balanced():
    p = plan([vm("a", 2), vm("b", 2), vm("c", 2)], [host("big", 8.5), host("small", 4.5)],
             Limits(), "largest-first")
    # admissible 8 GiB and 4 GiB: a -> big (6 left against 2), b -> big (4 against 2),
    # c: 2 left on either, and small has fewer guests
    assert where(p) == {"a": "big", "b": "big", "c": "small"}
    assert p.placements[2].reason.endswith("tie with big: fewer guests placed here (0 vs 2)")


def test_order_decides_what_fits_on_a_tight_target():
    guests = [vm("one", 1), vm("two", 2), vm("three", 3)]
    only = [host("h", 4.5)]  # 4 GiB admissible
    largest = plan(guests, only, Limits(), "largest-first")
    smallest = plan(guests, only, Limits(), "smallest-first")
    assert names(largest) == ["three", "one"]
    assert [u.guest.name for u in largest.unplaced] == ["two"]
    assert names(smallest) == ["one", "two"]
    assert [u.guest.name for u in smallest.unplaced] == ["three"]
    assert smallest.unplaced[0].reasons == {
        "h": "memory: needs 3.0 GiB, 1.0 GiB left after the 2 guest(s) placed there before it"}


def test_priority_order_highest_first_none_last_then_largest():
    guests = [vm("none-big", 8, priority=None), vm("p1", 1, priority=1),
              vm("p5-small", 1, priority=5), vm("p5-big", 2, priority=5),
              vm("p0", 1, priority=0)]
    p = plan(guests, [host("h", 64, total_gib=64)], Limits(), "priority")
    assert names(p) == ["p5-big", "p5-small", "p1", "p0", "none-big"]


def test_a_target_in_maintenance_is_never_used():
    p = plan([vm("fits", 1), vm("too-big", 6)],
             [host("maint", 60, total_gib=64, in_maintenance=True), host("c", 4.5)],
             Limits(), "smallest-first")
    assert where(p) == {"fits": "c"}
    assert p.unplaced[0].reasons == {"maint": "in maintenance",
                                     "c": "memory: needs 6.0 GiB, 3.0 GiB left after the "
                                          "1 guest(s) placed there before it"}


def test_a_shut_off_guest_is_refused_by_maintenance_too():
    p = plan([vm("off", 1, running=False)], [host("m", 8, in_maintenance=True)], Limits(),
             "smallest-first")
    assert not p.placements
    assert p.unplaced[0].reasons == {"m": "in maintenance"}


def test_a_preflight_blocked_target_is_skipped_with_its_reason():
    blockers = ["network 'prod' is not defined on b", "CPU model not supported"]
    p = plan([vm("picky", 1, blocked_on={"b": blockers}), vm("easy", 1)],
             [host("b", 12), host("c", 4)], Limits(), "priority")
    # picky goes to the smaller target although b has more memory; easy still goes to b
    assert where(p) == {"picky": "c", "easy": "b"}
    [picky] = [pl for pl in p.placements if pl.guest.name == "picky"]
    assert picky.reason.endswith("1 of 2 targets admissible")
    blocked_everywhere = vm("stuck", 1, blocked_on={"b": blockers, "c": ["disk vda missing"]})
    p2 = plan([blocked_everywhere], [host("b", 12), host("c", 4)], Limits(), "priority")
    assert p2.unplaced[0].reasons == {
        "b": "preflight: network 'prod' is not defined on b; CPU model not supported",
        "c": "preflight: disk vda missing"}


def test_an_unplaceable_vm_is_reported_while_the_rest_are_placed():
    p = plan([vm("huge", 8), vm("s1", 1), vm("s2", 1)], [host("b", 4), host("c", 4)],
             Limits(), "largest-first")
    assert where(p) == {"s1": "b", "s2": "c"}  # huge took no capacity
    [u] = p.unplaced
    assert u.guest.name == "huge"
    assert u.reasons == {"b": "memory: needs 8.0 GiB, 3.5 GiB left",
                         "c": "memory: needs 8.0 GiB, 3.5 GiB left"}
    text = "\n".join(p.render())
    assert "cannot be placed: 1 VM(s)" in text
    assert "  huge (8.0 GiB, 1 vCPUs)" in text
    assert "    b: memory: needs 8.0 GiB, 3.5 GiB left" in text


def test_a_shut_off_guest_is_placed_without_consuming_memory_or_vcpus():
    off = vm("off", 8, vcpus=16, running=False)
    p = plan([off, vm("on", 3)], [host("h", 4)], Limits(cpu_overcommit=1.0), "largest-first")
    assert where(p) == {"off": "h", "on": "h"}
    assert p.placements[0].reason.startswith("shut off: moved offline, uses no memory or vCPUs")
    [t] = p.as_dict()["targets"]
    assert t["memory_placed_kib"] == 3 * GIB
    assert t["vcpus_after"] == 1
    assert "off (shut off)" in "\n".join(p.render())


def test_cpu_overcommit_limits_vcpus():
    t = host("h", 32, total_gib=32, cpus=8, vcpus_committed=6)
    guests = [vm("a-three", 1, vcpus=3), vm("b-two", 1, vcpus=2)]
    strict = plan(guests, [t], Limits(cpu_overcommit=1.0), "smallest-first")
    assert names(strict) == ["b-two"]
    assert strict.unplaced[0].reasons == {"h": "vCPUs: 9 > 8 × 1.0"}
    loose = plan(guests, [t], Limits(), "smallest-first")  # 4.0: up to 32
    assert names(loose) == ["a-three", "b-two"]


def test_capacity_boundary_is_inclusive_to_the_kib():
    t = host("h", 4)  # 3.5 GiB admissible
    exact = Guest("exact", "u1", int(3.5 * GIB), 1)
    assert where(plan([exact], [t], Limits(), "priority")) == {"exact": "h"}
    over = Guest("over", "u2", int(3.5 * GIB) + 1, 1)
    assert plan([over], [t], Limits(), "priority").unplaced[0].guest.name == "over"
    t8 = host("h", 32, cpus=2, vcpus_committed=1)
    assert names(plan([vm("v", 1, vcpus=7)], [t8], Limits(), "priority")) == ["v"]  # 8 <= 8
    assert names(plan([vm("v", 1, vcpus=8)], [t8], Limits(), "priority")) == []


def test_memory_and_vcpu_refusals_are_both_given():
    p = plan([vm("x", 8, vcpus=4)], [host("h", 2, cpus=1)], Limits(cpu_overcommit=2.0),
             "smallest-first")
    assert p.unplaced[0].reasons == {"h": "memory: needs 8.0 GiB, 1.5 GiB left; "
                                          "vCPUs: 4 > 1 × 2.0"}


@pytest.mark.parametrize(("ratio", "reserve_mib", "expected_kib"), [
    (1.0, 512, 4 * GIB - 512 * MIB),            # free memory minus the reserve
    (1.5, 512, 4 * GIB + 8 * GIB - 512 * MIB),  # plus half the 16 GiB total
    # keeps a tenth of the total free as well: floor(16 GiB × 0.9) - 12 GiB in use - reserve
    (0.9, 512, 15099494 - 12 * GIB - 512 * MIB),
    (1.0, 0, 4 * GIB),
    (0.5, 512, 0),                              # never below 0
])
def test_memory_capacity_definition(ratio: float, reserve_mib: int, expected_kib: int):
    lim = Limits(memory_overcommit=ratio, host_reserve_kib=reserve_mib * MIB)
    assert lim.memory_capacity_kib(host("h", 4, total_gib=16)) == expected_kib


def test_capacity_arithmetic_is_exact_decimal():
    # 100 × 0.29 is 28.999999999999996 in floats; the limit must be 29
    assert Limits(cpu_overcommit=0.29).vcpu_capacity(host("h", 1, cpus=100)) == 29


def test_bad_inputs_name_the_field():
    with pytest.raises(BadInput, match="--order: 'random'"):
        plan([], [], Limits(), "random")
    with pytest.raises(BadInput, match="--targets: 'b' is given twice"):
        plan([], [host("b", 1), host("b", 2)], Limits(), "priority")
    with pytest.raises(BadInput, match="memory overcommit"):
        Limits(memory_overcommit=0)
    with pytest.raises(BadInput, match="CPU overcommit"):
        Limits(cpu_overcommit=-1)
    with pytest.raises(BadInput, match="host reserve"):
        Limits(host_reserve_kib=-1)


def test_render_and_as_dict():
    p = plan([vm("web", 2), vm("db", 4)], [host("b", 8), host("c", 4)], Limits(),
             "largest-first")
    lines = p.render()
    assert lines[0].split() == ["VM", "MEMORY", "TARGET", "REASON"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split()[:4] == ["db", "4.0", "GiB", "b"]
    doc = json.loads(json.dumps(p.as_dict()))
    assert [(r["vm"], r["target"], r["target_uri"]) for r in doc["placements"]] == [
        ("db", "b", "qemu+tcp://b/system"), ("web", "c", "qemu+tcp://c/system")]
    assert doc["targets"][0]["guests"] == ["db"]
    assert plan([], [host("b", 1)], Limits(), "priority").render() == ["no VM placed"]
    nowhere = plan([vm("x", 1)], [], Limits(), "priority")
    assert nowhere.render()[-1] == "  x (1.0 GiB, 1 vCPUs): no target"


# --- properties -----------------------------------------------------------------------

@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Guest], list[Target], Limits, str]:
    targets = []
    for i in range(draw(st.integers(1, 4))):
        total = draw(st.integers(1, 32)) * 512 * MIB
        free = draw(st.integers(0, total // (512 * MIB))) * 512 * MIB
        cpus = draw(st.integers(1, 16))
        targets.append(Target(f"t{i}", f"qemu+tcp://10.0.0.{i}/system", total, free, cpus,
                              draw(st.integers(0, cpus * 4)),
                              draw(st.sampled_from([False, False, False, True]))))
    guests = []
    for i in range(draw(st.integers(0, 12))):
        blocked = {t.name: ["blocked"] for t in targets if draw(st.integers(0, 4)) == 0}
        guests.append(Guest(f"vm{i:02d}", f"u{i}",
                            draw(st.one_of(st.sampled_from([256, 512, 1024, 2048, 4096]),
                                           st.integers(64, 8192))) * MIB
                            + draw(st.sampled_from([0, 0, 1, 512])),  # off by a few KiB
                            draw(st.integers(1, 8)), draw(st.booleans()), draw(st.booleans()),
                            draw(st.one_of(st.none(), st.integers(0, 3))), blocked))
    limits = Limits(draw(st.sampled_from([0.8, 1.0, 1.5])), draw(st.sampled_from([1.0, 2.0, 4.0])),
                    draw(st.sampled_from([0, 512 * MIB])))
    return guests, targets, limits, draw(st.sampled_from(ORDERS))


def turn_order(guests: list[Guest], order: str) -> list[Guest]:
    """The documented orders, written out independently of the module."""
    if order == "smallest-first":
        return sorted(guests, key=lambda g: (g.memory_kib, g.name))
    if order == "largest-first":
        return sorted(guests, key=lambda g: (-g.memory_kib, g.name))
    with_prio = sorted((g for g in guests if g.priority is not None),
                       key=lambda g: (-(g.priority or 0), -g.memory_kib, g.name))
    return with_prio + turn_order([g for g in guests if g.priority is None], "largest-first")


HYP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def placed(case):  # type: ignore[no-untyped-def]
    """The plan of a generated case, for the properties that need a placement."""
    guests, targets, limits, order = case
    p = plan(guests, targets, limits, order)
    assume(p.placements)
    return p, targets, limits


@HYP
@given(scenarios())
def test_placed_memory_and_vcpus_stay_within_capacity(case):
    p, targets, limits = placed(case)
    for t in targets:
        running = [pl.guest for pl in p.placed_on(t.name) if pl.guest.running]
        assert sum(g.memory_kib for g in running) <= limits.memory_capacity_kib(t)
        if running:
            assert t.vcpus_committed + sum(g.vcpus for g in running) <= limits.vcpu_capacity(t)


@HYP
@given(scenarios())
def test_no_placement_on_a_maintenance_or_blocked_target(case):
    p, _, _ = placed(case)
    for pl in p.placements:
        assert not pl.target.in_maintenance
        assert not pl.guest.blocked_on.get(pl.target.name)


@HYP
@given(scenarios())
def test_replay_unplaced_only_when_nothing_fit_at_its_turn(case):
    guests, targets, limits, order = case
    p = plan(guests, targets, limits, order)
    placed = {pl.guest.name: pl.target.name for pl in p.placements}
    unplaced = {u.guest.name: u.reasons for u in p.unplaced}
    assert sorted([*placed, *unplaced]) == sorted(g.name for g in guests)
    left = {t.name: limits.memory_capacity_kib(t) for t in targets}
    vcpus = {t.name: t.vcpus_committed for t in targets}
    turns = []
    for g in turn_order(guests, order):
        need = g.memory_kib if g.running else 0
        ok = [t.name for t in targets
              if not t.in_maintenance and not g.blocked_on.get(t.name)
              and (not g.running or (need <= left[t.name]
                                     and vcpus[t.name] + g.vcpus <= limits.vcpu_capacity(t)))]
        if g.name in unplaced:
            assert not ok
            assert set(unplaced[g.name]) == {t.name for t in targets}
            continue
        chosen = placed[g.name]
        assert chosen in ok
        assert left[chosen] - need == max(left[n] - need for n in ok)  # the most memory left
        left[chosen] -= need
        vcpus[chosen] += g.vcpus if g.running else 0
        turns.append(g.name)
    assert [pl.guest.name for pl in p.placements] == turns  # in execution order


@HYP
@given(scenarios(), st.randoms(use_true_random=False))
def test_plan_is_deterministic_and_independent_of_input_order(case, rnd: random.Random):
    guests, targets, limits, order = case
    first = plan(guests, targets, limits, order)
    assert plan(guests, targets, limits, order).as_dict() == first.as_dict()
    shuffled_guests, shuffled_targets = list(guests), list(targets)
    rnd.shuffle(shuffled_guests)
    rnd.shuffle(shuffled_targets)
    again = plan(shuffled_guests, shuffled_targets, limits, order)
    assert again.as_dict() == first.as_dict()
    assert again.render() == first.render()


@HYP
@given(scenarios())
def test_ordered_matches_the_documented_order(case):
    guests, _, _, order = case
    assert [g.name for g in ordered(guests, order)] == [g.name for g in turn_order(guests, order)]
