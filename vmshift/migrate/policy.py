"""Convergence policies for live migration: pure functions, no libvirt.

A policy maps (statistics history, settings, elapsed seconds) to the
actions the monitor should apply now. Everything a policy needs to know
about what was already done (the downtime limit in force, the throttle, the
post-copy switch) is part of each sample, so the functions are pure and the
simulator can drive them exactly as the libvirt monitor does.

The types every policy shares live here, with two of the policies (the
third, vmshift's own, is in :mod:`vmshift.migrate.adaptive`; the registry in
:mod:`vmshift.migrate.policies`):
- ``fixed``: what the user set is what they get (cap downtime at start,
  post-copy at --postcopy-after, the timeout action at --timeout).
- ``nova``: Nova's linear downtime stepping, with nova.conf's option names
  and defaults (see :func:`nova_downtime_steps`).
- ``adaptive``: vmshift's own. Predicts convergence from transfer rate
  against dirty rate and escalates only as far as allowed, in this order:
  downtime -> throttle (auto-converge) -> post-copy -> timeout action.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from vmshift.units import GiB

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
    # A policy's downtime limit took effect: the limit in force is no longer
    # the start one, even when the two are equal (a cap below QEMU's default)
    downtime_set: bool = False
    throttle_pct: int = 0
    postcopy_active: bool = False
    paused: bool = False

    @property
    def remaining(self) -> int:
        """What is still to send, memory and disks."""
        return self.memory_remaining + self.disk_remaining


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
    # Not a permission: the guest's dirty rate (bytes/s) measured just before
    # the job (libvirt's calc-dirty-rate), so a policy can judge convergence
    # during the first pass, before QEMU reports any dirty rate of its own.
    premeasured_dirty_bps: float | None = None

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
class Decision:
    actions: list[Action] = field(default_factory=list)

    def add(self, kind: Kind, value: int | None, reason: str, timeout: bool = False) -> None:
        self.actions.append(Action(kind, value, reason, timeout))


Policy = Callable[[Sequence[Sample], Settings, float], list[Action]]


# --------------------------------------------------------------------- helpers

def terminal(history: Sequence[Sample]) -> bool:
    """Nothing to act on yet, or past the point where a policy can still
    change anything (switched to post-copy, or paused)."""
    return not history or history[-1].postcopy_active or history[-1].paused


def timeout_actions(s: Settings, elapsed: float, limit: float | None) -> list[Action]:
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
    if terminal(history):
        return []
    last = history[-1]
    out = Decision()
    if last.downtime_limit_ms != s.max_downtime_ms:
        out.add(Kind.SET_DOWNTIME, s.max_downtime_ms, "--max-downtime")
    if s.postcopy and s.postcopy_after is not None and elapsed >= s.postcopy_after:
        out.add(Kind.POSTCOPY, None, f"--postcopy-after {s.postcopy_after:g} s")
        return out.actions
    return out.actions + timeout_actions(s, elapsed, s.timeout)


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
    if terminal(history):
        return []
    last = history[-1]
    out = Decision()
    due = None
    for at, downtime in nova_downtime_steps(s):
        if elapsed > at:
            due = downtime
    if due is not None and due != last.downtime_limit_ms:
        out.add(Kind.SET_DOWNTIME, min(due, s.max_downtime_ms), "nova downtime step")
    limit = s.live_migration_completion_timeout * s.data_gb
    if s.timeout is not None:
        limit = min(limit, s.timeout) if limit else s.timeout
    return out.actions + timeout_actions(s, elapsed, limit or None)
