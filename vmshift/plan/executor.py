"""Where a plan's rows execute: the protocol between the runner and an executor.

The runner (`plan run`) owns the state machine (vmshift.plan.state): it decides
which row starts, records every move, and reconciles rows found running after
a crash. An executor only runs what it is handed: the local executor (the
default, with `plan run`) runs each row in a process of this machine through
the convert or migrate engine; a distributed one may hand rows to conversion
hosts. Either slots in without touching the state machine.

The contract:

- ``submit(run)`` starts a row (a valid vmshift.plan.schema.PlanRow, already
  marked running in the state; RowRun carries the vmshift arguments that carry
  it out, its log and where its result goes) and returns a handle at once,
  without waiting for it to end. The handle is a string the executor can find
  the row's execution by again, from another runner too (a pid and its start
  time, a job id on a remote host); the runner records it before anything else.
- ``poll(handle)`` says how it stands, without blocking: None while it runs,
  else its Outcome. The runner then records the outcome in one transaction.
  An execution that ended without a result (its process was killed) is
  ``unknown``: the runner then asks reality (vmshift.plan.reality).
- ``cancel(handle)`` asks it to stop (the runner is being interrupted); poll
  then reports its outcome as usual.

An executor keeps no state of its own that the runner would need after a
crash: whatever survives a crash is in the state file and in reality (where
the domain is), which reconcile checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class Outcome:
    """How an execution ended: succeeded or failed, why, and its metrics
    (seconds, bytes moved, downtime in ms: what the report shows)."""

    state: str  # succeeded | failed | unknown
    error: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RowRun:
    """One attempt of one row, as the runner hands it to an executor."""

    attempt: int
    argv: list[str]  # the vmshift arguments, after the program name
    log: Path  # the row's log: appended to, one section per attempt
    result: Path  # where the command's JSON document goes


class Executor(Protocol):
    def submit(self, run: RowRun) -> str:
        """Start RUN; its handle, at once."""
        ...

    def poll(self, handle: str) -> Outcome | None:
        """None while running; its Outcome once ended."""
        ...

    def cancel(self, handle: str) -> None:
        """Ask it to stop; poll reports how it ended."""
        ...
