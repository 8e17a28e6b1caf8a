"""`make demo`: the main job, end to end, on the built-in reference guest.

A VMware-style Debian 12 guest (VMX + VMDK, pvscsi, vmxnet3, a static MAC,
open-vm-tools) goes through what vmshift can do today:

1. doctor: which domain type this host can run (KVM or TCG);
2. inspect: what is inside the guest, and the pre-flight findings;
3. convert disk: the VMDK into a qcow2 volume in a libvirt pool on a test-bed
   host, uploaded through the libvirt stream API, and verified;
4. vmx2xml: the VMX as KVM-ready domain XML (same UUID and MAC, virtio);
5. the domain is defined on that host, booted, and must reach its login prompt.

Every step runs the real `vmshift` command, shown as it is typed. The guest
drivers stage (rewriting fstab, removing VMware tools) is a later issue, so
the demo boots the guest as converted so far, and says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from lxml import etree

from vmshift.testbed.console import Console
from vmshift.testbed.guest import reference_guest
from vmshift.testbed.hosts import bed_down, bed_up, load_bed

BED = os.environ.get("VMSHIFT_DEMO_BED", "vmshift-demo")
BOOT_TIMEOUT_S = 900  # a full Debian boot under TCG on 2 loaded cores


def say(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def vmshift(*args: str, ok: tuple[int, ...] = (0,), capture: bool = False) -> str:
    """Run the real CLI, echoing the command line like a terminal would."""
    print("$ vmshift " + " ".join(args), flush=True)
    proc = subprocess.run([sys.executable, "-m", "vmshift", *args], text=True,
                          stdout=subprocess.PIPE if capture else None)
    if proc.returncode not in ok:
        raise SystemExit(f"demo: `vmshift {args[0]}` exited {proc.returncode}")
    return proc.stdout or ""


def point_disk_at_volume(xml: str, volume_path: str) -> str:
    """The converted disk replaces the VMDK that vmx2xml names (one-disk guest)."""
    root = etree.fromstring(xml.encode())
    disk = root.find("./devices/disk[@device='disk']")
    disk.find("source").set("file", volume_path)
    disk.find("driver").set("type", "qcow2")
    return etree.tostring(root, encoding="unicode")


def boot_and_wait(conn, xml: str) -> float:  # type: ignore[no-untyped-def]
    dom = conn.defineXML(xml)
    start = time.monotonic()
    dom.create()
    try:
        console = Console(conn, dom)
        match = console.wait_for(r"(\S+) login:", BOOT_TIMEOUT_S)
        print(f"guest console: '{match.group(0)}' after {time.monotonic() - start:.0f} s")
    finally:
        dom.destroy()
        dom.undefine()
    return time.monotonic() - start


def main() -> int:
    say("1. doctor: what can this host run?")
    vmshift("doctor", "--skip-guestfs")

    say("2. the reference VMware guest (built once, then cached in $VMSHIFT_CACHE)")
    t0 = time.monotonic()
    guest = reference_guest("base")
    print(f"{guest.vmx}  ({time.monotonic() - t0:.0f} s)")

    say("3. inspect: what is inside, and what will break?")
    vmshift("inspect", str(guest.vmx), ok=(0, 3))

    started_bed = load_bed(BED) is None
    say(f"4. a one-host libvirt test bed '{BED}' to receive the VM")
    bed = bed_up(BED, hosts=1)
    host = bed.hosta
    try:
        say("5. convert the disk into a pool on that host (stream upload, verified)")
        volume = f"{guest.name}.qcow2"
        vmshift("convert", "disk", str(guest.vmdk_sparse), volume, "--pool", host.private_pool,
                "--connect", host.uri, "--force")
        conn = host.connect()
        vol = conn.storagePoolLookupByName(host.private_pool).storageVolLookupByName(volume)

        say("6. vmx2xml: the VM definition, for KVM")
        xml = vmshift("vmx2xml", str(guest.vmx), "--default-network", bed.network,
                      capture=True)
        print(xml)

        say("7. define and boot it; wait for the login prompt on the serial console")
        seconds = boot_and_wait(conn, point_disk_at_volume(xml, vol.path()))
        vol.delete(0)
        say(f"done: the converted guest booted to its login prompt in {seconds:.0f} s")
    finally:
        if started_bed:
            bed_down(BED)
    return 0


if __name__ == "__main__":
    sys.exit(main())
