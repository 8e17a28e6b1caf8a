"""What the preflight knows: facts read from the two libvirt daemons.

Gathering (libvirt I/O) is kept apart from judging (vmshift.migrate.checks),
so every check is a pure function of these facts, and a test can inject a
value that cannot be provoked on one machine (clock skew, versions) through
a named fake instead of mocking libvirt.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse

import libvirt
from lxml import etree

from vmshift.convert import libvirt_reader
from vmshift.convert.maps import NetworkMap
from vmshift.errors import BadInput
from vmshift.model import CdRom, ConnectionType, Disk, DiskSharing, Floppy, Nic, RdmMode

MIGRATION_PORTS = (49152, 49215)  # QEMU's default migration port range


@dataclass
class DiskFacts:
    """A disk as the checks see it: a view of the model's Disk, CdRom or Floppy
    (read by vmshift.convert.libvirt_reader), plus what the hosts' pools say."""

    target: str  # vda
    kind: str  # file | block | network | volume
    device: str  # disk | lun | cdrom | floppy
    path: str | None
    cache: str | None
    readonly: bool
    shareable: bool
    on_dest: bool | None  # the same path is a volume the destination knows
    pool_volume: tuple[str, str] | None = None  # (pool, volume) on the source


@dataclass
class NicFacts:
    """A view of the model's Nic."""

    kind: str  # network | bridge | direct | hostdev | user ...
    source: str | None  # network or bridge name
    mac: str | None


@dataclass
class HostFacts:
    uri: str
    hostname: str
    lib_version: int
    hv_version: int
    free_memory: int  # bytes
    networks: dict[str, str | None]  # libvirt network -> its bridge
    bridges: set[str]  # host interfaces libvirt reports (bridges included)
    domain_names: set[str]
    domain_uuids: set[str]
    arch: str


@dataclass
class DomainFacts:
    name: str
    uuid: str
    persistent: bool
    active: bool
    virt_type: str
    memory: int  # bytes (current maximum of the live definition)
    disks: list[DiskFacts]
    nics: list[NicFacts]
    hostdevs: list[str]  # descriptions of passthrough devices
    nvram: str | None
    tpm: str | None  # backend model when an emulated TPM keeps state
    leases: int
    cpu_xml: str | None  # the guest CPU definition, for compareCPU
    machine: str | None


@dataclass
class ProbeFacts:
    """Things measured outside libvirt, each None when not measurable."""

    clock_skew_s: float | None = None
    clock_note: str = ""
    resolves: dict[str, list[str]] = field(default_factory=dict)  # name -> addresses ([] = no)
    port_reachable: bool | None = None
    port_note: str = ""


@dataclass
class Options:
    """The parts of the plan the checks need."""

    mode: str = "live"  # live | suspended | offline | storage
    copy_storage: str | None = None  # all | inc
    copy_disks: list[str] | None = None
    network_map: NetworkMap = field(default_factory=NetworkMap)
    migrate_uri: str | None = None
    unsafe: bool = False
    dest_pool: str | None = None


@dataclass
class Facts:
    source: HostFacts
    dest: HostFacts
    domain: DomainFacts
    probes: ProbeFacts
    options: Options
    cpu_compare: int | None = None  # libvirt.VIR_CPU_COMPARE_* or None if not evaluable
    cpu_note: str = ""
    dest_volume_paths: set[str] = field(default_factory=set)


def lookup_domain(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError:
        try:
            return conn.lookupByUUIDString(name)
        except libvirt.libvirtError as exc:
            raise BadInput(f"DOMAIN {name!r}: not found on {conn.getURI()}") from exc


def host_facts(conn: libvirt.virConnect) -> HostFacts:
    nets: dict[str, str | None] = {}
    for net in conn.listAllNetworks():
        try:
            nets[net.name()] = net.bridgeName()
        except libvirt.libvirtError:
            nets[net.name()] = None  # e.g. a macvtap or hostdev network has no bridge
    try:
        bridges = set(conn.listInterfaces()) | set(conn.listDefinedInterfaces())
    except libvirt.libvirtError:
        bridges = set()
    doms = conn.listAllDomains()
    caps = etree.fromstring(conn.getCapabilities().encode())
    return HostFacts(
        uri=conn.getURI(), hostname=conn.getHostname(), lib_version=conn.getLibVersion(),
        hv_version=conn.getVersion(), free_memory=conn.getFreeMemory(), networks=nets,
        bridges=bridges, domain_names={d.name() for d in doms},
        domain_uuids={d.UUIDString() for d in doms},
        arch=caps.findtext("host/cpu/arch") or "")


def _dest_has_path(dest: libvirt.virConnect, path: str) -> bool:
    try:
        dest.storageVolLookupByPath(path)
        return True
    except libvirt.libvirtError:
        return False


def volume_of(src: libvirt.virConnect, path: str) -> tuple[str, str] | None:
    """(pool, volume) names of the volume at PATH on SRC, None when no pool has it."""
    try:
        vol = src.storageVolLookupByPath(path)
        return vol.storagePoolLookupByVolume().name(), vol.name()
    except libvirt.libvirtError:
        return None


def _device(dev: Disk | CdRom | Floppy) -> str:
    if isinstance(dev, CdRom):
        return "cdrom"
    if isinstance(dev, Floppy):
        return "floppy"
    return "lun" if dev.rdm == RdmMode.PHYSICAL else "disk"


def disk_facts(dev: Disk | CdRom | Floppy, src: libvirt.virConnect,
               dest: libvirt.virConnect | None) -> DiskFacts:
    path = dev.source
    disk = dev if isinstance(dev, Disk) else None
    return DiskFacts(
        target=dev.target_dev or "?", kind=dev.source_type or "file", device=_device(dev),
        path=path, cache=disk.cache if disk else None, readonly=bool(dev.readonly),
        shareable=bool(disk and disk.sharing == DiskSharing.MULTI_WRITER),
        on_dest=_dest_has_path(dest, path) if (dest is not None and path) else None,
        pool_volume=volume_of(src, path) if path else None)


def nic_facts(nic: Nic) -> NicFacts:
    kind = nic.connection or ConnectionType.CUSTOM
    return NicFacts(kind.value, nic.network, nic.mac)


def domain_facts(dom: libvirt.virDomain, src: libvirt.virConnect,
                 dest: libvirt.virConnect | None) -> DomainFacts:
    xml = libvirt_reader.parse(dom.XMLDesc(0))
    vm = libvirt_reader.read_domain(xml)
    fw = vm.firmware
    return DomainFacts(
        name=dom.name(), uuid=dom.UUIDString(), persistent=bool(dom.isPersistent()),
        active=bool(dom.isActive()), virt_type=xml.type or "",
        memory=int(dom.maxMemory()) * 1024,
        # Disks, CD-ROMs and floppies in the definition's order, as findings list them.
        disks=[disk_facts(d, src, dest) for d in libvirt_reader.storage_devices(xml)],
        nics=[nic_facts(n) for n in vm.nics or []],
        hostdevs=[p.label or p.kind for p in vm.passthrough or []],
        nvram=fw.nvram_path,
        tpm="emulator" if any(t.backend == "emulator" for t in fw.tpms or []) else None,
        leases=len(vm.leases or []), cpu_xml=xml.fragment("./cpu"), machine=xml.os_machine)


def compare_cpu(dest: libvirt.virConnect, d: DomainFacts, arch: str) -> tuple[int | None, str]:
    """Ask the destination whether it can provide the guest's CPU (for the
    hypervisor the domain uses: TCG and KVM differ)."""
    if d.cpu_xml is None:
        return None, "the domain has no <cpu> element: QEMU's default model"
    try:
        res = dest.compareHypervisorCPU(None, arch, d.machine, d.virt_type, d.cpu_xml, 0)
        return res, ""
    except libvirt.libvirtError as exc:
        return None, f"compareHypervisorCPU failed: {exc.get_error_message()}"


def uri_host(uri: str) -> str | None:
    return urlparse(uri).hostname


def migration_address(dest_uri: str, template: str | None = None) -> str | None:
    """The migration stream's URI for a destination, when none is given.

    With TEMPLATE (``tcp://{host}``), {host} is the host of DEST_URI. Without
    it, an IP address in DEST_URI is used as is: the admin reached libvirt
    there, while QEMU's default, the destination's own hostname, often
    resolves nowhere or to another network. A name gives None: libvirt's
    default stands."""
    host = uri_host(dest_uri)
    if host and ":" in host:
        host = f"[{host}]"  # an IPv6 literal keeps its brackets in a URI
    if template is not None:
        if not host:
            raise BadInput(f"--migrate-uri-template: {dest_uri} names no host")
        try:
            return template.format(host=host)
        except (KeyError, IndexError, ValueError) as exc:
            raise BadInput(f"--migrate-uri-template: {template!r}: only {{host}} may be "
                           f"substituted ({exc})") from None
    try:
        ipaddress.ip_address(host.strip("[]") if host else "")
    except ValueError:
        return None
    return f"tcp://{host}"


def resolve(name: str) -> list[str]:
    try:
        return sorted({ai[4][0] for ai in socket.getaddrinfo(name, None)})
    except OSError:
        return []


def probe_port(host: str, port: int, timeout: float = 2.0) -> tuple[bool | None, str]:
    """A TCP connect to a migration port. Nobody listens before a migration
    starts, so a refusal proves the port is reachable; a timeout means a
    firewall drops it. Measured from the machine running vmshift."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{host}:{port} accepts connections"
    except ConnectionRefusedError:
        return True, f"{host}:{port} refused (reachable, nothing listening yet)"
    except TimeoutError:
        return False, f"{host}:{port} timed out (filtered?)"
    except OSError as exc:
        return False, f"{host}:{port}: {exc.strerror or exc}"


ClockProbe = Callable[[HostFacts, HostFacts], tuple[float | None, str]]


def no_clock_probe(src: HostFacts, dest: HostFacts) -> tuple[float | None, str]:
    """libvirt exposes no host clock; without one, the skew is not measured
    unless both URIs name this machine (then there is one clock)."""
    local = {None, "", "localhost", socket.gethostname()}
    if uri_host(src.uri) in local and uri_host(dest.uri) in local:
        return 0.0, "both URIs are this machine"
    return None, "libvirt reports no host clock; check NTP on both hosts"


def probe_facts(src: HostFacts, dest: HostFacts, opts: Options,
                clock: ClockProbe = no_clock_probe) -> ProbeFacts:
    p = ProbeFacts()
    p.clock_skew_s, p.clock_note = clock(src, dest)
    # QEMU connects to the destination by its hostname unless --migrate-uri
    # gives an address, so that is the name that must resolve.
    target = uri_host(opts.migrate_uri) if opts.migrate_uri else dest.hostname
    if target:
        p.resolves[target] = resolve(target)
        addrs = p.resolves[target]
        if addrs:
            p.port_reachable, p.port_note = probe_port(addrs[0], MIGRATION_PORTS[0])
    return p


def refresh_pools(conn: libvirt.virConnect) -> None:
    """Pools list volumes as of their last refresh; a disk created since
    would look absent."""
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        try:
            pool.refresh(0)
        except libvirt.libvirtError:
            continue  # a pool busy with a job keeps its old list


@dataclass
class HostPair:
    """What the preflight reads of a source and a destination, whatever the
    domain (the probes depend on the options' migrate_uri only)."""

    source: HostFacts
    dest: HostFacts
    probes: ProbeFacts


def read_hosts(src: libvirt.virConnect, dest: libvirt.virConnect, opts: Options,
               clock: ClockProbe = no_clock_probe) -> HostPair:
    refresh_pools(dest)
    s, d = host_facts(src), host_facts(dest)
    return HostPair(s, d, probe_facts(s, d, opts, clock))


def gather(src: libvirt.virConnect, dest: libvirt.virConnect, dom: libvirt.virDomain,
           opts: Options, clock: ClockProbe = no_clock_probe,
           hosts: HostPair | None = None) -> Facts:
    """The facts for moving DOM; HOSTS, when given, were read already (an
    evacuation checks many domains against the same two hosts)."""
    hosts = hosts or read_hosts(src, dest, opts, clock)
    dfacts = domain_facts(dom, src, dest)
    cmp, note = compare_cpu(dest, dfacts, hosts.source.arch)
    return Facts(source=hosts.source, dest=hosts.dest, domain=dfacts, probes=hosts.probes,
                 options=opts, cpu_compare=cmp, cpu_note=note)
