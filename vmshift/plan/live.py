"""Live checks of a plan: what only the hosts can say (skipped by ``--offline``).

Each distinct libvirt URI of the plan (sources and targets) is opened once,
read-only, in parallel; a host that cannot be reached is a problem on every
row that names it. On a reachable host: does the source domain exist, does
the target pool, is a target in maintenance (marked by `evacuate
--mark-maintenance`, keyed by the host's libvirt UUID)? vSphere sources are
not contacted here (that needs a profile's credentials); their rows are
checked offline only. `plan show` asks
the same connection for the sizes of the plan's domains (memory, allocated
disk bytes) for its estimates.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vmshift.errors import OperationFailed
from vmshift.plan.estimate import Size
from vmshift.plan.schema import PlanRow
from vmshift.plan.validate import Plan, Problem

if TYPE_CHECKING:
    import libvirt

MAX_CONNECTIONS = 8


@dataclass
class HostFacts:
    error: str | None = None  # why it could not be reached
    domains: set[str] = field(default_factory=set)
    pools: set[str] = field(default_factory=set)
    sizes: dict[str, Size] = field(default_factory=dict)  # the domains asked for
    maintenance: str | None = None  # since when and why, when in maintenance


def domain_size(dom: libvirt.virDomain) -> Size:
    """Memory and allocated disk bytes of a domain; a figure libvirt will not
    give is None (the estimate then assumes one)."""
    import libvirt

    from vmshift.migrate.xmlmap import disk_paths

    try:
        memory: int | None = dom.info()[2] * 1024  # KiB
    except libvirt.libvirtError:
        memory = None
    try:
        # allocation: what a copy moves (a sparse or thin disk less than its size)
        disk: int | None = sum(dom.blockInfo(target)[1]
                               for target in disk_paths(dom.XMLDesc(0)))
    except libvirt.libvirtError:
        disk = None
    return Size(memory, disk)


def host_facts(uri: str, sized: frozenset[str] = frozenset()) -> HostFacts:
    """The domains and pools of URI (names) and the sizes of the domains SIZED
    names, or why it could not be reached."""
    import libvirt  # only live validation needs it (0.15 s to import)

    from vmshift.libvirtconn import connect

    try:
        conn = connect(uri, readonly=True)
    except OperationFailed as exc:
        return HostFacts(error=exc.message)
    try:
        domains = {d.name(): d for d in conn.listAllDomains()}
        return HostFacts(domains=set(domains),
                         pools={p.name() for p in conn.listAllStoragePools()},
                         sizes={n: domain_size(domains[n]) for n in sized & set(domains)},
                         maintenance=in_maintenance(conn))
    except libvirt.libvirtError as exc:
        return HostFacts(error=f"{uri}: {exc.get_error_message()}")
    finally:
        conn.close()


def in_maintenance(conn: libvirt.virConnect) -> str | None:
    """'since T (reason)' when CONN's host is recorded in maintenance. A host
    without a libvirt host UUID (the test driver) cannot have been marked."""
    from vmshift.migrate.evacuate import maintenance

    try:
        uuid = maintenance.host_uuid(conn)
    except OperationFailed:
        return None
    return maintenance_note(uuid)


def maintenance_note(uuid: str) -> str | None:
    """'since T (reason)' when the host UUID is recorded in maintenance now."""
    from vmshift.migrate.evacuate import maintenance

    entry = maintenance.get(uuid)  # an unreadable state file is an error, never ignored
    return None if entry is None else f"since {entry.since} ({entry.reason})"


def _uris(rows: Iterable[PlanRow]) -> set[str]:
    found = set()
    for row in rows:
        if row.source is not None and row.source.kind == "libvirt":
            found.add(row.source.text)
        if row.target:
            found.add(row.target)
    return found


def gather(plan: Plan, *, sizes: bool = False) -> dict[str, HostFacts]:
    """What each libvirt host of the plan says, one read-only connection each, in
    parallel; with SIZES also the sizes of the plan's domains on their source."""
    uris = sorted(_uris(plan.rows))
    wanted: dict[str, set[str]] = {uri: set() for uri in uris}
    for row in plan.rows if sizes else ():
        if row.source is not None and row.source.kind == "libvirt" and row.vm:
            wanted[row.source.text].add(row.vm)
    if not uris:
        return {}
    with cf.ThreadPoolExecutor(min(MAX_CONNECTIONS, len(uris))) as pool:
        found = pool.map(lambda uri: host_facts(uri, frozenset(wanted[uri])), uris)
        return dict(zip(uris, found, strict=True))


def live_problems(plan: Plan, facts: dict[str, HostFacts] | None = None) -> list[Problem]:
    """Problems only the hosts reveal: unreachable hosts, missing domains and pools.
    FACTS: what ``gather`` found (gathered here when not given)."""
    facts = gather(plan) if facts is None else facts
    out = []
    for row in plan.rows:
        out += _row_problems(row, facts)
    return out


def _row_problems(row: PlanRow, facts: dict[str, HostFacts]) -> list[Problem]:
    out = []
    source = row.source.text if row.source is not None and row.source.kind == "libvirt" \
        else None
    if source is not None:
        host = facts[source]
        if host.error:
            out.append(Problem(row.line, "source", host.error))
        elif row.vm is not None and row.vm not in host.domains:
            out.append(Problem(row.line, "vm", f"no domain {row.vm!r} on {source}"))
    pool_host = row.target or (source if row.type == "storage" else None)
    if row.target and row.target != source:
        target = facts[row.target]
        if target.error:
            out.append(Problem(row.line, "target", target.error))
        elif target.maintenance:
            out.append(Problem(row.line, "target", f"{row.target} is in maintenance "
                               f"{target.maintenance}; nothing is placed on it until "
                               f"`vmshift maintenance clear {row.target}`"))
    if pool_host and row.target_pool and not facts[pool_host].error \
            and row.target_pool not in facts[pool_host].pools:
        out.append(Problem(row.line, "target_pool",
                           f"no pool {row.target_pool!r} on {pool_host}"))
    return out
