"""What `vmshift plan report` tells of a plan's run, from its state file: a summary
(rows per state, the time span, bytes moved, the downtime of live rows), per
wave its rows and per row its attempts; as a document, a short text and a CSV
(docs/plan.md). The HTML page with its timeline is vmshift.plan.gantt.

A row's ``started`` is its first attempt's start and ``ended`` its last
attempt's end (None while that attempt runs); ``seconds``, ``bytes``,
``downtime_ms``, ``type`` and ``target`` are from the metrics the runner
recorded for its last attempt (seconds, when not recorded, is that attempt's end
minus its start). Any metric may be missing: it is then None.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from vmshift.plan import csvio
from vmshift.plan import status as view
from vmshift.plan.schedule import clock
from vmshift.plan.state import RunState
from vmshift.plan.status import counts_text
from vmshift.units import human

CSV_COLUMNS = ("wave", "vm", "source", "type", "state", "attempts", "started", "ended",
               "seconds", "bytes", "downtime_ms", "target", "error")
# Each metric and the type its value must have to be believed (None otherwise).
_METRICS: dict[str, tuple[type, ...]] = {"type": (str,), "target": (str,),
                                         "seconds": (int, float), "bytes": (int,),
                                         "downtime_ms": (int, float)}


def document(state: RunState, plan_sha: str | None, now: str) -> dict[str, Any]:
    """The plan_report payload; NOW (the report's time, as state.now() writes
    times) ends the attempts still running."""
    base = view.document(state, plan_sha)
    tries: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for attempt in state.all_attempts():
        key = (attempt.pop("wave"), attempt.pop("vm"), attempt.pop("source"))
        tries.setdefault(key, []).append(attempt)
    waves = []
    for wave in base["waves"]:
        rows = [_row(wave["wave"], r, tries.get((wave["wave"], r["vm"], r["source"]), []))
                for r in wave["rows"]]
        waves.append({"wave": wave["wave"], "counts": wave["counts"], **_span(rows, now),
                      "bytes": _total(rows, "bytes"), "rows": rows})
    every = [r for w in waves for r in w["rows"]]
    live = [{"wave": r["wave"], "vm": r["vm"], "state": r["state"],
             "downtime_ms": r["downtime_ms"]} for r in every if r["type"] == "live"]
    summary = {"rows": base["rows"], "waves": len(waves), "counts": base["counts"],
               **_span(every, now), "bytes": _total(every, "bytes"), "live": live}
    return {"state": base["state"], "plan": base["plan"], "runner": base["runner"],
            "generated": now, "summary": summary, "waves": waves}


def _row(wave: str, row: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    metrics = row["metrics"] if isinstance(row["metrics"], dict) else {}
    got = {name: metrics.get(name) if isinstance(metrics.get(name), kinds)
           and not isinstance(metrics.get(name), bool) else None
           for name, kinds in _METRICS.items()}
    if got["seconds"] is None and row["started"] and row["ended"]:
        got["seconds"] = round(epoch(row["ended"]) - epoch(row["started"]), 3)
    return {"wave": wave, "line": row["line"], "vm": row["vm"], "source": row["source"],
            "state": row["state"], "attempts": row["attempts"],
            "started": history[0]["started"] if history else None,
            "ended": history[-1]["ended"] if history else None, **got,
            "step": row["step"], "error": row["error"], "log": row["log"],
            "metrics": row["metrics"], "history": history}


def _span(rows: list[dict[str, Any]], now: str) -> dict[str, Any]:
    """first: the first start; last: the last end, or NOW while a row runs."""
    starts = [r["started"] for r in rows if r["started"]]
    if not starts:
        return {"first": None, "last": None, "seconds": None, "running": False}
    running = any(a["ended"] is None for r in rows for a in r["history"])
    first = min(starts, key=epoch)
    last = now if running else max((r["ended"] for r in rows if r["ended"]), key=epoch)
    return {"first": first, "last": last, "running": running,
            "seconds": round(epoch(last) - epoch(first), 3)}


def _total(rows: list[dict[str, Any]], name: str) -> int:
    return sum(r[name] for r in rows if r[name] is not None)


def epoch(stamp: str) -> float:
    """A time the state file wrote (ISO 8601, UTC, 'Z') as POSIX seconds."""
    return datetime.fromisoformat(stamp).timestamp()


def text(doc: dict[str, Any]) -> list[str]:
    plan, summary = doc["plan"], doc["summary"]
    out = [f"{doc['state']}: plan {plan['path']} (sha256 {plan['sha256'][:12]}), "
           f"first run {plan['first_run']}"]
    if plan["matches"] is False:
        out.append("  the plan file has changed since it was last run")
    for wave in doc["waves"]:
        out.append(f"wave {wave['wave']}: {counts_text(wave['counts'])}; "
                   f"{span_text(wave)}; {human(wave['bytes'])} moved")
    out.append(f"total: {counts_text(summary['counts'])}")
    out.append(f"time: {span_text(summary)}")
    out.append(f"bytes moved: {human(summary['bytes'])} ({summary['bytes']} bytes)")
    if summary["live"]:
        out.append("downtime of live rows: " + ", ".join(
            f"{r['vm']} {_ms(r['downtime_ms'])}" for r in summary["live"]))
    return out


def span_text(span: dict[str, Any]) -> str:
    """FIRST .. LAST (H:MM:SS) of a wave or the run."""
    if span["first"] is None:
        return "not started"
    still = ", still running" if span["running"] else ""
    return f"{span['first']} .. {span['last']} ({clock(span['seconds'])}{still})"


def _ms(value: float | None) -> str:
    return "? ms" if value is None else f"{value:g} ms"


def csv_text(doc: dict[str, Any]) -> str:
    """One line per row, the columns of CSV_COLUMNS; unknown values are empty."""
    return csvio.format_csv(list(CSV_COLUMNS), (
        ["" if r[c] is None else str(r[c]) for c in CSV_COLUMNS]
        for w in doc["waves"] for r in w["rows"]))
