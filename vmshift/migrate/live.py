"""Live (pre-copy, optionally post-copy) and suspended migration.

The guarantee: whatever fails before the post-copy switch, the VM is still
running on the source. libvirt's migration protocol already resumes the
source on failure; vmshift adds a clean abort on Ctrl-C/SIGTERM, resets any
throttle it applied, and verifies where the VM runs before reporting.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import libvirt

from vmshift.convert.maps import NetworkMap
from vmshift.errors import BadInput, OperationFailed
from vmshift.migrate import xmlmap
from vmshift.migrate.dirtyrate import measure_dirty_rate
from vmshift.migrate.facts import Options
from vmshift.migrate.jobevents import CompletedJob, PassWatch
from vmshift.migrate.monitor import (
    Interrupt,
    MonitorState,
    monitor,
    set_throttle,
    stall_reason,
)
from vmshift.migrate.policies import get_policy
from vmshift.migrate.policy import Settings, initial_downtime_ms, nova_data_gb
from vmshift.output import Progress
from vmshift.units import MiB


@dataclass
class LiveRequest:
    domain: str
    source: str
    dest: str
    live: bool = True  # False: suspended migration (paused during the copy)
    policy: str = "adaptive"
    settings: Settings = field(default_factory=Settings)
    bandwidth_mib: int | None = None
    compression: str | None = None
    parallel: int | None = None
    copy_storage: str | None = None
    disks: list[str] | None = None
    network_map: NetworkMap = field(default_factory=NetworkMap)
    migrate_uri: str | None = None
    tls: bool = False
    unsafe: bool = False
    keep_source: bool = False

    def options(self) -> Options:
        return Options(mode="live" if self.live else "suspended", copy_storage=self.copy_storage,
                       copy_disks=self.disks, network_map=self.network_map,
                       migrate_uri=self.migrate_uri, unsafe=self.unsafe)


def validate(req: LiveRequest) -> None:
    """Refuse incompatible combinations with a message naming the options."""
    errs = req.settings.validate()
    if req.compression and req.parallel:
        errs.append("--compression with --parallel: QEMU's multifd does not take "
                    "xbzrle/mt compression")
    if req.settings.postcopy and req.parallel:
        errs.append("--postcopy with --parallel: QEMU cannot post-copy over multifd")
    if req.settings.postcopy and req.compression == "mt":
        errs.append("--postcopy with --compression mt: QEMU refuses compress with post-copy")
    if req.parallel is not None and req.parallel < 1:
        errs.append("--parallel: must be at least 1")
    if req.disks and not req.copy_storage:
        errs.append("--disk: only with --copy-storage")
    if req.bandwidth_mib is not None and req.bandwidth_mib < 1:
        errs.append("--bandwidth: must be at least 1 MiB/s")
    if not req.live and req.settings.postcopy:
        errs.append("--postcopy: only for a live migration")
    if req.policy != "fixed" and req.settings.auto_converge and not req.live:
        errs.append("--auto-converge: a suspended guest does not dirty memory")
    if errs:
        raise BadInput("; ".join(errs))


def describe(req: LiveRequest) -> list[str]:
    """The plan, as --dry-run prints it."""
    s = req.settings
    lines = [f"{'live' if req.live else 'suspended'} migration {req.source} -> {req.dest} "
             f"(peer-to-peer), policy {req.policy}",
             f"caps: bandwidth {req.bandwidth_mib or 'unlimited'} MiB/s, "
             f"downtime {s.max_downtime_ms} ms"]
    allowed = [n for n, on in (("throttling", s.auto_converge), ("post-copy", s.postcopy)) if on]
    lines.append("escalation allowed: " + (", ".join(allowed) or "downtime only"))
    if s.timeout:
        lines.append(f"timeout {s.timeout:g} s, then {s.timeout_action.value}")
    if req.copy_storage:
        lines.append(f"copy storage ({req.copy_storage}): {', '.join(req.disks or ['all disks'])}")
    if req.network_map:
        lines.append("network map: " + ", ".join(req.network_map.describe()))
    lines.append("definition: " + ("kept on the source too" if req.keep_source else "moves"))
    return lines


def flags_for(req: LiveRequest, persistent: bool, throttle_by_qemu: bool) -> int:
    # Peer-to-peer: the source daemon talks to the destination itself, with
    # libvirt's keepalive, so a dead destination or link aborts the job on
    # the source instead of hanging a client-driven Finish call.
    f = libvirt.VIR_MIGRATE_ABORT_ON_ERROR | libvirt.VIR_MIGRATE_PEER2PEER
    if req.live:
        f |= libvirt.VIR_MIGRATE_LIVE
    if persistent:
        # The definition moves: persistent there, undefined here on success.
        f |= libvirt.VIR_MIGRATE_PERSIST_DEST
        if not req.keep_source:
            f |= libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    if req.copy_storage == "all":
        f |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
    elif req.copy_storage == "inc":
        f |= libvirt.VIR_MIGRATE_NON_SHARED_INC
    if req.compression:
        f |= libvirt.VIR_MIGRATE_COMPRESSED
    if req.parallel:
        f |= libvirt.VIR_MIGRATE_PARALLEL
    if req.settings.postcopy:
        f |= libvirt.VIR_MIGRATE_POSTCOPY
    if req.tls:
        f |= libvirt.VIR_MIGRATE_TLS
    if req.unsafe:
        f |= libvirt.VIR_MIGRATE_UNSAFE
    if throttle_by_qemu:
        f |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    return f


def params_for(req: LiveRequest, dom: libvirt.virDomain, throttle_by_qemu: bool) -> dict[str, Any]:
    p: dict[str, Any] = {}
    if req.bandwidth_mib:
        p[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = req.bandwidth_mib
        if req.settings.postcopy:
            # QEMU's post-copy phase has its own limit, unlimited by default:
            # the user's cap holds after the switch too.
            p[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = req.bandwidth_mib
    if req.migrate_uri:
        p[libvirt.VIR_MIGRATE_PARAM_URI] = req.migrate_uri
    if req.compression:
        p[libvirt.VIR_MIGRATE_PARAM_COMPRESSION] = req.compression
    if req.parallel:
        p[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = req.parallel
    if req.disks:
        p[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(req.disks)
    if throttle_by_qemu:
        p[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL] = req.settings.ac_initial
        p[libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT] = req.settings.ac_increment
    if req.network_map:
        live = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE)
        p[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = xmlmap.map_networks(live, req.network_map)
        if dom.isPersistent():
            conf = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_INACTIVE
                               | libvirt.VIR_DOMAIN_XML_SECURE)
            p[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = xmlmap.map_networks(conf, req.network_map)
    return p


def quota_throttle_works(dom: libvirt.virDomain) -> bool:
    """Whether vmshift can throttle the vCPUs itself (cgroup quota). A no-op
    write of 'unlimited' tells without changing anything."""
    try:
        set_throttle(dom, 0)
        return True
    except libvirt.libvirtError:
        return False


def wants_premeasure(req: LiveRequest) -> bool:
    """Only the adaptive policy plans the first pass, and only a lever
    beyond the downtime (throttle, post-copy) makes the plan differ."""
    s = req.settings
    return req.live and req.policy == "adaptive" and (s.postcopy or s.auto_converge)


def policy_settings(req: LiveRequest, dom: libvirt.virDomain,
                    premeasured_bps: float | None = None) -> Settings:
    """Fill in what the policies derive from the domain (Nova's data size)
    and the dirty rate measured before the job."""
    s = req.settings
    disks = []
    if req.copy_storage:
        for target in xmlmap.disk_paths(dom.XMLDesc(0)):
            try:
                disks.append(dom.blockInfo(target)[0])
            except libvirt.libvirtError:
                continue
    d = dict(s.__dict__)
    d["data_gb"] = nova_data_gb(dom.maxMemory() * 1024, disks)
    if req.bandwidth_mib:
        d["bandwidth_bps"] = req.bandwidth_mib * MiB
    d["premeasured_dirty_bps"] = premeasured_bps
    return Settings(**d)


@dataclass
class LiveOutcome:
    ok: bool
    error: str | None
    state: MonitorState
    elapsed: float
    completed_stats: dict[str, Any]
    throttle_by_qemu: bool
    premeasured_dirty_bps: float | None = None
    # What the job ran with: a post-copy recovery repeats exactly these.
    flags: int = 0
    params: dict[str, Any] = field(default_factory=dict)


def run_migration(req: LiveRequest, src: libvirt.virConnect, dest: libvirt.virConnect,
                  dom: libvirt.virDomain, json_mode: bool, interrupt: Interrupt,
                  bar_position: int | None = None) -> LiveOutcome:
    """Start the job in a worker thread and monitor it until it ends.
    INTERRUPT must be trapped (Interrupt.trapped) by the caller."""
    premeasured = measure_dirty_rate(src, dom) if wants_premeasure(req) else None
    settings = policy_settings(req, dom, premeasured)
    throttle_by_qemu = settings.auto_converge and (
        req.policy != "adaptive" or not quota_throttle_works(dom))
    flags = flags_for(req, bool(dom.isPersistent()), throttle_by_qemu)
    params = params_for(req, dom, throttle_by_qemu)
    try:  # the cap must hold from the first instant, before the monitor's first poll
        dom.migrateSetMaxDowntime(initial_downtime_ms(settings), 0)
    except libvirt.libvirtError:
        pass  # some versions only accept it during a job; the monitor sets it then
    result: dict[str, Any] = {}

    def worker() -> None:
        try:
            dom.migrateToURI3(req.dest, params, flags)
            result["dom"] = True
        except libvirt.libvirtError as exc:
            result["error"] = exc.get_error_message()
        except Exception as exc:  # surfaced in the report, never lost in a thread
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            passes.poke()  # the monitor need not finish its poll

    completion = CompletedJob(src, dom)
    passes = PassWatch(src, dom)
    t0 = time.monotonic()
    th = threading.Thread(target=worker, name="vmshift-migrate", daemon=True)
    policy = get_policy(req.policy)
    bar = Progress(f"migrate {req.domain}", None, json_mode=json_mode, position=bar_position)
    try:
        th.start()
        st = monitor(dom, th, policy, settings, interrupt, bar, t0, throttle_by_qemu, passes)
    finally:
        bar.close()
        passes.close()
    elapsed = time.monotonic() - t0
    err = result.get("error")
    if st.aborted_by == "signal" and not err and "dom" in result:
        err = None  # the job finished before the abort reached it
    elif st.aborted_by == "signal":
        err = f"interrupted by signal {interrupt.signal}: job aborted ({err})"
    elif err and st.aborted_by == "postcopy-stall":
        err = f"network: no progress for {st.stalled_s:.0f} s after the post-copy switch ({err})"
    elif err and st.aborted_by == "stall":
        err = f"{stall_reason(st)}, job aborted ({err})"
    elif err and st.aborted_by == "timeout":
        why = next((a.reason for a in reversed(st.actions) if a.kind == "abort"), "timeout")
        err = f"guest too busy: {why}, job aborted ({err})"
    completed = _completed_stats(dest, req.domain, completion) if "dom" in result else {}
    completion.close()
    return LiveOutcome("dom" in result and not err, err, st, elapsed, completed,
                       throttle_by_qemu, premeasured, flags=flags, params=params)


def _completed_stats(dest: libvirt.virConnect, name: str,
                     completion: CompletedJob) -> dict[str, Any]:
    """The finished job's figures. The destination's record comes first: its
    downtime runs from the source's stop to the destination's resume, the
    pause the guest saw. After a post-copy switch it has none; then the
    source's JOB_COMPLETED record (QEMU's stop-to-switch time) stands in."""
    try:
        stats = dest.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        stats = {}
    if "downtime" in stats:
        return {**stats, "downtime_from": "destination"}
    source = completion.wait()
    if "downtime" in source:
        return {**source, "downtime_from": "source"}
    return stats or source


def after_success(dest: libvirt.virConnect, name: str, st: MonitorState) -> None:
    """Undo vmshift's own throttle on the guest that now runs there."""
    if st.throttle and not st.postcopy:
        try:
            set_throttle(dest.lookupByName(name), 0)
        except libvirt.libvirtError as exc:
            raise OperationFailed(f"migrated, but resetting the vCPU throttle on the "
                                  f"destination failed: {exc.get_error_message()}") from exc


def after_failure(dom: libvirt.virDomain, st: MonitorState) -> str:
    """Bring the source back to how it was; say where the VM is."""
    notes = []
    if st.throttle:
        try:
            set_throttle(dom, 0)
        except libvirt.libvirtError as exc:
            notes.append(f"throttle reset failed: {exc.get_error_message()}")
    try:
        state = dom.state()[0]
        if state == libvirt.VIR_DOMAIN_PAUSED and not st.postcopy:
            dom.resume()
            state = dom.state()[0]
        names = {libvirt.VIR_DOMAIN_PAUSED: "paused", libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
                 libvirt.VIR_DOMAIN_CRASHED: "crashed"}
        if state == libvirt.VIR_DOMAIN_RUNNING:
            notes.append("VM running on the source")
        elif st.postcopy:
            notes.append(f"VM {names.get(state, state)} on the source after the post-copy "
                         "switch: the guest lives on the destination")
        else:
            notes.append(f"VM {names.get(state, state)} on the source")
    except libvirt.libvirtError as exc:
        notes.append(f"source state unknown: {exc.get_error_message()}")
    return "; ".join(notes)
