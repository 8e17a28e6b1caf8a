"""What `vmshift plan status` shows of a plan's run state: the plan it was made
for, the runner holding it, per wave the rows counted by state, and each row's
state, attempts, last start and end, last error and log (docs/plan.md)."""

from __future__ import annotations

import os
import socket
from typing import Any

from vmshift.output import table
from vmshift.plan.state import STATES, RunState

ROW_FIELDS = ("line", "vm", "source", "state", "attempts", "started", "ended", "step",
              "error", "log", "metrics")


def document(state: RunState, plan_sha: str | None) -> dict[str, Any]:
    """The plan_status payload. PLAN_SHA: the sha256 of the plan file named on the
    command line (None when only --state was given)."""
    plan = state.plan_info()
    plan["matches"] = None if plan_sha is None else plan_sha == plan["sha256"]
    runner = state.runner()
    if runner is not None:
        runner["alive"] = _alive(runner["pid"]) if runner["host"] == socket.gethostname() \
            else None
    waves: dict[str, dict[str, Any]] = {}
    for row in state.rows():
        wave = waves.setdefault(row["wave"], {"wave": row["wave"], "counts": _zero(),
                                              "rows": []})
        wave["counts"][row["state"]] += 1
        wave["rows"].append({k: row[k] for k in ROW_FIELDS})
    total = _zero()
    for wave in waves.values():
        for name, count in wave["counts"].items():
            total[name] += count
    return {"state": str(state.path), "plan": plan, "runner": runner,
            "rows": sum(total.values()), "counts": total, "waves": list(waves.values())}


def text(doc: dict[str, Any]) -> list[str]:
    plan = doc["plan"]
    out = [f"{doc['state']}: plan {plan['path']} (sha256 {plan['sha256'][:12]}), "
           f"first run {plan['first_run']}"]
    if plan["matches"] is False:
        out.append("  the plan file has changed since it was last run (`plan run` checks "
                   "what changed)")
    runner = doc["runner"]
    if runner is None:
        out.append("runner: none")
    else:
        dead = " (not running any more: it stopped without closing the state)" \
            if runner["alive"] is False else ""
        out.append(f"runner: pid {runner['pid']} on host {runner['host']} since "
                   f"{runner['since']}{dead}")
    for wave in doc["waves"]:
        out += ["", f"wave {wave['wave']}: {counts_text(wave['counts'])}"]
        out += ["  " + line for line in table(
            [[str(r["line"]), r["vm"], r["state"], str(r["attempts"]), r["started"] or "-",
              r["ended"] or "-", (r["error"] or "-").splitlines()[0], r["log"]]
             for r in wave["rows"]],
            ["line", "vm", "state", "attempts", "started", "ended", "error", "log"])]
    out += ["", f"total: {counts_text(doc['counts'])}"]
    return out


def counts_text(counts: dict[str, int]) -> str:
    rows = sum(counts.values())
    shown = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    return f"{rows} row{'s' if rows != 1 else ''}: {shown}"


def _zero() -> dict[str, int]:
    return dict.fromkeys(STATES, 0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True
