"""Which target takes each VM of an evacuation: a pure function of the facts.

The caller gathers the facts (domains, host memory and CPUs, the migrate
preflight's blockers per target); ``plan`` only decides, so the plan a
``--dry-run`` prints is exactly the one that then runs.

Capacity of a target T, with the ``Limits`` L:

* memory: the guest memory this plan may put on T is
  ``floor(T.memory × L.memory_overcommit) − (T.memory − T.free_memory) − L.host_reserve``
  (never below 0). Equivalently: the memory in use on T now, plus the guests
  placed there, stays within ``total × ratio − reserve``. With the default
  ratio 1.0 that is the host's free memory minus the reserve: nothing is
  promised that the host does not have free. A ratio of 1.5 promises half of
  the host's total memory beyond that (for guests that never touch all of
  theirs); a ratio below 1.0 keeps that share of the total free as well.
* vCPUs: ``T.vcpus_committed`` plus the vCPUs placed there stays within
  ``floor(T.cpus × L.cpu_overcommit)``.

A running guest counts its ``memory_kib`` (current maximum) and its vCPUs
against those. A shut-off guest is moved offline and uses neither, so only
maintenance and the preflight can refuse it a target.

Placement rule: the guests are taken in the chosen order; each goes to the
admissible target (not in maintenance, no preflight blocker for it, enough
capacity left) with the most memory left after it, which spreads the load;
ties go to the target with fewer guests placed in this plan, then to the
first name. A guest no target admits is reported with every target's
refusal and takes no capacity. Guest orders are total (the last tie-breaks
are name, then UUID), so the plan does not depend on the input's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from vmshift.errors import BadInput
from vmshift.output import table
from vmshift.units import KiB, human

ORDERS = ("smallest-first", "largest-first", "priority")


@dataclass(frozen=True)
class Guest:
    name: str
    uuid: str
    memory_kib: int  # the domain's current maximum memory
    vcpus: int
    running: bool = True
    persistent: bool = True
    priority: int | None = None  # higher moves first with order=priority
    # Target name -> the preflight's blocker messages for moving this guest there.
    blocked_on: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    name: str
    uri: str
    memory_kib: int  # total
    free_memory_kib: int  # what the host reports free now
    cpus: int
    vcpus_committed: int = 0  # vCPUs of the domains already running there
    in_maintenance: bool = False


@dataclass(frozen=True)
class Limits:
    memory_overcommit: float = 1.0
    cpu_overcommit: float = 4.0
    host_reserve_kib: int = 512 * 1024  # never given to guests

    def __post_init__(self) -> None:
        if not self.memory_overcommit > 0:
            raise BadInput(f"memory overcommit {self.memory_overcommit}: must be more than 0")
        if not self.cpu_overcommit > 0:
            raise BadInput(f"CPU overcommit {self.cpu_overcommit}: must be more than 0")
        if self.host_reserve_kib < 0:
            raise BadInput(f"host reserve {self.host_reserve_kib} KiB: must not be negative")

    def memory_capacity_kib(self, t: Target) -> int:
        """Guest memory this plan may place on T (see the module docstring)."""
        in_use = t.memory_kib - t.free_memory_kib
        return max(0, _scaled(t.memory_kib, self.memory_overcommit) - in_use
                   - self.host_reserve_kib)

    def vcpu_capacity(self, t: Target) -> int:
        """The most vCPUs T may have committed, those already there included."""
        return _scaled(t.cpus, self.cpu_overcommit)


def _scaled(n: int, ratio: float) -> int:
    # Exact decimal arithmetic: 8 × 0.29 must not become 2.3199999 -> 2 by float error.
    return int(n * Fraction(repr(float(ratio))))


@dataclass(frozen=True)
class Placement:
    guest: Guest
    target: Target
    reason: str


@dataclass(frozen=True)
class Unplaced:
    guest: Guest
    reasons: dict[str, str]  # target name -> why it refused


@dataclass
class _Load:
    """A target's capacity as the plan fills it."""

    target: Target
    memory_left: int
    vcpus: int  # committed, with the placed ones
    vcpu_cap: int
    guests: list[str] = field(default_factory=list)

    def after(self, g: Guest) -> int:
        return self.memory_left - (g.memory_kib if g.running else 0)


def ordered(guests: list[Guest], order: str) -> list[Guest]:
    """GUESTS in the order the plan (and the evacuation) takes them."""
    keys = {
        "smallest-first": lambda g: (g.memory_kib, g.name, g.uuid),
        "largest-first": lambda g: (-g.memory_kib, g.name, g.uuid),
        "priority": lambda g: (g.priority is None, -(g.priority or 0), -g.memory_kib,
                               g.name, g.uuid),
    }
    if order not in keys:
        raise BadInput(f"--order: {order!r} is not one of {', '.join(ORDERS)}")
    return sorted(guests, key=keys[order])


def plan(guests: list[Guest], targets: list[Target], limits: Limits,
         order: str) -> Plan:
    """Place GUESTS on TARGETS (the rule and the capacity: the module docstring)."""
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        dup = sorted(n for n in names if names.count(n) > 1)[0]
        raise BadInput(f"--targets: {dup!r} is given twice")
    loads = [_Load(t, limits.memory_capacity_kib(t), t.vcpus_committed, limits.vcpu_capacity(t))
             for t in sorted(targets, key=lambda t: t.name)]
    result = Plan(order, limits, list(targets), [], [])
    for g in ordered(guests, order):
        refusals = {ld.target.name: why for ld in loads if (why := _refusal(g, ld, limits))}
        fits = [ld for ld in loads if ld.target.name not in refusals]
        if not fits:
            result.unplaced.append(Unplaced(g, refusals))
            continue
        fits.sort(key=lambda ld: (-ld.after(g), len(ld.guests), ld.target.name))
        best = fits[0]
        result.placements.append(Placement(g, best.target, _reason(g, fits, len(loads))))
        best.guests.append(g.name)
        if g.running:
            best.memory_left -= g.memory_kib
            best.vcpus += g.vcpus
    return result


def _refusal(g: Guest, ld: _Load, limits: Limits) -> str | None:
    """Why LD's target cannot take G now, or None when it can."""
    if ld.target.in_maintenance:
        return "in maintenance"
    if blockers := g.blocked_on.get(ld.target.name):
        return "preflight: " + "; ".join(blockers)
    if not g.running:
        return None
    why = []
    if g.memory_kib > ld.memory_left:
        placed = len(ld.guests)
        why.append(f"memory: needs {_kib(g.memory_kib)}, {_kib(ld.memory_left)} left"
                   + (f" after the {placed} guest(s) placed there before it" if placed else ""))
    if ld.vcpus + g.vcpus > ld.vcpu_cap:
        why.append(f"vCPUs: {ld.vcpus + g.vcpus} > {ld.target.cpus} × "
                   f"{float(limits.cpu_overcommit)}")
    return "; ".join(why) or None


def _reason(g: Guest, fits: list[_Load], n_targets: int) -> str:
    """One line: why fits[0] was chosen."""
    best = fits[0]
    parts = [] if g.running else ["shut off: moved offline, uses no memory or vCPUs there"]
    parts.append(f"most memory left after placement: {_kib(best.after(g))}")
    parts.append(f"{len(fits)} of {n_targets} targets admissible")
    if len(fits) > 1 and fits[1].after(g) == best.after(g):
        other = fits[1]
        if len(other.guests) != len(best.guests):
            parts.append(f"tie with {other.target.name}: fewer guests placed here "
                         f"({len(best.guests)} vs {len(other.guests)})")
        else:
            parts.append(f"tie with {other.target.name}: first by name")
    return "; ".join(parts)


def _kib(n: int) -> str:
    return human(n * KiB)


@dataclass
class Plan:
    order: str
    limits: Limits
    targets: list[Target]
    placements: list[Placement]  # in execution order
    unplaced: list[Unplaced]

    def placed_on(self, target: str) -> list[Placement]:
        return [p for p in self.placements if p.target.name == target]

    def as_dict(self) -> dict[str, Any]:
        """The plan as plain JSON values."""
        return {
            "order": self.order,
            "limits": {"memory_overcommit": self.limits.memory_overcommit,
                       "cpu_overcommit": self.limits.cpu_overcommit,
                       "host_reserve_kib": self.limits.host_reserve_kib},
            "placements": [{**_guest_dict(p.guest), "target": p.target.name,
                            "target_uri": p.target.uri, "reason": p.reason}
                           for p in self.placements],
            "unplaced": [{**_guest_dict(u.guest), "reasons": dict(sorted(u.reasons.items()))}
                         for u in self.unplaced],
            "targets": [self._target_dict(t) for t in sorted(self.targets, key=lambda t: t.name)],
        }

    def _target_dict(self, t: Target) -> dict[str, Any]:
        mine = self.placed_on(t.name)
        running = [p.guest for p in mine if p.guest.running]
        return {"name": t.name, "uri": t.uri, "in_maintenance": t.in_maintenance,
                "memory_capacity_kib": self.limits.memory_capacity_kib(t),
                "memory_placed_kib": sum(g.memory_kib for g in running),
                "vcpu_capacity": self.limits.vcpu_capacity(t),
                "vcpus_after": t.vcpus_committed + sum(g.vcpus for g in running),
                "guests": [p.guest.name for p in mine]}

    def render(self) -> list[str]:
        """The plan for people: a table of placements, then the VMs left behind."""
        rows = [[p.guest.name + ("" if p.guest.running else " (shut off)"),
                 _kib(p.guest.memory_kib), p.target.name, p.reason] for p in self.placements]
        lines = table(rows, ["VM", "MEMORY", "TARGET", "REASON"]) if rows else ["no VM placed"]
        if self.unplaced:
            lines += ["", f"cannot be placed: {len(self.unplaced)} VM(s)"]
        for u in self.unplaced:
            lines.append(f"  {u.guest.name} ({_kib(u.guest.memory_kib)}, "
                         f"{u.guest.vcpus} vCPUs)" + ("" if u.reasons else ": no target"))
            lines += [f"    {name}: {why}" for name, why in sorted(u.reasons.items())]
        return lines


def _guest_dict(g: Guest) -> dict[str, Any]:
    return {"vm": g.name, "uuid": g.uuid, "memory_kib": g.memory_kib, "vcpus": g.vcpus,
            "running": g.running, "persistent": g.persistent, "priority": g.priority}
