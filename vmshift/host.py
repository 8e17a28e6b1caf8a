"""What this host can really do, detected once and shared by every command.

The KVM probe boots the host's own kernel under QEMU with ``-accel kvm -cpu
host`` and waits for it to print on the serial console. Opening /dev/kvm, or
even running a few real-mode instructions, is not enough: under nested
virtualisation a vCPU can start and then make no progress, or QEMU aborts on
an MSR write (``kvm_buf_set_msrs``), only once a real guest runs. The same
probe under TCG proves that the probe itself works, so a "KVM unusable"
verdict is about KVM and not about the probe.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
PROBE_TIMEOUT_S = 20.0  # a working KVM prints within a second; 20 s means stuck
TCG_PROBE_TIMEOUT_S = 120.0  # emulation on a loaded host can take a while to print
# The kernel panics (no root fs) and QEMU exits because of -no-reboot; any
# serial output at all proves that the vCPU executes guest code.
PROBE_APPEND = "console=ttyS0 panic=-1 loglevel=4"
CACHE_DIR = Path(os.environ.get("VMSHIFT_RUN_DIR", "/run/vmshift"))


@dataclass
class AccelProbe:
    accel: str
    usable: bool
    reason: str
    seconds: float
    serial_lines: int = 0


def host_kernel() -> str | None:
    """The newest /boot/vmlinuz-*, the guest kernel the probe boots."""
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    return kernels[-1] if kernels else None


def _qemu_cmd(accel: str, kernel: str, serial_log: str) -> list[str]:
    cpu = ["-cpu", "host"] if accel == "kvm" else []
    return [QEMU, "-accel", accel, *cpu, "-machine", "q35", "-m", "256",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", kernel, "-append", PROBE_APPEND,
            "-serial", f"file:{serial_log}", "-monitor", "none"]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def probe_accel(accel: str, timeout: float | None = None) -> AccelProbe:
    """Boot the host kernel under ``accel``; usable once it prints on its console.

    QEMU is stopped as soon as the first console line appears, so a working
    accelerator answers in about a second (KVM) or a few (TCG on a busy host),
    and only a stuck vCPU costs the whole timeout.
    """
    if timeout is None:
        timeout = PROBE_TIMEOUT_S if accel == "kvm" else TCG_PROBE_TIMEOUT_S
    if accel == "kvm" and not os.path.exists("/dev/kvm"):
        return AccelProbe(accel, False, "/dev/kvm does not exist", 0.0)
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelProbe(accel, False, "/dev/kvm is not accessible to this user", 0.0)
    kernel = host_kernel()
    if kernel is None:
        return AccelProbe(accel, False, "no /boot/vmlinuz-* to boot as a probe", 0.0)
    with tempfile.TemporaryDirectory(prefix="vmshift-probe-") as tmp:
        serial = Path(tmp) / "serial.log"
        start = time.monotonic()
        try:
            proc = subprocess.Popen(_qemu_cmd(accel, kernel, str(serial)),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        except FileNotFoundError:
            return AccelProbe(accel, False, f"{QEMU} is not installed", 0.0)
        lines = _watch_console(proc, serial, start + timeout)
        exited = proc.poll() is not None
        if not exited:
            proc.kill()
        stderr = proc.communicate()[1] or ""
        elapsed = time.monotonic() - start
    return _verdict(accel, exited, proc.returncode if exited else None, stderr, lines,
                    elapsed, timeout)


def _watch_console(proc: subprocess.Popen, serial: Path, deadline: float) -> int:
    """Wait for the first console line, QEMU's exit, or the deadline."""
    while time.monotonic() < deadline:
        text = serial.read_text(errors="replace") if serial.exists() else ""
        if "\n" in text:
            return text.count("\n")
        if proc.poll() is not None:
            return 0
        time.sleep(0.2)
    return 0


def _verdict(accel: str, exited: bool, code: int | None, stderr: str, lines: int,
             elapsed: float, timeout: float) -> AccelProbe:
    if lines > 0:
        return AccelProbe(accel, True, f"the guest kernel ran (console output after "
                          f"{elapsed:.1f} s)", round(elapsed, 2), lines)
    if exited and code not in (0, None):
        why = _last_line(stderr) or f"exit status {code}"
        return AccelProbe(accel, False, f"QEMU failed: {why}", round(elapsed, 2))
    if not exited:
        return AccelProbe(accel, False, f"the vCPU made no progress: no console output "
                          f"from the guest kernel in {timeout:.0f} s", round(elapsed, 2))
    return AccelProbe(accel, False, "the guest kernel printed nothing", round(elapsed, 2))


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def kvm_probe(refresh: bool = False) -> AccelProbe:
    """The KVM probe, cached per host boot (it costs up to 20 s when KVM hangs)."""
    cache = CACHE_DIR / "kvm-probe.json"
    if not refresh:
        try:
            data = json.loads(cache.read_text())
            if data.pop("boot_id", None) == _boot_id():
                return AccelProbe(**data)
        except (OSError, ValueError, TypeError):
            pass
    result = probe_accel("kvm")
    try:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({**asdict(result), "boot_id": _boot_id()}))
        tmp.replace(cache)
    except OSError:
        pass  # an unwritable cache only costs time
    return result


def kvm_status() -> tuple[bool, str]:
    probe = kvm_probe()
    return probe.usable, probe.reason


def virt_type(choice: str = "auto") -> str:
    """The libvirt domain type to write: 'kvm' or 'qemu' (TCG)."""
    if choice in ("kvm", "qemu"):
        return choice
    if choice != "auto":
        raise ValueError(f"virt type must be auto, kvm or qemu, not {choice!r}")
    return "kvm" if kvm_status()[0] else "qemu"


def virt_type_notice(choice: str, chosen: str) -> str | None:
    """What to tell the user about the choice, so a TCG fallback is never silent."""
    if choice != "auto":
        return f"domain type {chosen} (forced with --virt-type)"
    if chosen == "qemu":
        return f"KVM is unusable here ({kvm_status()[1]}): writing type='qemu' (TCG)"
    return None


def libguestfs_env() -> dict[str, str]:
    """Environment for libguestfs tools (guestfish, virt-v2v): TCG when KVM is broken."""
    env = dict(os.environ)
    env.setdefault("LIBGUESTFS_BACKEND", "direct")
    if not kvm_status()[0]:
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    return env


def new_guestfs():  # type: ignore[no-untyped-def]
    """A libguestfs handle set up for this host (direct backend, TCG if needed)."""
    import guestfs  # Debian's python3-guestfs, present through --system-site-packages

    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend(os.environ.get("LIBGUESTFS_BACKEND", "direct"))
    if not kvm_status()[0]:
        g.set_backend_settings(["force_tcg"])
    return g

