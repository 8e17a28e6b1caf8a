"""The final migration report (human text or the --json document)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from vmshift.migrate.monitor import MonitorState
from vmshift.units import MiB


@dataclass
class Report:
    domain: str
    mode: str
    source: str
    dest: str
    ok: bool
    policy: str | None = None
    error: str | None = None
    # preflight | tls | network | destination | guest-too-busy | interrupted
    category: str | None = None
    total_time_s: float | None = None
    downtime_ms: int | None = None  # achieved, from the completed job's statistics
    downtime_from: str | None = None  # whose record: "destination" or "source"
    downtime_cap_ms: int | None = None  # the user's --max-downtime (live mode)
    bytes_transferred: int | None = None
    memory_bytes: int | None = None
    disk_bytes: int | None = None
    postcopy: bool = False
    # The guest's dirty rate measured just before the job (adaptive policy)
    dirty_rate_before_mib_s: float | None = None
    throttle: str | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    where: str | None = None
    # After a post-copy failure: vmshift's recovery attempts and outcome (recover.py)
    recovery: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fill_from_job(rep: Report, st: MonitorState | None, completed: dict[str, Any]) -> None:
    """Achieved figures come from the completed job; the last sample is the
    fallback when the destination kept none (a failed job)."""
    last = st.last_stats if st else {}
    stats = completed or last
    if completed and "downtime" in completed:
        rep.downtime_ms = int(completed["downtime"])
        rep.downtime_from = completed.get("downtime_from")
    fill_bytes(rep, stats, last)
    if st:
        rep.actions = [asdict(a) for a in st.actions]
        rep.postcopy = st.postcopy


def fill_bytes(rep: Report, stats: dict[str, Any], last: dict[str, Any]) -> None:
    """Bytes moved, from a job's statistics (LAST: the monitor's last sample)."""
    mem = stats.get("memory_processed")
    # The destination's record of a finished job has no disk figures; the
    # storage copy was complete by the last sample (it finishes first).
    disk = stats.get("disk_processed") or last.get("disk_total") or last.get("disk_processed")
    if mem is not None or disk is not None:
        rep.memory_bytes = int(mem or 0)
        rep.disk_bytes = int(disk or 0)
        rep.bytes_transferred = rep.memory_bytes + rep.disk_bytes


def judge_downtime(rep: Report, cap_ms: int) -> None:
    """Say so when the guest paused longer than the cap. The cap is QEMU's
    target for its own estimate of the last transfer; the pause measured
    also holds libvirt's handover between the hosts, which a loaded host
    can stretch (seen on the test bed: 0.5-1.1 s right after a bed start)."""
    rep.downtime_cap_ms = cap_ms
    if rep.downtime_ms is not None and rep.downtime_ms > cap_ms:
        rep.notes.append(f"the guest paused {rep.downtime_ms} ms, over the {cap_ms} ms cap: "
                         "the cap bounds QEMU's planned final copy, not the hosts' handover")


def categorise(error: str | None) -> str | None:
    """Errors by kind: guest too busy, tls, network, interrupted, destination."""
    if not error:
        return None
    e = error.lower()
    if "not complete after" in e or "cannot converge" in e:
        return "guest-too-busy"
    # Before "network": a refused handshake ends in a closed connection too,
    # but what the admin must fix is a certificate, not a link.
    if any(w in e for w in ("tls", "certificate", "x509")):
        return "tls"
    if any(w in e for w in ("connection", "network", "socket", "broken pipe", "reset by peer",
                            "timed out", "unreachable", "end of file")):
        return "network"
    if "interrupted" in e or "signal" in e:
        return "interrupted"
    return "destination"


def render(rep: Report) -> str:
    lines = [f"migrate {rep.mode} {rep.domain}: {rep.source} -> {rep.dest}: "
             + ("OK" if rep.ok else f"FAILED ({rep.category}): {rep.error}")]
    if rep.total_time_s is not None:
        lines.append(f"  total time      {rep.total_time_s:.1f} s")
    if rep.downtime_ms is not None:
        cap = "" if rep.downtime_cap_ms is None else f", cap {rep.downtime_cap_ms} ms"
        lines.append(f"  downtime        {rep.downtime_ms} ms (achieved{cap})")
    if rep.bytes_transferred is not None:
        lines.append(f"  transferred     {rep.bytes_transferred / MiB:.1f} MiB "
                     f"(memory {(rep.memory_bytes or 0) / MiB:.1f}, "
                     f"disk {(rep.disk_bytes or 0) / MiB:.1f})")
    if rep.policy:
        lines.append(f"  policy          {rep.policy}")
    if rep.dirty_rate_before_mib_s is not None:
        lines.append(f"  dirty rate      {rep.dirty_rate_before_mib_s} MiB/s (measured before)")
    for a in rep.actions:
        val = "" if a["value"] is None else f" {a['value']}"
        bad = "" if a["ok"] else f" FAILED: {a['error']}"
        lines.append(f"  t={a['t']:>7.2f}s  {a['kind']}{val}  ({a['reason']}){bad}")
    lines.extend(_recovery_lines(rep.recovery))
    if rep.where:
        lines.append(f"  {rep.where}")
    lines.extend(f"  note: {n}" for n in rep.notes)
    return "\n".join(lines)


def _recovery_lines(rec: dict[str, Any] | None) -> list[str]:
    if not rec:
        return []
    lines = [f"  post-copy recovery: {rec['outcome']} after {len(rec['attempts'])} attempt(s) "
             f"in {rec['elapsed_s']:g} s (limit {rec['timeout_s']:g} s)"]
    for a in rec["attempts"]:
        how = "ok" if a["ok"] else f"failed: {a['error']}"
        lines.append(f"    {a['at']}  t={a['t']:>7.2f}s  attempt {a['n']}  {how}")
    return lines

