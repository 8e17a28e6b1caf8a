"""CLI for `vmshift evacuate` and `vmshift maintenance`."""

from __future__ import annotations

import time
from typing import Any

import click
import libvirt

from vmshift import units
from vmshift.cliutil import (
    SIZE,
    bandwidth_option,
    dry_run_option,
    json_option,
    on_interrupt_option,
)
from vmshift.convert import maps
from vmshift.errors import BadInput, OperationFailed, Refused
from vmshift.libvirtconn import connect
from vmshift.migrate import facts as F
from vmshift.migrate import preflight
from vmshift.migrate.evacuate import gather, maintenance, placement
from vmshift.migrate.evacuate.executor import Evacuation, RunOptions
from vmshift.migrate.evacuate.render import document, render_plan, render_results
from vmshift.migrate.live import LiveRequest, validate
from vmshift.migrate.offline import OfflineRequest
from vmshift.migrate.policy import Settings
from vmshift.migrate.recover import RECOVER_TIMEOUT_S
from vmshift.output import emit_json


def _split(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@click.command()
@click.option("--source", required=True, help="libvirt URI of the host to empty.")
@click.option("--targets", "targets", multiple=True, required=True, metavar="URI[,URI...]",
              help="libvirt URIs of the hosts that take the VMs (comma-separated or "
                   "repeated).")
@click.option("--max-parallel", type=click.IntRange(min=1), default=2, show_default=True,
              help="Migrations running at once.")
@bandwidth_option("all migrations together (the budget is split evenly between those "
                  "running, and re-split when one ends)")
@click.option("--policy", type=click.Choice(["adaptive", "nova", "fixed"]),
              default="adaptive", show_default=True, help="The migrate convergence policy.")
@click.option("--max-downtime", type=click.IntRange(min=1), default=500, show_default=True,
              metavar="ms", help="Downtime cap of each live migration.")
@click.option("--postcopy", is_flag=True, help="Permit post-copy (see `migrate live`).")
@click.option("--order", type=click.Choice(placement.ORDERS), default="smallest-first",
              show_default=True, help="Which VMs move first (priority: from each domain's "
                                      "metadata or --priority-file, highest first).")
@click.option("--priority-file", type=maps.MapParam(maps.parse_priority_map), metavar="MAP",
              help="DOMAIN=PRIORITY per line (or inline DOMAIN=N,...); overrides metadata.")
@click.option("--only", multiple=True, metavar="DOMAIN", help="Move only this VM (repeatable).")
@click.option("--exclude", multiple=True, metavar="DOMAIN", help="Leave this VM (repeatable).")
@click.option("--shutoff-vms", type=click.Choice(["move", "leave"]), default="move",
              show_default=True, help="Defined but stopped VMs: moved offline, or left.")
@click.option("--on-failure", type=click.Choice(["continue", "stop"]), default="continue",
              show_default=True, help="After a failed move: go on, or start no more. With "
                                      "stop, a VM no target can take refuses the whole plan.")
@on_interrupt_option("migrations")
@click.option("--mark-maintenance", is_flag=True,
              help="Record the source as in maintenance: no evacuation places VMs on it "
                   "until `vmshift maintenance clear`.")
@click.option("--reason", default="", help="With --mark-maintenance: why (recorded).")
@click.option("--memory-overcommit", type=float, default=1.0, show_default=True,
              help="Guest memory a target may hold, as a multiple of its total.")
@click.option("--cpu-overcommit", type=float, default=4.0, show_default=True,
              help="vCPUs a target may run per physical CPU.")
@click.option("--reserve", type=SIZE, default="512M", show_default=True, metavar="SIZE",
              help="Memory each target keeps for itself, never given to guests.")
@click.option("--migrate-uri-template", metavar="TEMPLATE",
              help="Each target's migration stream, e.g. 'tcp://{host}' ({host}: the "
                   "host in its URI). Default: that host when it is an IP address.")
@click.option("--copy-storage", type=click.Choice(["all", "inc"]),
              help="Copy disks that the targets do not share.")
@click.option("--dest-pool", help="Shut-off VMs: the pool for disks a target cannot see.")
@maps.network_map_option("Rewrite NIC networks and bridges on the targets.")
@click.option("--unsafe", is_flag=True, help="libvirt's UNSAFE flag (see `migrate live`).")
@click.option("--tls", is_flag=True, help="Encrypt the migration streams (QEMU TLS).")
@click.option("--recover-timeout", type=click.FloatRange(min=0), default=RECOVER_TIMEOUT_S,
              show_default=True, metavar="SECONDS",
              help="Post-copy recovery time after a failure past the switch.")
@click.option("--skip-check", "skip", multiple=True, metavar="CHECK_ID",
              help="Override one preflight blocker by its id (repeatable).")
@dry_run_option
@json_option
def evacuate(**kw: Any) -> None:
    """Move every VM off a libvirt host, keeping each one running.

    Each VM goes to the target with the most memory left that passes the
    migrate preflight and has the memory and vCPU headroom; a VM no target
    can take is reported before anything moves. Exit: 0 when no running VM
    is left on the source (apart from exclusions), 1 when some could not be
    moved, 2 bad input, 3 when the plan is refused.
    """
    skip = tuple(preflight.validate_force(kw["skip"]))
    kw["network_map"] = kw["network_map"] or maps.NetworkMap()
    limits = placement.Limits(kw["memory_overcommit"], kw["cpu_overcommit"],
                              kw["reserve"] // units.KiB)
    target_uris = _split(kw["targets"])
    if not target_uris:
        raise BadInput("--targets: no URI given")
    source = gather.open_source(kw["source"])
    targets = gather.open_targets(target_uris, source)
    try:
        _evacuate(source, targets, limits, skip, kw)
    finally:
        gather.close(source, *targets)


def _evacuate(source: gather.Host, targets: list[gather.Host], limits: placement.Limits,
              skip: tuple[str, ...], kw: dict[str, Any]) -> None:
    uris = {t.uri: F.migration_address(t.uri, kw["migrate_uri_template"]) for t in targets}
    o = _run_options(kw, uris)
    facts = gather.gather(
        source, targets,
        gather.Selection(tuple(kw["only"]), tuple(kw["exclude"]), kw["shutoff_vms"],
                         kw["priority_file"] or {}),
        gather.Checks(kw["network_map"], kw["copy_storage"], kw["unsafe"], kw["dest_pool"],
                      skip, uris))
    the_plan = placement.plan(facts.guests, facts.plan_targets, limits, kw["order"])
    doc = document(source, facts, the_plan, kw["dry_run"])
    _refuse_if_blocked(the_plan, kw["on_failure"], doc)
    if kw["dry_run"]:
        _finish(doc, render_plan(doc, the_plan), kw["json_mode"], ok=True)
        return
    if kw["mark_maintenance"]:  # first: nothing may be placed on it from now on
        entry = maintenance.mark(source.uuid or "", source.uri, source.name, kw["reason"])
        doc["maintenance"] = entry.as_dict()
    if not kw["json_mode"]:
        click.echo("\n".join(render_plan(doc, the_plan)), err=True)
    t0 = time.monotonic()
    run = Evacuation(the_plan, source.uri, o)
    results = run.run()
    doc.update(total_time_s=round(time.monotonic() - t0, 2), peak_parallel=run.peak_parallel,
               stopped_by=run.stopped_by, results=[r.as_dict() for r in results])
    doc["left_behind"] = _left_behind(source, facts, doc)
    ok = not doc["left_running"] and all(r.outcome == "moved" for r in results)
    _finish(doc, render_results(doc), kw["json_mode"], ok=ok)


def _run_options(kw: dict[str, Any], uris: dict[str, str | None]) -> RunOptions:
    settings = Settings(max_downtime_ms=kw["max_downtime"], postcopy=kw["postcopy"])
    budget = None if kw["bandwidth"] is None else units.whole_mib(kw["bandwidth"])
    o = RunOptions(max_parallel=kw["max_parallel"], bandwidth_mib=budget, policy=kw["policy"],
                   settings=settings, migrate_uris=uris,
                   live_extra={"copy_storage": kw["copy_storage"], "tls": kw["tls"],
                               "unsafe": kw["unsafe"],
                               "network_map": kw["network_map"]},
                   offline=OfflineRequest("", kw["dest_pool"], kw["network_map"]),
                   recover_timeout=kw["recover_timeout"], on_failure=kw["on_failure"],
                   on_interrupt=kw["on_interrupt"], json_mode=kw["json_mode"])
    # The same validation `migrate live` applies, once, before anything moves.
    validate(LiveRequest(domain="", source="", dest="", policy=o.policy, settings=settings,
                         bandwidth_mib=budget, **o.live_extra))
    return o


def _refuse_if_blocked(the_plan: placement.Plan, on_failure: str, doc: dict[str, Any]) -> None:
    """Exit 3 before anything moves: no VM can go anywhere, or (with
    --on-failure stop) one of them cannot."""
    if not the_plan.unplaced:
        return
    names = ", ".join(u.guest.name for u in the_plan.unplaced)
    if not the_plan.placements:
        why = f"no VM can be placed on any target: {names}"
    elif on_failure == "stop":
        why = f"--on-failure stop: {len(the_plan.unplaced)} VM(s) cannot be placed: {names}"
    else:
        return
    findings = [{"id": "evacuate.unplaceable", "severity": "blocker",
                 "message": f"{u.guest.name}: " + "; ".join(
                     f"{t}: {r}" for t, r in sorted(u.reasons.items()))}
                for u in the_plan.unplaced]
    raise Refused(why, detail=findings, document=("evacuate", {**doc, "findings": findings}))


def _left_behind(source: gather.Host, facts: gather.Facts, doc: dict[str, Any]
                 ) -> list[dict[str, str]]:
    """Every VM still on the source after the run, with the reason; sets
    doc["left_running"] to those running that should have moved."""
    assert source.conn is not None
    results = {r["vm"]: r for r in doc["results"]}
    unplaced = {u["vm"]: u for u in doc["plan"]["unplaced"]}
    left, running = [], []
    for dom in source.conn.listAllDomains(0):
        name, active = dom.name(), bool(dom.isActive())
        if name in facts.left:
            why = facts.left[name]
        elif name in unplaced:
            why = "no target can take it: " + "; ".join(
                f"{t}: {r}" for t, r in sorted(unplaced[name]["reasons"].items()))
        elif name in results and results[name]["outcome"] != "moved":
            r = results[name]
            why = (f"{r['outcome']}: {r['error']}" if r["error"] else r["outcome"])
        elif name in results:
            why = "moved, yet still defined here"
        else:
            why = "appeared on the source during the evacuation"
        left.append({"vm": name, "state": "running" if active else "shut off", "reason": why})
        if active and name not in facts.excluded:
            running.append(name)
    doc["left_running"] = running
    return left


def _finish(doc: dict[str, Any], lines: list[str], json_mode: bool, ok: bool) -> None:
    if not json_mode:
        click.echo("\n".join(lines))
    if ok:
        if json_mode:
            emit_json("evacuate", {**doc, "outcome": "ok"})
        return
    left = ", ".join(doc.get("left_running", [])) or "none"
    failed = ", ".join(r["vm"] for r in doc.get("results", []) if r["outcome"] != "moved")
    raise OperationFailed(f"evacuation of {doc['source']['uri']} incomplete: running VM(s) "
                          f"left on the source: {left}; failed moves: {failed or 'none'}",
                          document=("evacuate", doc))


@click.group()
def maintenance_cmd() -> None:
    """Hosts recorded as in maintenance (`evacuate --mark-maintenance`)."""


@maintenance_cmd.command("list")
@json_option
def maintenance_list(json_mode: bool) -> None:
    """Every host in maintenance."""
    found = maintenance.entries()
    if json_mode:
        emit_json("maintenance", {"hosts": [e.as_dict() for e in found],
                                  "state_file": str(maintenance.state_file())})
        return
    for e in found:
        click.echo(f"{e.hostname}  {e.uri}  uuid {e.uuid}  since {e.since}"
                   + (f"  ({e.reason})" if e.reason else ""))
    if not found:
        click.echo("no host in maintenance")


@maintenance_cmd.command("clear")
@click.argument("uri")
@dry_run_option
@json_option
def maintenance_clear(uri: str, dry_run: bool, json_mode: bool) -> None:
    """Take the host at URI out of maintenance (keyed by its libvirt host UUID)."""
    conn = connect(uri, readonly=True)
    try:
        uuid = maintenance.host_uuid(conn)
    except libvirt.libvirtError as exc:
        raise OperationFailed(f"{uri}: {exc.get_error_message()}") from None
    finally:
        conn.close()
    entry = maintenance.get(uuid) if dry_run else maintenance.clear(uuid)
    doc = {"uri": uri, "uuid": uuid, "was_in_maintenance": entry is not None,
           "entry": entry.as_dict() if entry else None, "dry_run": dry_run}
    if json_mode:
        emit_json("maintenance_clear", doc)
        return
    verb = "would be taken" if dry_run else "taken"
    click.echo(f"{uri} (uuid {uuid}): " + (f"{verb} out of maintenance (since {entry.since})"
                                          if entry else "was not in maintenance"))
