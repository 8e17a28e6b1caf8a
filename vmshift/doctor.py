"""`vmshift doctor`: what this host can really do.

Each check runs the real thing (a KVM guest, an appliance launch, a libvirt
connection) rather than looking for files, because on nested hosts the files
are there and the thing still fails.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from vmshift import host
from vmshift.cliutil import json_option
from vmshift.errors import OperationFailed
from vmshift.output import emit_json


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    facts: dict[str, object] = field(default_factory=dict)
    # ok; warning: works, but less well (TCG instead of KVM, no post-copy);
    # failed: the user's work cannot be done here, and doctor exits 1.
    status: str = ""

    def __post_init__(self) -> None:
        self.status = self.status or ("ok" if self.ok else "failed")


def check_kvm() -> Check:
    kvm = host.kvm_probe(refresh=True)
    tcg = host.probe_accel("tcg")
    facts = {"kvm": kvm, "tcg": tcg, "virt_type": "kvm" if kvm.usable else "qemu"}
    if kvm.usable:
        return Check("kvm", True, f"KVM works: {kvm.reason}", facts)
    fallback = ("TCG works, domains get type='qemu'" if tcg.usable
                else f"TCG also fails: {tcg.reason}")
    return Check("kvm", False, f"KVM unusable: {kvm.reason}; {fallback}", facts,
                 "warning" if tcg.usable else "failed")


def check_libguestfs() -> Check:
    try:
        g = host.new_guestfs()
    except ImportError as exc:
        return Check("libguestfs", False, f"python3-guestfs missing: {exc}")
    except RuntimeError as exc:  # e.g. LIBGUESTFS_BACKEND names no backend
        return Check("libguestfs", False, f"cannot set libguestfs up: {exc}")
    start = time.monotonic()
    try:
        g.add_drive_scratch(16 * 1024 * 1024)
        g.launch()
        version = g.version()
        g.shutdown()
    except RuntimeError as exc:
        # The first line says why; the rest is libguestfs' generic advice on debugging.
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return Check("libguestfs", False, f"appliance failed to launch: {why}")
    finally:
        g.close()
    seconds = round(time.monotonic() - start, 1)
    ver = f"{version['major']}.{version['minor']}.{version['release']}"
    tcg = "" if host.kvm_status()[0] else " (forced TCG)"
    return Check("libguestfs", True, f"appliance launched in {seconds} s{tcg}",
                 {"version": ver, "launch_seconds": seconds, "force_tcg": not host.kvm_status()[0]})


def check_libvirt(uri: str) -> Check:
    import libvirt

    from vmshift import libvirtconn

    try:
        conn = libvirtconn.connect(uri)
    except OperationFailed as exc:
        return Check("libvirt", False, exc.message,
                     {"uri": uri, "library_version": _libvirt_version(libvirt.getVersion())})
    try:
        facts = {"uri": uri, "library_version": _libvirt_version(libvirt.getVersion()),
                 "daemon_version": _libvirt_version(conn.getLibVersion()),
                 "hypervisor_version": _libvirt_version(conn.getVersion()),
                 "hostname": conn.getHostname()}
    finally:
        conn.close()
    return Check("libvirt", True, f"connected to {uri} (libvirt {facts['daemon_version']})", facts)


def _libvirt_version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def qemu_user() -> str:
    """The user libvirt runs QEMU as (Debian's default is libvirt-qemu)."""
    try:
        text = Path("/etc/libvirt/qemu.conf").read_text()
    except OSError:
        return "libvirt-qemu"
    match = re.search(r'^\s*user\s*=\s*"([^"]+)"', text, re.M)
    return match.group(1) if match else "libvirt-qemu"


def check_userfaultfd() -> Check:
    """Post-copy needs userfaultfd in the QEMU process."""
    try:
        sysctl = int(Path("/proc/sys/vm/unprivileged_userfaultfd").read_text())
    except (OSError, ValueError):
        sysctl = None
    dev = Path("/dev/userfaultfd")
    dev_mode = stat.filemode(dev.stat().st_mode) if dev.exists() else None
    user = qemu_user()
    facts = {"unprivileged_userfaultfd": sysctl, "dev_userfaultfd": dev_mode, "qemu_user": user}
    if sysctl == 1:
        return Check("userfaultfd", True, "vm.unprivileged_userfaultfd=1: QEMU may use it", facts)
    if user in ("root", "+0"):
        return Check("userfaultfd", True, "QEMU runs as root, which may use userfaultfd", facts)
    why = (f"vm.unprivileged_userfaultfd={sysctl} and QEMU runs as {user}"
           f"{f'; /dev/userfaultfd is {dev_mode}' if dev_mode else ''}: post-copy will fail. "
           "Fix: sysctl vm.unprivileged_userfaultfd=1, or grant the QEMU user /dev/userfaultfd")
    return Check("userfaultfd", False, why, facts, "warning")  # only post-copy needs it


def _first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.splitlines()[0].strip() if out else None


def check_versions() -> Check:
    facts = {"qemu-img": _first_line(["qemu-img", "--version"]),
             "qemu-system-x86_64": _first_line([host.QEMU, "--version"]),
             "virt-v2v": _first_line(["virt-v2v", "--version"])}
    missing = [k for k, v in facts.items() if v is None and k != "virt-v2v"]
    detail = "missing: " + ", ".join(missing) if missing else "; ".join(
        f"{v}" for v in facts.values() if v)
    return Check("versions", not missing, detail, facts)


LABELS = {"ok": "ok  ", "warning": "warn", "failed": "FAIL"}


def run_checks(uri: str, *, skip_guestfs: bool = False) -> list[Check]:
    checks = [check_kvm(), check_libvirt(uri), check_userfaultfd(), check_versions()]
    if not skip_guestfs:
        checks.insert(1, check_libguestfs())
    return checks


@click.command()
@click.option("--connect", "uri", default=os.environ.get("LIBVIRT_DEFAULT_URI", "qemu:///system"),
              show_default=True, help="libvirt URI to check.")
@click.option("--skip-guestfs", is_flag=True, help="Skip the appliance launch (about 15 s).")
@json_option
def doctor(uri: str, skip_guestfs: bool, json_mode: bool) -> None:
    """Check what this host can do: KVM, libguestfs, libvirt, userfaultfd, versions.

    Every check runs the real thing. Exits 1 when a check the work needs fails
    (libvirt unreachable, libguestfs cannot launch, QEMU missing); KVM missing
    while TCG works, and no userfaultfd (post-copy), are warnings: exit 0.
    """
    checks = run_checks(uri, skip_guestfs=skip_guestfs)
    kvm = next(c for c in checks if c.name == "kvm")
    payload = {"virt_type": kvm.facts["virt_type"], "checks": {c.name: c for c in checks}}
    if not json_mode:
        width = max(len(c.name) for c in checks)
        for c in checks:
            click.echo(f"{c.name:<{width}}  {LABELS[c.status]}  {c.detail}")
        click.echo(f"{'domains':<{width}}  ->    type='{kvm.facts['virt_type']}'")
    failed = [c for c in checks if c.status == "failed"]
    if failed:
        raise OperationFailed(f"doctor: {failed[0].name}: {failed[0].detail}"
                              + (f" (and {len(failed) - 1} more failed)" if failed[1:] else ""),
                              document=("doctor", payload))
    if json_mode:
        emit_json("doctor", {**payload, "outcome": "ok"})
