"""One live or suspended migration, run and judged: the part of `vmshift
migrate live|suspended` that `vmshift evacuate` runs for each of its VMs."""

from __future__ import annotations

import time

import libvirt

from vmshift import units
from vmshift.migrate import recover, report
from vmshift.migrate.live import LiveRequest, after_failure, after_success, run_migration
from vmshift.migrate.monitor import Interrupt


def run_and_judge(rep: report.Report, req: LiveRequest, src: libvirt.virConnect,
                  dst: libvirt.virConnect, dom: libvirt.virDomain, live: bool,
                  recover_timeout: float, json_mode: bool, interrupt: Interrupt,
                  bar_position: int | None = None) -> None:
    """Run the job and fill REP: done, recovered after a post-copy failure,
    or failed with the VM back on the source. Runs with INTERRUPT trapped,
    so that a Ctrl-C at any point still leaves the word on where the VM is.
    BAR_POSITION: the progress bar's line, when several migrations run at once."""
    t0 = time.monotonic()
    out = run_migration(req, src, dst, dom, json_mode, interrupt, bar_position)
    rep.total_time_s = round(time.monotonic() - t0, 2)
    report.fill_from_job(rep, out.state, out.completed_stats)
    if live:  # a suspended migration pauses the guest for the whole copy
        report.judge_downtime(rep, req.settings.max_downtime_ms)
    if out.premeasured_dirty_bps is not None:
        rep.dirty_rate_before_mib_s = round(out.premeasured_dirty_bps / units.MiB, 1)
    if out.throttle_by_qemu:
        rep.throttle = "QEMU auto-converge"
    elif req.settings.auto_converge:
        rep.throttle = "vmshift vCPU quota"
    if out.ok:
        after_success(dst, req.domain, out.state)
        rep.ok, rep.where = True, "VM running on the destination"
    elif recover.switched(dom, out.state):
        # The guest already lives on the destination: finish the job by
        # libvirt's post-copy recovery, never roll back.
        recover.finish(rep, req, dom, out, recover_timeout, t0, json_mode, interrupt)
    else:
        rep.error = out.error
        rep.category = report.categorise(out.error)
        rep.where = after_failure(dom, out.state)
