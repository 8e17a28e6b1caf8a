"""Post-copy recovery: finish a migration whose link broke after the switch.

After the post-copy switch the guest runs on the destination while part of
its memory is still on the source, so the job can never be rolled back. When
the link or the destination breaks then, QEMU on both hosts waits in
'postcopy-paused' and libvirt marks the domain "post-copy failed" on both;
libvirt's VIR_MIGRATE_POSTCOPY_RESUME reconnects the two QEMUs and moves the
rest. vmshift makes sure the job is paused (the monitor pauses a stalled
post-copy, see monitor.pause_postcopy), retries the resume with a backoff
until it completes or --recover-timeout runs out, and otherwise says where
the guest is and the exact command to retry.
"""

from __future__ import annotations

import shlex
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import libvirt

from vmshift.errors import OperationFailed
from vmshift.libvirtconn import connect
from vmshift.migrate import report
from vmshift.migrate.jobevents import CompletedJob
from vmshift.migrate.live import LiveOutcome, LiveRequest
from vmshift.migrate.monitor import (
    POLL_S,
    STALL_S,
    Applied,
    Interrupt,
    MonitorState,
    active_job_stats,
    pause_postcopy,
)
from vmshift.output import Progress, notice

RECOVER_TIMEOUT_S = 600.0
FIRST_DELAY_S = 2.0
MAX_DELAY_S = 30.0
# A resume that has not started moving after this long will not: libvirt's
# call waits for an answer that does not come (seen on TCG: the destination's
# vCPU holds QEMU's main lock while it waits for a page still on the source).
HUNG_S = 90.0
# How long a look at a host may take before vmshift reports it unreachable.
DESCRIBE_S = 10.0
IN_POSTCOPY = (libvirt.VIR_DOMAIN_PAUSED_POSTCOPY, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED)

# virsh migrate's option for each flag and parameter vmshift may pass: the
# retry command a user runs by hand must repeat the original job exactly.
VIRSH_FLAGS = [
    (libvirt.VIR_MIGRATE_LIVE, "--live"), (libvirt.VIR_MIGRATE_PEER2PEER, "--p2p"),
    (libvirt.VIR_MIGRATE_PERSIST_DEST, "--persistent"),
    (libvirt.VIR_MIGRATE_UNDEFINE_SOURCE, "--undefinesource"),
    (libvirt.VIR_MIGRATE_NON_SHARED_DISK, "--copy-storage-all"),
    (libvirt.VIR_MIGRATE_NON_SHARED_INC, "--copy-storage-inc"),
    (libvirt.VIR_MIGRATE_UNSAFE, "--unsafe"), (libvirt.VIR_MIGRATE_COMPRESSED, "--compressed"),
    (libvirt.VIR_MIGRATE_AUTO_CONVERGE, "--auto-converge"),
    (libvirt.VIR_MIGRATE_ABORT_ON_ERROR, "--abort-on-error"),
    (libvirt.VIR_MIGRATE_POSTCOPY, "--postcopy"),
    (libvirt.VIR_MIGRATE_POSTCOPY_RESUME, "--postcopy-resume"),
    (libvirt.VIR_MIGRATE_TLS, "--tls"), (libvirt.VIR_MIGRATE_PARALLEL, "--parallel"),
]
VIRSH_PARAMS = {
    libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: "--bandwidth",
    libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY: "--postcopy-bandwidth",
    libvirt.VIR_MIGRATE_PARAM_URI: "--migrateuri",
    libvirt.VIR_MIGRATE_PARAM_COMPRESSION: "--comp-methods",
    libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS: "--parallel-connections",
    libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS: "--migrate-disks",
    libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INITIAL: "--auto-converge-initial",
    libvirt.VIR_MIGRATE_PARAM_AUTO_CONVERGE_INCREMENT: "--auto-converge-increment",
    # DEST_XML / PERSIST_XML are left out: a resume keeps the definition the
    # destination already received from the first attempt.
}
GONE = ("not there", "shut off", "crashed")
STATE_NAMES = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
               libvirt.VIR_DOMAIN_SHUTOFF: "shut off", libvirt.VIR_DOMAIN_CRASHED: "crashed"}


@dataclass
class Attempt:
    n: int
    at: str  # wall clock, UTC
    t: float  # seconds since the migration started, like the policy's actions
    lasted_s: float = 0.0
    ok: bool = False
    error: str | None = None


@dataclass
class Recovery:
    timeout_s: float
    started_at: str
    outcome: str = "gave-up"  # recovered | gave-up | stuck | interrupted | lost
    elapsed_s: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    pauses: list[dict[str, Any]] = field(default_factory=list)
    retry: str | None = None
    pending: bool = False  # a resume call vmshift stopped waiting for is still in flight


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def retry_command(source: str, domain: str, dest: str, flags: int,
                  params: dict[str, Any]) -> str:
    """The virsh command that resumes this post-copy migration by hand."""
    args = ["virsh", "-c", source, "migrate"]
    args += [opt for bit, opt in VIRSH_FLAGS
             if (flags | libvirt.VIR_MIGRATE_POSTCOPY_RESUME) & bit]
    for key, opt in VIRSH_PARAMS.items():
        if key in params:
            value = params[key]
            args += [opt, ",".join(value) if isinstance(value, list) else str(value)]
    return shlex.join([*args, domain, dest])


def switched(dom: libvirt.virDomain, st: MonitorState) -> bool:
    """Whether the failed job had switched to post-copy: the source domain
    is paused for post-copy (a source running again never switched)."""
    if not st.postcopy:
        return False
    try:
        state, reason = dom.state()
    except libvirt.libvirtError:
        return True  # the source connection dropped: recovery reopens it
    return state == libvirt.VIR_DOMAIN_PAUSED and reason in IN_POSTCOPY


def describe_state(conn_uri: str, name: str, timeout: float = DESCRIBE_S) -> str:
    """The domain's state on one host, as libvirt names it; never raises and
    never waits longer than TIMEOUT. After a broken link libvirt's connect
    can hang until TCP gives up, minutes, and this runs on the way out,
    after Ctrl-C too; the abandoned call ends in its daemon thread."""
    found: list[str] = []
    th = threading.Thread(target=lambda: found.append(_read_state(conn_uri, name)),
                          name="vmshift-describe", daemon=True)
    th.start()
    th.join(timeout)
    return found[0] if found else f"state unknown, no answer in {timeout:g} s"


def _read_state(conn_uri: str, name: str) -> str:
    try:
        conn = connect(conn_uri)
    except OperationFailed as exc:
        return f"state unknown, unreachable: {exc.message}"
    try:
        state, reason = conn.lookupByName(name).state()
    except libvirt.libvirtError:
        return "not there"
    finally:
        conn.close()
    if reason in (libvirt.VIR_DOMAIN_RUNNING_POSTCOPY_FAILED,
                  libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED) and \
            state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED):
        return f"{STATE_NAMES[state]}, post-copy failed"
    if state == libvirt.VIR_DOMAIN_PAUSED and reason == libvirt.VIR_DOMAIN_PAUSED_POSTCOPY:
        return "paused, post-copy in progress"
    return STATE_NAMES.get(state, str(state))


class Recoverer:
    """Retries libvirt's post-copy resume for one domain until it completes."""

    def __init__(self, req: LiveRequest, dom: libvirt.virDomain, out: LiveOutcome,
                 t0: float, json_mode: bool, interrupt: Interrupt) -> None:
        self.req, self.dom, self.out = req, dom, out
        self.t0, self.json_mode = t0, json_mode
        self.flags = out.flags | libvirt.VIR_MIGRATE_POSTCOPY | libvirt.VIR_MIGRATE_POSTCOPY_RESUME
        # The migration's own: a Ctrl-C during the first job's post-copy phase
        # did not abort it (nothing can after the switch), but it still means:
        # stop, do not start retrying.
        self.interrupt = interrupt
        self.pauses: list[dict[str, Any]] = []
        self.deadline = 0.0
        self.pending = ""  # why vmshift left a resume call in flight, if it did
        self.completed: dict[str, Any] = {}  # the source's record of the resumed job

    def say(self, message: str) -> None:
        notice(f"vmshift: post-copy recovery: {message}", self.json_mode)

    def source_domain(self) -> libvirt.virDomain | None:
        """The source domain, reopening the connection if it dropped; None
        when the source no longer has it (the job finished after all)."""
        try:
            self.dom.state()
            return self.dom
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
        try:
            conn = connect(self.req.source, role="source")
            self.dom = conn.lookupByName(self.req.domain)
            self.say(f"reconnected to the source {self.req.source}")
            return self.dom
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def pause(self, dom: libvirt.virDomain, reason: str) -> None:
        rec: Applied = pause_postcopy(dom, time.monotonic() - self.t0, reason)
        self.pauses.append({"at": now_utc(), **asdict(rec)})
        self.say(f"paused the post-copy job ({reason})"
                 + ("" if rec.ok else f"; pausing failed: {rec.error}"))

    def attempt(self, dom: libvirt.virDomain, n: int) -> Attempt:
        """One resume: migrateToURI3 in a thread, watched like the first job
        (a resume that stalls is paused again, ready for the next one)."""
        started = time.monotonic()
        att = Attempt(n, now_utc(), round(started - self.t0, 2))
        result: dict[str, str] = {}

        def worker() -> None:
            try:
                dom.migrateToURI3(self.req.dest, self.out.params, self.flags)
            except libvirt.libvirtError as exc:
                result["error"] = exc.get_error_message()
            except Exception as exc:  # surfaced in the report, never lost in a thread
                result["error"] = f"{type(exc).__name__}: {exc}"

        th = threading.Thread(target=worker, name="vmshift-recover", daemon=True)
        bar = Progress(f"recover {self.req.domain}", None, json_mode=self.json_mode)
        completion = CompletedJob(dom.connect(), dom)
        try:
            th.start()
            gave_up = self.watch(dom, th, bar)
        finally:
            bar.close()
        att.lasted_s = round(time.monotonic() - started, 2)
        if gave_up:  # the call stays in flight: libvirt refuses another one meanwhile
            att.error = f"{gave_up}; libvirt's call is still pending"
        else:
            att.ok, att.error = "error" not in result, result.get("error")
        if att.ok:  # QEMU's counters run on across a resume: the whole job's bytes
            self.completed = completion.wait()
        completion.close()
        return att

    def watch(self, dom: libvirt.virDomain, th: threading.Thread, bar: Progress) -> str | None:
        """Follow one resume until its call returns (None), or say why vmshift
        stopped waiting for a call that libvirt does not end."""
        last, since, idle_since, paused = -1, time.monotonic(), time.monotonic(), False
        while th.is_alive():
            th.join(POLL_S)
            if not th.is_alive():
                break
            now = time.monotonic()
            try:
                # Only a job QEMU really resumes moves; until then the source
                # stays "post-copy failed" (and jobStats would wait for the job).
                moving = dom.state()[1] == libvirt.VIR_DOMAIN_PAUSED_POSTCOPY
            except libvirt.libvirtError:
                continue
            if not moving:
                idle = now - idle_since
                if self.interrupt.signal is not None:
                    self.pending = "interrupted"
                    return "interrupted before libvirt started the resume"
                if idle >= HUNG_S:
                    self.pending = "stuck"
                    return (f"libvirt has not started the resume after {idle:.0f} s (the "
                            "destination does not answer; its QEMU may be blocked on memory "
                            "still on the source)")
                if now >= self.deadline and idle >= STALL_S:
                    self.pending = "gave-up"
                    return (f"no answer from libvirt for {idle:.0f} s when --recover-timeout "
                            "ran out (the destination unreachable, or its QEMU blocked)")
                continue
            idle_since = now
            if paused:
                continue
            if self.interrupt.signal is not None:
                self.pause(dom, f"signal {self.interrupt.signal}")
                paused = True
                continue
            stats = active_job_stats(dom)
            if stats is None:
                continue
            done = int(stats.get("memory_processed", 0))
            bar.update_to(done, mem_left=f"{int(stats.get('memory_remaining', 0)) >> 20}M")
            if done != last:
                last, since = done, now
            elif now - since >= STALL_S:
                self.pause(dom, f"network: no progress for {STALL_S:.0f} s while resuming")
                paused = True
        return None

    def run(self, timeout: float) -> Recovery:
        """Resume until done, the timeout, or Ctrl-C (which never aborts:
        the guest lives on the destination)."""
        rec = Recovery(timeout_s=timeout, started_at=now_utc(), pauses=self.pauses)
        rec.retry = retry_command(self.req.source, self.req.domain, self.req.dest,
                                  self.out.flags, self.out.params)
        begin = time.monotonic()
        self.deadline, delay = begin + timeout, FIRST_DELAY_S
        self.say(f"the guest runs on {self.req.dest} with part of its memory still on "
                 f"{self.req.source}; " + (
                     f"interrupted (signal {self.interrupt.signal}) before recovery: "
                     "not resuming" if self.interrupt.signal is not None else
                     f"resuming with libvirt's post-copy recovery for up to {timeout:g} s"))
        while self.interrupt.signal is None:
            att = self.step(len(rec.attempts) + 1)
            if att is None:  # nothing left to resume on the source
                rec.outcome = self.ended()
                break
            rec.attempts.append(att)
            if att.ok:
                rec.outcome = "recovered"
                self.say(f"attempt {att.n} completed the migration")
                break
            if self.pending:
                rec.outcome = self.pending
                break
            if self.dest_gone():
                rec.outcome = "lost"
                break
            left = self.deadline - time.monotonic()
            if self.interrupt.signal is not None or left <= 0:
                break
            wait = min(delay, left)
            self.say(f"attempt {att.n} failed: {att.error}; next in {wait:.0f} s "
                     f"({left:.0f} s left)")
            self.sleep(wait)
            delay = min(delay * 2, MAX_DELAY_S)
        if self.interrupt.signal is not None and rec.outcome in ("gave-up", "stuck"):
            rec.outcome = "interrupted"
        rec.pending = bool(self.pending)
        rec.elapsed_s = round(time.monotonic() - begin, 2)
        return rec

    def step(self, n: int) -> Attempt | None:
        """One attempt, or None when the source holds nothing to resume."""
        try:
            dom = self.source_domain()
            state = dom.state() if dom is not None else None
        except libvirt.libvirtError as exc:
            return Attempt(n, now_utc(), round(time.monotonic() - self.t0, 2),
                           error=f"source {self.req.source}: {exc.get_error_message()}")
        except OperationFailed as exc:  # the source does not answer (yet)
            return Attempt(n, now_utc(), round(time.monotonic() - self.t0, 2),
                           error=exc.message)
        if dom is None or state is None or state[0] != libvirt.VIR_DOMAIN_PAUSED:
            return None
        if state[1] == libvirt.VIR_DOMAIN_PAUSED_POSTCOPY:
            # libvirt's job failed but QEMU still thinks it streams: a resume
            # needs the paused state first.
            self.pause(dom, "the failed job was still in post-copy")
        return self.attempt(dom, n)

    def dest_gone(self) -> bool:
        """The destination's QEMU is gone (libvirt kills it when the link
        breaks before its side of the switch): nothing left to resume into."""
        return describe_state(self.req.dest, self.req.domain) in GONE

    def ended(self) -> str:
        """The source let go of the domain: done if the destination runs it."""
        dest = describe_state(self.req.dest, self.req.domain)
        return "recovered" if dest == "running" else "lost"

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self.interrupt.signal is None and time.monotonic() < end:
            time.sleep(min(POLL_S, end - time.monotonic()))


def where_after_giving_up(req: LiveRequest, rec: Recovery) -> str:
    dest = describe_state(req.dest, req.domain)
    source = describe_state(req.source, req.domain)
    if rec.outcome == "lost" or dest in GONE:
        rec.outcome = "lost"
        return (f"the guest cannot be recovered: on the destination {req.dest} it is {dest}, "
                f"the source {req.source} holds only the paused remainder ({source})")
    pending = ("libvirt's resume call is still pending on the source and may yet complete "
               f"the migration (`virsh -c {req.source} domjobinfo {req.domain}`); once it "
               "has ended, ") if rec.pending else ""
    return (f"the guest lives on the destination {req.dest} ({dest}): it cannot run "
            f"until the rest of its memory, still on the source {req.source} ({source}), "
            f"reaches it; do not destroy it on either host; {pending}retry: {rec.retry}")


def finish(rep: report.Report, req: LiveRequest, dom: libvirt.virDomain, out: LiveOutcome,
           timeout: float, t0: float, json_mode: bool, interrupt: Interrupt) -> None:
    """Recover a migration that failed after the post-copy switch; fill the
    report with the attempts and the outcome. INTERRUPT: the migration's,
    trapped by the caller."""
    recoverer = Recoverer(req, dom, out, t0, json_mode, interrupt)
    rec = recoverer.run(timeout)
    rep.total_time_s = round(time.monotonic() - t0, 2)
    if rec.outcome == "recovered":
        rep.ok, rep.where = True, "VM running on the destination"
        if recoverer.completed:
            report.fill_bytes(rep, recoverer.completed, out.state.last_stats)
        rep.notes.append(f"post-copy failed ({out.error}); recovered after "
                         f"{len(rec.attempts)} attempt(s) in {rec.elapsed_s:g} s")
    else:
        last = f"last error: {rec.attempts[-1].error}" if rec.attempts else "no attempt made"
        why = {"interrupted": "interrupted", "lost": "impossible", "stuck": "stuck"}.get(
            rec.outcome, f"gave up after {len(rec.attempts)} attempt(s) in {rec.elapsed_s:g} s")
        rep.error = (f"post-copy recovery {why} ({last}); the job had failed "
                     f"after the post-copy switch: {out.error}")
        rep.category = report.categorise(out.error)
        rep.where = where_after_giving_up(req, rec)
    rep.recovery = asdict(rec)
