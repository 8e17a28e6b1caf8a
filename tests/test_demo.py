"""`make demo`, end to end, as a user types it (issue 14).

The real Makefile target: setup, the reference guest, a one-host bed, ONE
`vmshift convert vm ... --start --verify-boot`, cleanup. The demo runs on a
bed of its own, named after this session's bed ($VMSHIFT_TEST_BED), so it
neither collides with the session's beds nor with a demo run by hand.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.testbed import BED
from vmshift.testbed.guest import ReferenceGuest
from vmshift.testbed.hosts import load_bed

ROOT = Path(__file__).resolve().parent.parent
DEMO_BED = f"{BED}-demo"


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a first run builds the reference guest; TCG boot on 2 cores
def test_make_demo_converts_boots_and_cleans_up(vmware_guest: ReferenceGuest) -> None:
    if os.geteuid() != 0:
        pytest.skip("the demo's libvirt test bed needs root")
    was_up = load_bed(DEMO_BED) is not None  # left by an interrupted run: reused, kept
    proc = subprocess.run(["make", "-s", "demo"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "VMSHIFT_DEMO_BED": DEMO_BED}, timeout=3500,
                          check=False)
    out = proc.stdout
    assert proc.returncode == 0, f"make demo exited {proc.returncode}:\n{out[-3000:]}\n" \
                                 f"{proc.stderr[-3000:]}"
    command = re.search(r"^\$ vmshift convert vm (.*)$", out, re.M)
    assert command, out
    for arg in (f"--vmx {vmware_guest.vmx}", "--output libvirt", "--connect qemu+tcp://",
                "--pool vmshift-private", "--network-map 'VM Network=vmshift-net'",
                "--start", "--verify-boot"):
        assert arg in command.group(1)
    # What the booted guest said of itself: its pinned NIC, MAC and static address.
    nic = re.search(rf"^\s+ens192 {vmware_guest.mac} UP (.*)$", out, re.M)
    assert nic and vmware_guest.ipv4 in nic.group(1).split(), out
    assert re.search(r"^boot: login prompt after [\d.]+ s; failed units: none$", out, re.M)
    table = re.search(r"^stage +seconds\n(.*?)^total +[\d.]+ +\(appliance launches: 1\)$",
                      out, re.M | re.S)
    assert table, out
    stages = re.findall(r"^(\S+) +\d+\.\d$", table.group(1), re.M)
    assert {"inspect+convert", "copy", "define", "boot"} <= set(stages), table.group(0)
    # Cleanup: the domain and its volume went with virsh, and a bed the demo
    # started is down again.
    assert re.search(rf"^Domain '{vmware_guest.name}' has been undefined$", out, re.M), out
    assert re.search(r"^Volume '\S+'\(\S+\.qcow2\) removed\.$", out, re.M), out
    assert (f"$ vmshift testbed down --name {DEMO_BED}" in out) == (not was_up)
    assert (load_bed(DEMO_BED) is not None) == was_up
    assert out.rstrip().endswith("demo: done")


def test_demo_failure_is_one_line(vmware_guest: ReferenceGuest) -> None:
    """A real failure (a bed name the test bed refuses): exit 1, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "vmshift.demo"], capture_output=True,
                          text=True, env={**os.environ, "VMSHIFT_DEMO_BED": "Not_A_Bed"},
                          timeout=300, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # The command's own one-line error, then the demo's: which step failed.
    assert proc.stderr.splitlines() == [
        "vmshift: error: --name: 'Not_A_Bed' is not a valid bed name (lowercase letters, "
        "digits and '-', starting with a letter, <= 20 chars)",
        "demo: error: `vmshift testbed status` exited 2"]
    assert "$ vmshift convert vm" not in proc.stdout
