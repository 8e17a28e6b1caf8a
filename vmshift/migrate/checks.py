"""Preflight checks, as data: id, category, severity, message, evaluator.

Each evaluator is a pure function of the gathered facts and yields the
subjects it fires for (a disk, a NIC, a value), with the fields its message
template needs. The severity in the table is the default; an evaluator may
give a different one for a subject (for example info when a check does not
apply). Blockers stop every migration command unless ``--skip-check ID``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import libvirt

from vmshift.migrate.facts import MIGRATION_PORTS, Facts

BLOCKER, WARNING, INFO = "blocker", "warning", "info"
# Beyond this, TLS certificates, lease expiry and guest time jumps go wrong.
CLOCK_SKEW_WARN_S = 2.0
CLOCK_SKEW_BLOCK_S = 60.0
SAFE_CACHE = {None, "none", "directsync"}
# QEMU 9.0 fixed TCG's dirty tracking during migration (commit 03bfc2188f).
TCG_DIRTY_FIXED = 9_000_000

Hit = tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], str]  # (subject, fields[, sev])
Evaluator = Callable[[Facts], Iterator[Hit]]


@dataclass(frozen=True)
class Check:
    id: str
    category: str
    severity: str
    message: str  # str.format template over the evaluator's fields
    evaluate: Evaluator


def _copied(f: Facts, target: str) -> bool:
    """Whether this disk's data travels with the migration."""
    o = f.options
    if o.mode in ("offline", "storage"):
        return o.mode == "offline" and o.dest_pool is not None
    if o.copy_storage is None:
        return False
    return o.copy_disks is None or target in o.copy_disks


def _migrated_disks(f: Facts):
    return [d for d in f.domain.disks if d.path and not (d.device == "cdrom" and d.readonly)]


def storage_not_shared(f: Facts) -> Iterator[Hit]:
    for d in _migrated_disks(f):
        if d.on_dest is False and not _copied(f, d.target) and d.kind in ("file", "volume"):
            yield d.target, {"disk": d.target, "path": d.path}


def block_device_unverified(f: Facts) -> Iterator[Hit]:
    for d in _migrated_disks(f):
        if d.kind == "block" and d.on_dest is False:
            yield d.target, {"disk": d.target, "path": d.path}


def target_volume_exists(f: Facts) -> Iterator[Hit]:
    # copy-storage writes into the destination's volume at the same path;
    # an existing one holds someone's data (or a stale copy).
    for d in _migrated_disks(f):
        if _copied(f, d.target) and f.options.mode == "live" and d.on_dest:
            yield d.target, {"disk": d.target, "path": d.path}


def network_missing(f: Facts) -> Iterator[Hit]:
    for n in f.domain.nics:
        if n.kind not in ("network", "bridge", "direct") or not n.source:
            continue
        # The map rewrites network and bridge NICs only (xmlmap.map_networks).
        mapped = f.options.network_map.lookup(n.mac, n.source) \
            if n.kind in ("network", "bridge") else None
        kind, name = (mapped.kind, mapped.name) if mapped else (
            "network" if n.kind == "network" else "bridge", n.source)
        have = f.dest.networks if kind == "network" else (
            f.dest.bridges | {b for b in f.dest.networks.values() if b})
        if name not in have:
            yield n.mac or name, {"kind": kind, "name": name, "mac": n.mac}


def cpu_incompatible(f: Facts) -> Iterator[Hit]:
    if f.cpu_compare is None:
        yield "cpu", {"detail": f.cpu_note or "not evaluable"}, INFO
    elif f.cpu_compare == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
        yield "cpu", {"detail": "the destination cannot provide the guest's CPU model/features"}


def _ver(v: int) -> str:
    return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"


def version_mismatch(f: Facts) -> Iterator[Hit]:
    for what, a, b in (("libvirt", f.source.lib_version, f.dest.lib_version),
                       ("QEMU", f.source.hv_version, f.dest.hv_version)):
        if b < a:
            yield what, {"what": what, "src": _ver(a), "dst": _ver(b),
                         "how": "older than the source"}
        elif b > a:
            yield what, {"what": what, "src": _ver(a), "dst": _ver(b),
                         "how": "newer (fine: older -> newer)"}, INFO


def tcg_dirty_tracking(f: Facts) -> Iterator[Hit]:
    # Before 9.0, after each dirty-bitmap sync TCG kept cached translations
    # that write without marking the page: those writes never reach the
    # destination (docs/benchmarks.md#migrate). KVM tracks pages in the kernel.
    if f.options.mode == "live" and f.domain.virt_type == "qemu" \
            and f.source.hv_version < TCG_DIRTY_FIXED:
        yield "tcg", {"version": _ver(f.source.hv_version)}


def cache_unsafe(f: Facts) -> Iterator[Hit]:
    if f.options.mode not in ("live", "suspended"):
        return
    for d in _migrated_disks(f):
        if d.cache not in SAFE_CACHE and not d.readonly and not _copied(f, d.target):
            sev = WARNING if f.options.unsafe else BLOCKER
            yield d.target, {"disk": d.target, "cache": d.cache}, sev


def passthrough(f: Facts) -> Iterator[Hit]:
    for h in f.domain.hostdevs:
        yield h, {"device": h}


def memory_short(f: Facts) -> Iterator[Hit]:
    if f.options.mode == "storage":
        return
    need, have = f.domain.memory, f.dest.free_memory
    if need > have:
        sev = BLOCKER if f.options.mode in ("live", "suspended") else WARNING
        yield "memory", {"need": need >> 20, "have": have >> 20}, sev


def ports_unreachable(f: Facts) -> Iterator[Hit]:
    if f.options.mode not in ("live", "suspended"):
        return
    if f.probes.port_reachable is False:
        yield "ports", {"detail": f.probes.port_note, "lo": MIGRATION_PORTS[0],
                        "hi": MIGRATION_PORTS[1]}


def name_unresolved(f: Facts) -> Iterator[Hit]:
    if f.options.mode not in ("live", "suspended"):
        return
    for name, addrs in f.probes.resolves.items():
        loop = [a for a in addrs if a.startswith("127.") or a == "::1"]
        if not addrs:
            yield name, {"name": name, "detail": "does not resolve"}
        elif loop and len(loop) == len(addrs) and f.options.migrate_uri is None:
            yield name, {"name": name, "detail": f"resolves only to loopback {loop[0]}"}


def clock_skew(f: Facts) -> Iterator[Hit]:
    skew = f.probes.clock_skew_s
    if skew is None:
        yield "clock", {"skew": "unknown", "detail": f.probes.clock_note}, INFO
    elif abs(skew) > CLOCK_SKEW_WARN_S:
        sev = BLOCKER if abs(skew) > CLOCK_SKEW_BLOCK_S else WARNING
        yield "clock", {"skew": f"{skew:+.1f} s", "detail": f.probes.clock_note}, sev


def leases(f: Facts) -> Iterator[Hit]:
    if f.domain.leases:
        yield "leases", {"n": f.domain.leases}


def exists_on_dest(f: Facts) -> Iterator[Hit]:
    d = f.domain
    if d.name in f.dest.domain_names:
        yield "name", {"by": f"name {d.name!r}"}
    elif d.uuid in f.dest.domain_uuids:
        yield "uuid", {"by": f"UUID {d.uuid}"}


def transient(f: Facts) -> Iterator[Hit]:
    if not f.domain.persistent:
        yield "persistence", {}


def not_running(f: Facts) -> Iterator[Hit]:
    mode, active = f.options.mode, f.domain.active
    if mode in ("live", "suspended") and not active:
        yield "state", {"state": "shut off", "need": f"running for {mode} migration"}
    elif mode == "offline" and active:
        yield "state", {"state": "running", "need": "shut off for offline migration"}


def state_travels(f: Facts) -> Iterator[Hit]:
    d = f.domain
    copied = "migrate offline copies it to the same path there, verified"
    offline = f.options.mode == "offline"
    if d.nvram:
        # libvirt does not carry the vars file; only vmshift's offline move copies it
        yield "nvram", {"what": f"EFI NVRAM {d.nvram.strip()}",
                        "how": copied if offline else "it must be on storage the destination "
                               "sees, or be copied there first (migrate offline copies it)"}
    if d.tpm:
        yield "tpm", {"what": "emulated TPM state",
                      "how": copied if offline else "libvirt migrates swtpm state with a "
                             "live migration"}


CHECKS: tuple[Check, ...] = (
    Check("storage.not-shared", "storage", BLOCKER,
          "disk {disk} ({path}) is not on the destination at the same path: use shared "
          "storage, --copy-storage all, or an offline move with --dest-pool", storage_not_shared),
    Check("storage.block-device", "storage", WARNING,
          "disk {disk} is an unmanaged block device {path} the destination's pools do not show; "
          "make sure it is visible there", block_device_unverified),
    Check("storage.target-exists", "storage", BLOCKER,
          "disk {disk}: a volume already exists on the destination at {path}; copy-storage "
          "would overwrite it", target_volume_exists),
    Check("storage.cache", "storage", BLOCKER,
          "disk {disk} uses cache={cache}: pages cached on the source would be lost on "
          "switchover; use cache=none (or --unsafe if the storage is coherent)", cache_unsafe),
    Check("network.missing", "network", BLOCKER,
          "{kind} {name!r} (NIC {mac}) does not exist on the destination; create it or "
          "--network-map SRC=DST", network_missing),
    Check("network.ports", "network", BLOCKER,
          "migration ports {lo}-{hi} not reachable: {detail}", ports_unreachable),
    Check("network.resolve", "network", BLOCKER,
          "destination name {name!r} {detail}: QEMU connects by it; pass --migrate-uri "
          "tcp://ADDRESS", name_unresolved),
    Check("cpu.compatible", "cpu", BLOCKER, "CPU: {detail}", cpu_incompatible),
    Check("version.order", "version", WARNING,
          "{what} on the destination is {dst}, source {src}: {how}", version_mismatch),
    Check("version.tcg-dirty-tracking", "version", WARNING,
          "the domain runs under TCG on QEMU {version} (< 9.0): writes right after each "
          "dirty-bitmap sync can go unrecorded, so a long pre-copy or a late post-copy switch "
          "may corrupt the guest's memory; keep the move short (--policy adaptive, or "
          "--postcopy switched early), use KVM, or QEMU 9.0+", tcg_dirty_tracking),
    Check("devices.passthrough", "devices", BLOCKER,
          "{device} is host passthrough (hostdev/SR-IOV/mdev): it cannot move live",
          passthrough),
    Check("resources.memory", "resources", BLOCKER,
          "the destination has {have} MiB free, the domain needs {need} MiB", memory_short),
    Check("host.clock", "host", WARNING, "clock skew between the hosts: {skew} ({detail})",
          clock_skew),
    Check("host.locking", "host", WARNING,
          "the domain holds {n} lease(s): the destination must run the same lock manager "
          "(libvirt does not report it)", leases),
    Check("domain.exists", "domain", BLOCKER,
          "a domain with the same {by} is already defined on the destination", exists_on_dest),
    Check("domain.transient", "domain", INFO,
          "the domain is transient: it stays transient (no definition to move)", transient),
    Check("domain.state", "domain", BLOCKER, "the domain is {state}; it must be {need}",
          not_running),
    Check("domain.state-travels", "domain", WARNING, "{what} must travel with the VM: {how}",
          state_travels),
)

BY_ID = {c.id: c for c in CHECKS}
