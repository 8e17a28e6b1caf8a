"""The test bed as other code sees it: TestBed and TestHost.

    from vmshift.testbed.hosts import load_bed, bed_up, bed_down
    bed = load_bed("vmshift") or bed_up("vmshift", hosts=2)
    conn = bed.hosta.connect()

A bed is N libvirt hosts (hosta, hostb, ...) on this machine, each in its own
namespaces and reachable at qemu+tcp://ADDR/system, sharing a storage pool and
a network of the same names. Migrations between them must name the
destination's address as migration URI (``host.migrate_uri``): the hosts share
the machine's kernel, so QEMU would otherwise pick an ambiguous address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libvirt

from vmshift import libvirtconn
from vmshift.testbed import libvirthost, procs, state

DEFAULT_BED = "vmshift"
HOST_NAMES = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class TestHost:
    """One libvirt host of the bed."""

    __test__ = False  # not a pytest test class despite the name

    name: str
    address: str
    uri: str
    migrate_uri: str
    netns: str
    private_pool: str
    private_pool_path: str  # inside the host; same path, different content on each host
    private_pool_outside: str = ""  # the same directory seen from the machine
    hostname: str = ""
    bed: str = ""  # name of the bed the host belongs to

    def connect(self) -> libvirt.virConnect:
        return libvirtconn.connect(self.uri)


@dataclass
class TestBed:
    """N hosts sharing a pool (same path everywhere) and a network (same name)."""

    __test__ = False

    name: str
    hosts: list[TestHost]
    shared_pool: str
    shared_path: str
    network: str
    storage_kind: str  # 'glusterfs' | 'directory'
    userfaultfd: str = ""
    subnet: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def host(self, name: str) -> TestHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"bed {self.name} has no host {name}")

    @property
    def hosta(self) -> TestHost:
        return self.hosts[0]

    @property
    def hostb(self) -> TestHost:
        return self.hosts[1]

    @property
    def hostc(self) -> TestHost:
        return self.hosts[2]

    def guest_address(self, n: int) -> str:
        """An address for guest N on the bed's network (10.241.X.(100+N)/24)."""
        if not 0 <= n < 150:
            raise ValueError(f"guest number {n} out of range 0..149")
        base = self.subnet.rsplit(".", 1)[0]
        return f"{base}.{100 + n}/24"

    @property
    def migration_needs_unsafe(self) -> bool:
        """True on the plain-directory fallback: libvirt cannot tell it is shared."""
        return self.storage_kind != "glusterfs"


def host_name(i: int) -> str:
    return f"host{HOST_NAMES[i]}"


def bed_from_state(st: dict[str, Any]) -> TestBed:
    hosts = [TestHost(name=h["name"], address=h["address"],
                      uri=f"qemu+tcp://{h['address']}/system",
                      migrate_uri=f"tcp://{h['address']}", netns=h["netns"],
                      private_pool=libvirthost.PRIVATE_POOL,
                      private_pool_path=libvirthost.PRIVATE_POOL_PATH,
                      private_pool_outside=str(Path(h["dir"]) / "lib" / "vmshift-private"),
                      hostname=h["name"], bed=st["name"])
             for h in st["hosts"]]
    return TestBed(name=st["name"], hosts=hosts, shared_pool=libvirthost.SHARED_POOL,
                   shared_path=st["shared_path"], network=libvirthost.NETWORK,
                   storage_kind=st.get("storage_kind", "directory"),
                   userfaultfd=st.get("userfaultfd", {}).get("mode", ""),
                   subnet=st.get("subnet", ""))


def is_up(st: dict[str, Any] | None) -> bool:
    """Every recorded daemon still running, and the bed finished coming up."""
    if not st or not st.get("complete"):
        return False
    for h in st["hosts"]:
        for role in ("holder", "libvirtd"):
            if not h.get(role) or not procs.alive(procs.Proc(**h[role])):
                return False
    return True


def load_bed(name: str = DEFAULT_BED) -> TestBed | None:
    """The bed NAME if it is up (all its daemons alive), else None."""
    st = state.read_state(name)
    return bed_from_state(st) if is_up(st) else None


def bed_up(name: str = DEFAULT_BED, hosts: int = 2, **kw: Any) -> TestBed:
    from vmshift.testbed.lifecycle import up
    return up(name, hosts, **kw)


def bed_down(name: str = DEFAULT_BED, **kw: Any) -> None:
    from vmshift.testbed.lifecycle import down
    down(name, **kw)
