"""`make demo`: the main job, end to end, on the built-in reference guest.

A VMware-style Debian 12 guest (VMX + VMDK, pvscsi, vmxnet3 with a static
MAC, ens192, /dev/sda1 in fstab, open-vm-tools) becomes a KVM domain on a
one-host libvirt test bed with ONE `vmshift convert vm`, which boots it and
prints what the guest reported of itself (interface, address, failed units)
and how long each stage took. Every command is the real CLI, shown as typed.
Afterwards the domain and its volumes are removed, and the bed is stopped if
the demo started it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any

BED = os.environ.get("VMSHIFT_DEMO_BED", "vmshift-demo")
NETWORK_MAP = "VM Network=vmshift-net"


class DemoFailed(Exception):
    """Which step failed, in one line; the command printed its own error line above."""


def say(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def show(cmd: list[str]) -> None:
    print("$ " + shlex.join(cmd), flush=True)


def vmshift(*args: str) -> None:
    """Run the CLI with its human output straight to the terminal."""
    show(["vmshift", *args])
    code = subprocess.run([sys.executable, "-m", "vmshift", *args]).returncode
    if code != 0:
        raise DemoFailed(f"`vmshift {' '.join(args[:2])}` exited {code}")


def vmshift_json(*args: str) -> dict[str, Any]:
    """Run the CLI with --json; its progress events become one line per step."""
    show(["vmshift", *args, "--json"])
    start = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:  # a file: a big document cannot block the pipe
        proc = subprocess.Popen([sys.executable, "-m", "vmshift", *args, "--json"],
                                stdout=out, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        last = None
        for line in proc.stderr:
            last = _render_event(line, start, last)
        proc.wait()
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:  # its own error line went to stderr above
        raise DemoFailed(f"`vmshift {' '.join(args[:2])}` exited {proc.returncode}")
    return json.loads(text)


def _render_event(line: str, start: float, last: str | None) -> str | None:
    try:
        event = json.loads(line)
    except ValueError:
        print(line, end="", file=sys.stderr)  # not an event: pass it on unchanged
        return last
    text = event.get("step") or event.get("message")
    if text and text != last:
        print(f"  [{time.monotonic() - start:5.0f} s] {text}", flush=True)
    return text or last


def remove_domain(uri: str, name: str) -> None:
    """virsh, shown as typed: stop the domain, then undefine it with its volumes."""
    stop = ["virsh", "-c", uri, "destroy", name]
    show(stop)
    subprocess.run(stop, check=False)  # it may have stopped by itself: not an error
    undefine = ["virsh", "-c", uri, "undefine", name, "--remove-all-storage"]
    show(undefine)
    if subprocess.run(undefine, check=False).returncode != 0:
        raise DemoFailed(f"could not remove domain {name} and its volumes from {uri}")


def demo() -> None:
    say("1. the reference VMware guest (built once, ~5-8 min, then cached in $VMSHIFT_CACHE)")
    guest = vmshift_json("testbed", "guest", "build", "--variant", "base")["guests"]["base"]
    print(f"  {guest['vmx']}  (MAC {guest['mac']}, ens192 {guest['ipv4']})")

    say(f"2. a one-host libvirt test bed '{BED}' to receive it")
    started_bed = not vmshift_json("testbed", "status", "--name", BED)["up"]
    bed = vmshift_json("testbed", "up", "--hosts", "1", "--storage", "directory",
                       "--name", BED)
    host = bed["hosts"][0]
    print(f"  {host['name']}: {host['uri']}, pool {host['private_pool']}, "
          f"network {bed['network']}")
    try:
        say("3. convert it, start it and check what the guest says of itself")
        vmshift("convert", "vm", "--vmx", guest["vmx"], "--output", "libvirt",
                "--connect", host["uri"], "--pool", host["private_pool"],
                "--network-map", NETWORK_MAP, "--start", "--verify-boot")
        say("4. clean up")
        remove_domain(host["uri"], guest["name"])
    finally:
        if started_bed:
            vmshift("testbed", "down", "--name", BED)


def main() -> int:
    try:
        demo()
    except DemoFailed as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
        return 130
    print("\ndemo: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
