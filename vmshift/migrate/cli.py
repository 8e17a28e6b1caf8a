"""CLI for `vmshift migrate`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import click

from vmshift import units
from vmshift.cliutil import bandwidth_option, dry_run_option, json_option
from vmshift.convert import maps
from vmshift.errors import BadInput, OperationFailed
from vmshift.libvirtconn import connect
from vmshift.migrate import facts as F
from vmshift.migrate import preflight, report
from vmshift.migrate.job import run_and_judge
from vmshift.migrate.live import LiveRequest, describe, validate
from vmshift.migrate.lock import domain_lock
from vmshift.migrate.monitor import Interrupt
from vmshift.migrate.offline import OfflineRequest, plan, run_offline, state_locations
from vmshift.migrate.policy import Settings, TimeoutAction
from vmshift.migrate.recover import RECOVER_TIMEOUT_S
from vmshift.migrate.statefiles import state_note
from vmshift.migrate.storage import StorageRequest, check_request, run_storage
from vmshift.output import emit_json


def common(f: Callable[..., Any]) -> Callable[..., Any]:
    """--source/--dest/--skip-check/--json, on every migrate subcommand."""
    for deco in reversed([
        click.argument("domain"),
        click.option("--source", default="qemu:///system", show_default=True,
                     help="Source libvirt URI (passed to libvirt unchanged: qemu+ssh://, "
                          "qemu+tls:// work)."),
        click.option("--dest", required=True, help="Destination libvirt URI."),
        click.option("--skip-check", "force", multiple=True, metavar="CHECK_ID",
                     help="Override one preflight blocker by its id (repeatable)."),
        json_option,
    ]):
        f = deco(f)
    return f


network_map_option = maps.network_map_option(
    "Rewrite NIC networks and bridges in the destination XML.")


def _netmap(value: maps.NetworkMap | None) -> maps.NetworkMap:
    return value or maps.NetworkMap()


def open_hosts(domain: str, source: str, dest: str):
    """Both hosts' connections, and the domain on the source."""
    src, dst = connect(source, role="source"), connect(dest, role="destination")
    return src, dst, F.lookup_domain(src, domain)


def run_preflight(domain: str, source: str, dest: str, opts: F.Options, force: tuple[str, ...],
                  clock: F.ClockProbe = F.no_clock_probe, conns=None):
    forced = preflight.validate_force(force)
    src, dst, dom = conns or open_hosts(domain, source, dest)
    facts = F.gather(src, dst, dom, opts, clock)
    return src, dst, dom, facts, preflight.evaluate(facts, force=forced)


@click.group()
def migrate() -> None:
    """Live, suspended, offline and storage migrations between libvirt hosts.

    Exit codes: 0 done, 1 failed (before a post-copy switch the VM stays on
    the source; after one, the message says where it is and how to resume),
    2 bad input, 3 refused by a preflight blocker (override one with
    --skip-check CHECK_ID).
    """


@migrate.command("check")
@common
@click.option("--mode", type=click.Choice(["live", "suspended", "offline"]), default="live",
              show_default=True, help="The migration the checks are for.")
@click.option("--copy-storage", type=click.Choice(["all", "inc"]))
@click.option("--disk", "disks", multiple=True, metavar="TARGET",
              help="With --copy-storage: only this disk (vda); repeatable.")
@network_map_option
@click.option("--migrate-uri", help="Migration stream URI, e.g. tcp://ADDRESS.")
@click.option("--unsafe", is_flag=True)
@click.option("--dest-pool", help="Offline: the pool disks would be copied to.")
def migrate_check(domain: str, source: str, dest: str, force: tuple[str, ...], json_mode: bool,
                  mode: str, copy_storage: str | None, disks: tuple[str, ...],
                  network_map: maps.NetworkMap | None, migrate_uri: str | None, unsafe: bool,
                  dest_pool: str | None) -> None:
    """Preflight: blocker, warning and info findings for DOMAIN's move."""
    opts = F.Options(mode=mode, copy_storage=copy_storage,
                     copy_disks=list(disks) or None,
                     network_map=_netmap(network_map), migrate_uri=migrate_uri, unsafe=unsafe,
                     dest_pool=dest_pool)
    *_, findings = run_preflight(domain, source, dest, opts, force)
    if not json_mode:
        click.echo(preflight.render(findings))
    doc = {"domain": domain, "source": source, "dest": dest,
           "findings": [f.__dict__ for f in findings]}
    preflight.refuse_if_blocked(findings, ("migrate_check", doc))
    if json_mode:
        emit_json("migrate_check", {**doc, "outcome": "ok"})


def live_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        bandwidth_option("the migration stream (libvirt counts whole MiB/s)"),
        click.option("--max-downtime", type=int, default=500, show_default=True, metavar="ms",
                     help="Downtime cap: no policy ever sets more."),
        click.option("--policy", type=click.Choice(["adaptive", "nova", "fixed"]),
                     default="adaptive", show_default=True),
        click.option("--auto-converge", is_flag=True, help="Permit throttling the guest CPUs."),
        click.option("--ac-initial", type=int, default=20, show_default=True, metavar="P"),
        click.option("--ac-increment", type=int, default=10, show_default=True, metavar="P"),
        click.option("--compression", type=click.Choice(["xbzrle", "mt"])),
        click.option("--parallel", type=int, metavar="N", help="multifd connections."),
        click.option("--postcopy", is_flag=True,
                     help="Permit post-copy. RISK: after the switch the guest runs on the "
                          "destination while its memory is still on the source; a network "
                          "failure then needs post-copy recovery, which vmshift retries for "
                          "--recover-timeout."),
        click.option("--postcopy-after", type=float, metavar="SECONDS"),
        click.option("--recover-timeout", type=click.FloatRange(min=0),
                     default=RECOVER_TIMEOUT_S, show_default=True, metavar="SECONDS",
                     help="After a network or destination failure past the post-copy "
                          "switch: how long to retry libvirt's post-copy recovery."),
        click.option("--copy-storage", type=click.Choice(["all", "inc"])),
        click.option("--disk", "disks", multiple=True, metavar="TARGET",
                     help="With --copy-storage: only this disk (vda); repeatable."),
        network_map_option,
        click.option("--migrate-uri", help="Migration stream URI, e.g. tcp://ADDRESS."),
        click.option("--tls", is_flag=True, help="Encrypt the migration stream (QEMU TLS)."),
        click.option("--unsafe", is_flag=True,
                     help="libvirt's UNSAFE flag: migrate although libvirt cannot prove the "
                          "storage is shared/coherent (e.g. cache!=none on a cluster FS)."),
        click.option("--timeout", type=float, metavar="SECONDS"),
        click.option("--timeout-action", type=click.Choice([a.value for a in TimeoutAction]),
                     default="abort", show_default=True),
        click.option("--keep-source", is_flag=True,
                     help="Keep the source definition (inactive) after success."),
        click.option("--live-migration-downtime", type=int, default=500, show_default=True,
                     help="nova policy: nova.conf [libvirt] option of the same name."),
        click.option("--live-migration-downtime-steps", type=int, default=10, show_default=True),
        click.option("--live-migration-downtime-delay", type=int, default=75, show_default=True),
        click.option("--live-migration-completion-timeout", type=int, default=800,
                     show_default=True),
        dry_run_option,
    ]
    for deco in reversed(opts):
        f = deco(f)
    return f


def _mib(bandwidth: int | None) -> int | None:
    """--bandwidth (bytes/s) in the whole MiB/s libvirt takes."""
    try:
        return None if bandwidth is None else units.whole_mib(bandwidth)
    except ValueError as exc:
        raise BadInput(f"--bandwidth: {exc}") from None


def _request(domain: str, source: str, dest: str, live: bool, kw: dict[str, Any]) -> LiveRequest:
    s = Settings(
        max_downtime_ms=kw["max_downtime"], auto_converge=kw["auto_converge"],
        ac_initial=kw["ac_initial"], ac_increment=kw["ac_increment"], postcopy=kw["postcopy"],
        postcopy_after=kw["postcopy_after"], timeout=kw["timeout"],
        timeout_action=TimeoutAction(kw["timeout_action"]),
        live_migration_downtime=kw["live_migration_downtime"],
        live_migration_downtime_steps=kw["live_migration_downtime_steps"],
        live_migration_downtime_delay=kw["live_migration_downtime_delay"],
        live_migration_completion_timeout=kw["live_migration_completion_timeout"])
    req = LiveRequest(
        domain=domain, source=source, dest=dest, live=live, policy=kw["policy"], settings=s,
        bandwidth_mib=_mib(kw["bandwidth"]), compression=kw["compression"],
        parallel=kw["parallel"], copy_storage=kw["copy_storage"], disks=list(kw["disks"]) or None,
        network_map=_netmap(kw["network_map"]),
        migrate_uri=kw["migrate_uri"] or F.migration_address(dest), tls=kw["tls"],
        unsafe=kw["unsafe"], keep_source=kw["keep_source"])
    validate(req)
    return req


def _migrate(domain: str, source: str, dest: str, force: tuple[str, ...], json_mode: bool,
             live: bool, kw: dict[str, Any]) -> None:
    req = _request(domain, source, dest, live, kw)
    mode = "live" if live else "suspended"
    if req.settings.postcopy and not json_mode:
        click.echo("vmshift: --postcopy: once switched, the guest lives on the destination; "
                   "if the network breaks, vmshift resumes it by libvirt's post-copy "
                   "recovery (--recover-timeout).", err=True)
    preflight.validate_force(force)
    conns = open_hosts(domain, source, dest)
    # The lock comes first: a migration in flight already shows the domain
    # on the destination, and a second run must hear "busy", not that.
    with domain_lock(conns[2].UUIDString(), domain, f"migrate {mode} -> {dest}",
                     _busy(domain, mode, source, dest)):
        src, dst, dom, facts, findings = run_preflight(domain, source, dest, req.options(),
                                                       force, conns=conns)
        rep = report.Report(domain, mode, source, dest, ok=False, policy=req.policy,
                            findings=[f.__dict__ for f in findings])
        if preflight.blockers(findings) or kw["dry_run"]:
            if not json_mode:
                click.echo(preflight.render(findings), err=True)
            preflight.refuse_if_blocked(findings, ("migrate", rep.to_dict()))
            rep.ok, rep.notes = True, ["dry run: nothing changed", *describe(req)]
            if req.settings.postcopy:
                rep.notes.append("after the post-copy switch, a broken link is recovered "
                                 f"for up to {kw['recover_timeout']:g} s (--recover-timeout)")
            _finish(rep, json_mode)
            return
        with Interrupt().trapped() as interrupt:
            run_and_judge(rep, req, src, dst, dom, live, kw["recover_timeout"], json_mode,
                          interrupt)
    _finish(rep, json_mode)


def _busy(domain: str, mode: str, source: str, dest: str) -> tuple[str, dict[str, Any]]:
    """The document a refusal for a busy domain prints with --json."""
    return "migrate", report.Report(domain, mode, source, dest, ok=False).to_dict()


def _finish(rep: report.Report, json_mode: bool) -> None:
    if not json_mode:
        click.echo(report.render(rep))
    elif rep.ok:  # on failure main() prints the error document carrying the report
        emit_json("migrate", {**rep.to_dict(), "outcome": "ok"})
    if not rep.ok:
        raise OperationFailed(f"migration of {rep.domain} failed ({rep.category}): "
                              f"{rep.error}; {rep.where}", detail=rep.to_dict())


@migrate.command("live")
@common
@live_options
def migrate_live(domain: str, source: str, dest: str, force: tuple[str, ...], json_mode: bool,
                 **kw: Any) -> None:
    """Live migration (pre-copy, post-copy if permitted) under a convergence policy."""
    _migrate(domain, source, dest, force, json_mode, True, kw)


@migrate.command("suspended")
@common
@live_options
def migrate_suspended(domain: str, source: str, dest: str, force: tuple[str, ...],
                      json_mode: bool, **kw: Any) -> None:
    """Non-live migration: paused during the copy, resumed on the destination
    (or on the source on failure)."""
    _migrate(domain, source, dest, force, json_mode, False, kw)


@migrate.command("offline")
@common
@click.option("--dest-pool", help="Pool on the destination for disks it cannot see.")
@network_map_option
@click.option("--keep-source", is_flag=True, help="Keep the source definition.")
@click.option("--delete-source", is_flag=True,
              help="Delete copied source volumes (only after a verified copy).")
@dry_run_option
def migrate_offline(domain: str, source: str, dest: str, force: tuple[str, ...],
                    json_mode: bool, dest_pool: str | None, network_map: maps.NetworkMap | None,
                    keep_source: bool, delete_source: bool, dry_run: bool) -> None:
    """Move a shut-off VM: definition, and unshared disks copied and verified."""
    req = OfflineRequest(domain, dest_pool, _netmap(network_map), keep_source, delete_source)
    opts = F.Options(mode="offline", network_map=req.network_map, dest_pool=dest_pool)
    preflight.validate_force(force)
    conns = open_hosts(domain, source, dest)
    with domain_lock(conns[2].UUIDString(), domain, f"migrate offline -> {dest}",
                     _busy(domain, "offline", source, dest)):
        src, dst, dom, facts, findings = run_preflight(domain, source, dest, opts, force,
                                                       conns=conns)
        rep = report.Report(domain, "offline", source, dest, ok=False,
                            findings=[f.__dict__ for f in findings])
        if preflight.blockers(findings) or dry_run:
            if not json_mode:
                click.echo(preflight.render(findings), err=True)
            preflight.refuse_if_blocked(findings, ("migrate", rep.to_dict()))
            rep.ok, rep.notes = True, ["dry run: nothing changed",
                                       *plan(facts.domain, req, state_locations(dom))]
            _finish(rep, json_mode)
            return
        t0 = time.monotonic()
        try:
            res = run_offline(req, src, dst, dom, facts.domain, json_mode)
        except OperationFailed as exc:
            rep.error, rep.category = exc.message, report.categorise(exc.message)
            rep.where = "source definition and disks untouched"
            _finish(rep, json_mode)
            return
        rep.total_time_s = round(time.monotonic() - t0, 2)
        rep.ok, rep.where = True, "defined on the destination"
        rep.disk_bytes = sum(c.bytes for c in res.copied)
        rep.bytes_transferred = rep.disk_bytes + sum(s.bytes for s in res.states
                                                     if s.status == "copied")
        rep.notes = [f"copied {c.target}: {c.source_path} -> {c.dest_path} content sha256 "
                     f"{c.sha256} verified" for c in res.copied]
        rep.notes += [state_note(s) for s in res.states]
        rep.notes += [f"deleted source volume {p}" for p in res.deleted]
        rep.notes += [f"deleted source state file {p}" for p in res.deleted_states]
        if res.source_undefined:
            rep.notes.append("source definition removed")
    _finish(rep, json_mode)


@migrate.command("storage")
@click.argument("domain")
@click.option("--source", default="qemu:///system", show_default=True,
              help="libvirt URI of the host (passed to libvirt unchanged).")
@click.option("--disk", "disks", multiple=True, metavar="TARGET",
              help="Disk to move (vda); repeatable. Default: every disk not in "
                   "--dest-pool yet.")
@click.option("--dest-pool", required=True, help="Pool on the same host to move to.")
@click.option("--format", "fmt", type=click.Choice(["qcow2", "raw"]))
@bandwidth_option("the block copy (libvirt counts whole MiB/s)")
@click.option("--delete-source", is_flag=True,
              help="Delete the old volume after the move is verified.")
@json_option
@dry_run_option
def migrate_storage(domain: str, source: str, disks: tuple[str, ...], dest_pool: str,
                    fmt: str | None, bandwidth: int | None, delete_source: bool,
                    json_mode: bool, dry_run: bool) -> None:
    """Move disks to another pool: live block copy + pivot, or offline copy."""
    req = StorageRequest(domain, list(disks), dest_pool, fmt, _mib(bandwidth), delete_source)
    src = connect(source, role="source")
    dom = F.lookup_domain(src, domain)
    live = bool(dom.isActive())
    rep = report.Report(domain, "storage", source, dest_pool, ok=False)
    if dry_run:
        _, chosen = check_request(req, src, dom)  # refuses what the real run would
        rep.ok = True
        rep.notes = ["dry run: nothing changed",
                     *(f"{'blockcopy+pivot' if live else 'copy'} {d} -> pool {dest_pool}"
                       for d in chosen)]
        _finish(rep, json_mode)
        return
    with domain_lock(dom.UUIDString(), domain, f"migrate storage -> {dest_pool}",
                     _busy(domain, "storage", source, dest_pool)):
        t0 = time.monotonic()
        try:
            with Interrupt().trapped() as interrupt:
                res = run_storage(req, src, dom, interrupt, json_mode)
        except OperationFailed as exc:
            rep.error, rep.category = exc.message, report.categorise(exc.message)
            rep.where = "VM on its old disk(s)"
            _finish(rep, json_mode)
            return
        rep.total_time_s = round(time.monotonic() - t0, 2)
        rep.ok = True
        rep.where = "live and persistent XML point to the new volume(s)" if live else \
            "definition points to the new volume(s)"
        rep.notes = [f"{m.target}: {m.old_path} -> {m.new_path} ({m.format})"
                     + (", old volume deleted" if m.deleted_old else "") for m in res.moved]
    _finish(rep, json_mode)
