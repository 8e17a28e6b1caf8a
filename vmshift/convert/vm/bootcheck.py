"""Stage 6: start the domain and read what the guest says of itself.

The first-boot service vmshift put in the guest prints ``vmshift-report:``
lines on the serial console once boot has settled: every interface with its
MAC, state and addresses, the failed units, whether VMware's tools or the
guest agent are present. Nothing needs a password, and nothing is read back
off the disk: these are the running guest's own words.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmshift.errors import OperationFailed

# getty's prompt; kernel messages may follow it on the same line
LOGIN = r"\blogin: "
# A plain pattern: a lazy (?s).*? prefix made each search quadratic in the console's
# 60 KB, held the GIL for minutes and starved libvirt's event loop (keepalive lost).
REPORT_END = r"vmshift-report: end"


@dataclass
class BootReport:
    seconds_to_login: float | None = None
    seconds_to_report: float | None = None
    interfaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_units: list[str] = field(default_factory=list)
    vmware_tools: bool | None = None
    guest_agent: bool | None = None
    problems: list[str] = field(default_factory=list)
    console_log: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"seconds_to_login": self.seconds_to_login,
                "seconds_to_report": self.seconds_to_report, "interfaces": self.interfaces,
                "failed_units": self.failed_units, "vmware_tools": self.vmware_tools,
                "guest_agent": self.guest_agent, "ok": not self.problems,
                "console_log": self.console_log,
                "problems": self.problems}


def parse_report(text: str) -> BootReport:
    report = BootReport()
    # The journal prefixes console lines ("[   50.1] sh[398]: "): not anchored.
    for line in re.findall(r"vmshift-report: (.*)$", text, flags=re.M):
        words = line.split()
        if words[:1] == ["link"] and len(words) == 4:
            report.interfaces.setdefault(words[1], {"addresses": []}).update(
                mac=words[2].lower(), state=words[3])
        elif words[:1] == ["addr"] and len(words) == 4:
            report.interfaces.setdefault(words[1], {"addresses": []})["addresses"].append(
                words[3])
        elif words[:1] == ["failed"]:
            report.failed_units = [] if words[1:] == ["none"] else words[1:]
        elif words[:1] == ["vmware-tools"]:
            report.vmware_tools = words[1:] == ["present"]
        elif words[:1] == ["guest-agent"]:
            report.guest_agent = words[1:] == ["present"]
    return report


def judge(report: BootReport, expected: dict[str, str]) -> None:
    """EXPECTED: interface name -> MAC, the pins the conversion made."""
    for name, mac in expected.items():
        nic = report.interfaces.get(name)
        if nic is None:
            report.problems.append(f"interface {name} ({mac}) does not exist in the guest")
        elif nic.get("mac") != mac.lower():
            report.problems.append(f"interface {name} has MAC {nic.get('mac')}, not {mac}")
        elif nic.get("state") != "UP":
            report.problems.append(f"interface {name} is down")
        elif not [a for a in nic["addresses"] if "." in a]:
            report.problems.append(f"interface {name} has no IPv4 address")
    if report.failed_units:
        report.problems.append("failed units: " + ", ".join(report.failed_units))


class ConsoleWatch:
    """The domain's serial console, attached again if it falls silent while the guest runs.

    A console stream ends with its connection (a keepalive lost on a loaded host);
    the report is printed last, so a console attached again still catches it.
    """

    SILENT_S = 90.0
    SLICE_S = 15.0

    def __init__(self, uri: str, name: str, dom: Any) -> None:
        self.uri, self.name, self.dom = uri, name, dom
        self.console = self._open()
        self.earlier: list[str] = []  # transcripts of consoles already closed

    def _open(self) -> Any:
        from vmshift.console import Console  # libvirt: only when a domain is started

        return Console(self.uri, self.name)

    def transcript(self) -> str:
        return "".join(self.earlier) + "".join(self.console.transcript)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        size, heard = len(self.transcript()), time.monotonic()
        while True:
            left = deadline - time.monotonic()
            try:
                return self.console.wait_for(pattern, min(self.SLICE_S, max(left, 0.1)))
            except OperationFailed:
                if time.monotonic() >= deadline:
                    raise
            if len(self.transcript()) != size:
                size, heard = len(self.transcript()), time.monotonic()
            elif time.monotonic() - heard > self.SILENT_S and self.dom.isActive():
                self._reattach()
                heard = time.monotonic()

    def _reattach(self) -> None:
        self.earlier.append("".join(self.console.transcript))
        self.console.close()
        self.console = self._open()

    def close(self) -> None:
        self.console.close()


def start_and_verify(uri: str, name: str, expected: dict[str, str], timeout: float,
                     verify: bool) -> BootReport | None:
    """Start NAME; with VERIFY, wait for its login prompt and its report."""
    import libvirt

    from vmshift.libvirtconn import opened

    with opened(uri, f"cannot start {name} on {uri}") as conn:
        dom = conn.lookupByName(name)
        # Paused first, so the console is attached before the guest prints anything.
        dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED if verify else 0)
        if not verify:
            return None
        start = time.monotonic()
        watch = ConsoleWatch(uri, name, dom)
        try:
            dom.resume()
            try:
                report = _watch(watch, expected, start, timeout)
            except OperationFailed as exc:
                log = _save_transcript(name, watch.transcript())
                raise OperationFailed(f"boot verification: {exc.message} "
                                      f"(console: {log})") from None
            report.console_log = str(_save_transcript(name, watch.transcript()))
            return report
        finally:
            watch.close()


def _save_transcript(name: str, text: str) -> Path:
    """The guest's console, kept after the run (a failed one is undone, this is not)."""
    logs = Path(os.environ.get("VMSHIFT_CACHE", "/var/cache/vmshift")) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{name}-console.log"
    path.write_text(text)
    return path


def _watch(watch: ConsoleWatch, expected: dict[str, str], start: float,
           timeout: float) -> BootReport:
    watch.wait_for(REPORT_END, timeout)
    text = watch.transcript()
    report = parse_report(text)
    report.seconds_to_report = round(time.monotonic() - start, 1)
    if re.search(LOGIN, text):
        report.seconds_to_login = report.seconds_to_report
    else:
        left = max(timeout - (time.monotonic() - start), 5.0)
        try:
            watch.wait_for(LOGIN, left)
            report.seconds_to_login = round(time.monotonic() - start, 1)
        except OperationFailed:
            report.problems.append("no login prompt on the serial console")
    judge(report, expected)
    return report
