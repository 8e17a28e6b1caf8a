"""`vmshift doctor --json` against the host's real state.

The KVM answer is not hard-coded: the test runs its own probe (a guest that
must reach a real instruction stream under KVM) and demands the same verdict.
"""

import glob
import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VMSHIFT = str(ROOT / ".venv" / "bin" / "vmshift")


def direct_kvm_probe() -> bool:
    """Independent of vmshift.host: boot the host kernel under KVM for 25 s and
    see whether it reaches its early console messages."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    kernel = sorted(glob.glob("/boot/vmlinuz-*"))[-1]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "console"
        try:
            subprocess.run(["qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-m", "192",
                            "-display", "none", "-nodefaults", "-no-reboot",
                            "-kernel", kernel, "-append", "console=ttyS0 panic=-1",
                            "-serial", f"file:{log}"], capture_output=True, timeout=25)
        except subprocess.TimeoutExpired:
            pass
        return "Linux version" in log.read_text(errors="replace")


@pytest.fixture(scope="module")
def report(two_hosts):
    res = subprocess.run([VMSHIFT, "doctor", "--json", "--connect", two_hosts.hosta.uri],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["schema_version"] == 1 and doc["kind"] == "doctor"
    return doc


def test_kvm_verdict_matches_a_direct_probe(report):
    kvm = report["checks"]["kvm"]
    expected = direct_kvm_probe()
    assert kvm["ok"] is expected
    assert report["virt_type"] == ("kvm" if expected else "qemu")
    if not expected:
        assert kvm["facts"]["kvm"]["reason"]  # says why, not just "no"
        assert "KVM unusable" in kvm["detail"]
        # The fallback is proven, not assumed.
        assert kvm["facts"]["tcg"]["usable"] is True


def test_libguestfs_appliance_launches(report):
    gfs = report["checks"]["libguestfs"]
    assert gfs["ok"] is True, gfs["detail"]
    out = subprocess.run(["guestfish", "--version"], capture_output=True, text=True).stdout
    assert gfs["facts"]["version"] in out
    assert gfs["facts"]["force_tcg"] is (report["virt_type"] == "qemu")


def test_libvirt_connection_is_reported(report, two_hosts):
    lv = report["checks"]["libvirt"]
    assert lv["ok"] is True, lv["detail"]
    assert lv["facts"]["uri"] == two_hosts.hosta.uri
    out = subprocess.run(["libvirtd", "--version"], capture_output=True, text=True).stdout
    assert lv["facts"]["daemon_version"] in out


def test_versions_are_the_installed_ones(report):
    facts = report["checks"]["versions"]["facts"]
    qemu_img = subprocess.run(["qemu-img", "--version"], capture_output=True, text=True)
    assert facts["qemu-img"] == qemu_img.stdout.splitlines()[0]
    assert facts["qemu-system-x86_64"].startswith("QEMU emulator version")


def test_userfaultfd_matches_the_sysctl(report):
    uffd = report["checks"]["userfaultfd"]
    sysctl = int(Path("/proc/sys/vm/unprivileged_userfaultfd").read_text())
    assert uffd["facts"]["unprivileged_userfaultfd"] == sysctl
    if sysctl == 1:
        assert uffd["ok"] is True


def test_unreachable_libvirt_fails_after_the_full_report():
    res = subprocess.run([VMSHIFT, "doctor", "--json", "--skip-guestfs",
                          "--connect", "qemu+tcp://127.0.0.1:1/system"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1  # the user's work needs libvirt
    doc = json.loads(res.stdout)  # still the one doctor document, every check in it
    assert doc["kind"] == "doctor" and doc["outcome"] == "failed"
    assert set(doc["checks"]) == {"kvm", "libvirt", "userfaultfd", "versions"}
    lv = doc["checks"]["libvirt"]
    assert lv["ok"] is False and lv["status"] == "failed"
    assert "qemu+tcp://127.0.0.1:1/system" in lv["detail"]
    assert "libvirt: XML-RPC error" not in res.stderr  # libvirt's own printer is silenced
    assert res.stderr.startswith("vmshift: error: doctor: libvirt: cannot connect to ")
    assert len(res.stderr.splitlines()) == 1
