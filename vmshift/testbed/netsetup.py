"""The bed's private network: one bridge, one veth per namespace.

Layout for bed index X (subnet 10.241.X.0/24):

- ``vmsbrX`` bridge in the machine's namespace, address .1 (so tests reach the hosts);
- the storage namespace (glusterd) at .2;
- host *i* at .(11+i). Inside each host namespace the veth is enslaved to a
  bridge named ``vmshift0`` that carries the host address; libvirt's network
  ``vmshift-net`` (bridge mode) puts guest NICs on it, so guests on all hosts
  share one L2 segment, as on a real cluster, and keep it across migrations.

Interface names stay within the kernel's 15 characters.
"""

from __future__ import annotations

import json

from vmshift.testbed import procs

HOST_BRIDGE = "vmshift0"  # same name inside every host namespace


def subnet_address(index: int, last: int) -> str:
    return f"10.241.{index}.{last}"


def bed_bridge(index: int) -> str:
    return f"vmsbr{index}"


def add_bed_bridge(index: int) -> str:
    bridge = bed_bridge(index)
    if not procs.link_exists(bridge):
        procs.run(["ip", "link", "add", bridge, "type", "bridge"])
    procs.run(["ip", "addr", "replace", f"{subnet_address(index, 1)}/24", "dev", bridge])
    procs.run(["ip", "link", "set", bridge, "up"])
    return bridge


def add_netns(netns: str) -> None:
    if not procs.netns_exists(netns):
        procs.run(["ip", "netns", "add", netns])
    procs.run(["ip", "-n", netns, "link", "set", "lo", "up"])


def add_veth(index: int, veth: str, netns: str) -> None:
    """A veth from the bed bridge into NETNS, named eth0 there."""
    if procs.link_exists(veth):
        return
    inner = veth + "p"
    procs.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", inner,
               "netns", netns])
    procs.run(["ip", "link", "set", veth, "master", bed_bridge(index), "up"])
    procs.run(["ip", "-n", netns, "link", "set", inner, "name", "eth0"])
    procs.run(["ip", "-n", netns, "link", "set", "eth0", "up"])


def address_storage(netns: str, address: str) -> None:
    procs.run(["ip", "-n", netns, "addr", "replace", f"{address}/24", "dev", "eth0"])


def address_host(netns: str, address: str) -> None:
    """Host address on the in-namespace bridge that guest NICs also join."""
    ns = ["ip", "-n", netns]
    done = procs.run([*ns, "link", "show", HOST_BRIDGE], check=False)
    if done.returncode != 0:
        procs.run([*ns, "link", "add", HOST_BRIDGE, "type", "bridge"])
    procs.run([*ns, "link", "set", "eth0", "master", HOST_BRIDGE])
    # A bridge takes the lowest MAC of its ports unless one is set. Guest taps
    # carry fe:54:00:..., below a random veth MAC such as fe:75:...: the host
    # bridge then took a guest's MAC, and during a migration to that host the
    # source's bridge delivered the host's own traffic to the guest's tap
    # there (seen: every migration to that host hung until keepalive timeout).
    mac = json.loads(procs.run([*ns, "-j", "link", "show", "eth0"]).stdout)[0]["address"]
    procs.run([*ns, "link", "set", HOST_BRIDGE, "address", mac])
    procs.run([*ns, "addr", "replace", f"{address}/24", "dev", HOST_BRIDGE])
    procs.run([*ns, "link", "set", HOST_BRIDGE, "up"])


def remove_netns(netns: str) -> None:
    if procs.netns_exists(netns):
        procs.run(["ip", "netns", "del", netns], check=False)


def remove_link(name: str) -> None:
    if procs.link_exists(name):
        procs.run(["ip", "link", "del", name], check=False)
