"""The facts an evacuation is planned from, read from the libvirt hosts.

Gathering is kept apart from deciding (``placement``): this module opens the
connections and asks the daemons; the plan is then a pure function of what
it returns, so ``--dry-run`` prints exactly the plan a real run follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import libvirt
from lxml import etree

from vmshift.convert.maps import NetworkMap
from vmshift.errors import BadInput, OperationFailed, VmshiftError
from vmshift.libvirtconn import connect
from vmshift.migrate import facts as F
from vmshift.migrate import preflight
from vmshift.migrate.evacuate import maintenance
from vmshift.migrate.evacuate.placement import Guest, Target

# <metadata><evacuate xmlns="https://vmshift.dev/xmlns/evacuate/1" priority="10"/></metadata>
PRIORITY_NS = "https://vmshift.dev/xmlns/evacuate/1"


@dataclass
class Host:
    """A libvirt host taking part: its connection, or why there is none."""

    uri: str
    conn: libvirt.virConnect | None
    name: str
    uuid: str | None = None
    error: str | None = None


@dataclass
class Selection:
    """Which of the source's domains the evacuation is about."""

    only: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    shutoff: str = "move"  # move | leave
    priorities: dict[str, int] = field(default_factory=dict)


@dataclass
class Checks:
    """What the migrate preflight is run with, for every (VM, target) pair."""

    network_map: NetworkMap = field(default_factory=NetworkMap)
    copy_storage: str | None = None
    unsafe: bool = False
    dest_pool: str | None = None
    skip: tuple[str, ...] = ()
    migrate_uris: dict[str, str | None] = field(default_factory=dict)  # target URI -> stream


@dataclass
class Facts:
    source: Host
    targets: list[Host]
    guests: list[Guest]
    plan_targets: list[Target]
    left: dict[str, str]  # VM -> why it stays (excluded, shut off and left, ...)
    excluded: set[str]


def open_source(uri: str) -> Host:
    conn = connect(uri, role="source")
    return Host(uri, conn, conn.getHostname(), maintenance.host_uuid(conn))


def open_targets(uris: list[str], source: Host) -> list[Host]:
    """Every target, reachable or not: one that is down refuses every VM in
    the plan (with its error), so the rest of the evacuation can go on."""
    hosts: list[Host] = []
    seen: dict[str, str] = {source.uuid or "": f"the source {source.uri}"}
    for uri in uris:
        try:
            conn = connect(uri, role="target")
        except OperationFailed as exc:
            hosts.append(Host(uri, None, uri, error=exc.message))
            continue
        host = Host(uri, conn, conn.getHostname(), maintenance.host_uuid(conn))
        if host.uuid in seen:
            raise BadInput(f"--targets: {uri} is the same libvirt host as {seen[host.uuid]} "
                           f"(host UUID {host.uuid})")
        seen[host.uuid or ""] = uri
        hosts.append(host)
    names = [h.name for h in hosts]
    for h in hosts:  # two hosts calling themselves alike are told apart by URI
        if names.count(h.name) > 1:
            h.name = h.uri
    return hosts


def capacity(host: Host) -> Target:
    """HOST's memory and CPUs as placement counts them. Free memory is what
    the kernel can hand out: free pages plus buffers and page cache (which it
    reclaims), the same measure Nova's libvirt driver uses."""
    if host.conn is None:
        return Target(host.name, host.uri, 0, 0, 0)
    stats = host.conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
    free = sum(int(stats.get(k, 0)) for k in ("free", "buffers", "cached"))
    committed = sum(d.info()[3] for d in host.conn.listAllDomains(
        libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE))
    entry = maintenance.get(host.uuid) if host.uuid else None
    return Target(host.name, host.uri, int(stats["total"]), free, host.conn.getInfo()[2],
                  committed, in_maintenance=entry is not None)


def priority(dom: libvirt.virDomain) -> int | None:
    """The priority an admin put in the domain's metadata, if any."""
    try:
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, PRIORITY_NS, 0)
    except libvirt.libvirtError:
        return None  # no such element: no priority
    value = etree.fromstring(xml.encode()).get("priority")
    try:
        return int(value) if value is not None else None
    except ValueError:
        raise BadInput(f"domain {dom.name()}: metadata {PRIORITY_NS} priority={value!r} "
                       "is not an integer") from None


def select(source: Host, sel: Selection) -> tuple[list[tuple[libvirt.virDomain, Guest]],
                                                  dict[str, str], set[str]]:
    """The source's domains to move, those left (name -> why), and the excluded."""
    assert source.conn is not None
    doms = {d.name(): d for d in source.conn.listAllDomains(0)}
    for flag, names in (("--only", sel.only), ("--exclude", sel.exclude)):
        unknown = sorted(set(names) - set(doms))
        if unknown:
            raise BadInput(f"{flag}: no domain {', '.join(map(repr, unknown))} on {source.uri}")
    unknown = sorted(set(sel.priorities) - set(doms))
    if unknown:
        raise BadInput(f"--priority-file: no domain {', '.join(map(repr, unknown))} on "
                       f"{source.uri}")
    chosen, left, excluded = [], {}, set()
    for name, dom in sorted(doms.items()):
        if name in sel.exclude or (sel.only and name not in sel.only):
            excluded.add(name)
            left[name] = "excluded (--exclude)" if name in sel.exclude else "not in --only"
            continue
        running = bool(dom.isActive())
        if not running and sel.shutoff == "leave":
            left[name] = "shut off (--shutoff-vms leave)"
            continue
        _state, max_kib, _mem, vcpus, _t = dom.info()
        prio = sel.priorities.get(name, priority(dom))
        chosen.append((dom, Guest(name, dom.UUIDString(), int(max_kib), int(vcpus), running,
                                  bool(dom.isPersistent()), prio)))
    return chosen, left, excluded


def read_pair(source: Host, target: Host, checks: Checks) -> F.HostPair | str:
    """What the preflight reads of the two hosts, once per target (its pools
    refreshed, both hosts listed, the migration address probed), or why the
    target refuses every VM."""
    if target.conn is None:
        return f"unreachable: {target.error}"
    assert source.conn is not None
    try:
        return F.read_hosts(source.conn, target.conn,
                            F.Options(migrate_uri=checks.migrate_uris.get(target.uri)))
    except VmshiftError as exc:
        return f"preflight failed: {exc.message}"
    except libvirt.libvirtError as exc:
        return f"preflight failed: {exc.get_error_message()}"


def blockers(source: Host, target: Host, pair: F.HostPair | str, dom: libvirt.virDomain,
             running: bool, checks: Checks) -> list[str]:
    """The migrate preflight's blockers for moving DOM to TARGET (none: it may go)."""
    if isinstance(pair, str):
        return [pair]
    assert source.conn is not None and target.conn is not None
    opts = F.Options(mode="live" if running else "offline",
                     copy_storage=checks.copy_storage if running else None,
                     network_map=checks.network_map,
                     migrate_uri=checks.migrate_uris.get(target.uri), unsafe=checks.unsafe,
                     dest_pool=checks.dest_pool)
    try:
        found = preflight.evaluate(F.gather(source.conn, target.conn, dom, opts, hosts=pair),
                                   force=list(checks.skip))
    except VmshiftError as exc:
        return [f"preflight failed: {exc.message}"]
    except libvirt.libvirtError as exc:
        return [f"preflight failed: {exc.get_error_message()}"]
    return [f"{f.id}: {f.message}" for f in preflight.blockers(found)]


def gather(source: Host, targets: list[Host], sel: Selection, checks: Checks) -> Facts:
    chosen, left, excluded = select(source, sel)
    pairs = {t.uri: read_pair(source, t, checks) for t in targets} if chosen else {}
    guests = []
    for dom, g in chosen:
        blocked = {t.name: why for t in targets
                   if (why := blockers(source, t, pairs[t.uri], dom, g.running, checks))}
        guests.append(Guest(g.name, g.uuid, g.memory_kib, g.vcpus, g.running, g.persistent,
                            g.priority, blocked))
    return Facts(source, targets, guests, [capacity(t) for t in targets], left, excluded)


def close(*hosts: Host) -> None:
    for h in hosts:
        if h.conn is not None:
            try:
                h.conn.close()
            except libvirt.libvirtError:
                pass
