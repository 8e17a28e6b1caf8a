"""The evacuation's document (--json) and its text for people."""

from __future__ import annotations

from typing import Any

from vmshift.migrate.evacuate.gather import Facts, Host
from vmshift.migrate.evacuate.placement import Plan
from vmshift.output import table
from vmshift.units import human


def document(source: Host, facts: Facts, plan: Plan, dry_run: bool) -> dict[str, Any]:
    """What is known before anything moves; the run adds its results."""
    return {
        "source": {"uri": source.uri, "hostname": source.name, "uuid": source.uuid},
        "targets": [{"name": t.name, "uri": t.uri, "uuid": t.uuid, "reachable": t.conn is not None,
                     "error": t.error} for t in facts.targets],
        "plan": plan.as_dict(),
        "left": [{"vm": vm, "reason": why} for vm, why in sorted(facts.left.items())],
        "dry_run": dry_run,
    }


def render_plan(doc: dict[str, Any], plan: Plan) -> list[str]:
    src = doc["source"]
    lines = [f"evacuate {src['hostname']} ({src['uri']})"
             + (": dry run, nothing moves" if doc["dry_run"] else "")]
    lines += [f"  target {t['name']} ({t['uri']}): unreachable: {t['error']}"
              for t in doc["targets"] if not t["reachable"]]
    lines += [f"  target {t['name']}: in maintenance, takes nothing"
              for t in doc["plan"]["targets"] if t["in_maintenance"]]
    lines += ["", *plan.render()]
    lines += [f"  {x['vm']}: stays ({x['reason']})" for x in doc["left"]]
    return lines


def render_results(doc: dict[str, Any]) -> list[str]:
    rows = [[r["vm"], r["outcome"], r["target"], _num(r["time_s"], "s"),
             human(r["bytes"]) if r["bytes"] is not None else "-",
             _num(r["downtime_ms"], "ms"), r["error"] or r["where"] or ""]
            for r in doc["results"]]
    lines = table(rows, ["VM", "OUTCOME", "TARGET", "TIME", "MOVED", "DOWNTIME", "NOTE"])
    lines.append(f"{sum(r['outcome'] == 'moved' for r in doc['results'])} of "
                 f"{len(doc['results'])} moved in {doc['total_time_s']:.1f} s, at most "
                 f"{doc['peak_parallel']} at once"
                 + (f"; stopped starting new ones ({doc['stopped_by']})"
                    if doc["stopped_by"] else ""))
    if doc["left_behind"]:
        lines += ["", "left on the source:"]
        lines += [f"  {x['vm']} ({x['state']}): {x['reason']}" for x in doc["left_behind"]]
    if "maintenance" in doc:
        lines.append(f"source marked in maintenance (uuid {doc['source']['uuid']}); "
                     f"clear it with: vmshift maintenance clear {doc['source']['uri']}")
    return lines


def _num(value: float | None, unit: str) -> str:
    return "-" if value is None else f"{value:g} {unit}"
