"""Human tables for `vmshift inspect`; the JSON form is the dataclasses as-is."""

from __future__ import annotations

from collections.abc import Iterable

import click

from vmshift.inspect.result import VIRTIO_MODULES, Guest, Inspection, Kernel
from vmshift.inspect.rules import Finding, Outcome, Rule
from vmshift.output import table
from vmshift.units import human

MARK = {Outcome.FIRED: "FIRED", Outcome.PASSED: "ok", Outcome.NOT_EVALUABLE: "n/a"}


def _yn(v: bool | None) -> str:
    return "?" if v is None else ("yes" if v else "no")


def _section(title: str, lines: Iterable[str]) -> list[str]:
    body = list(lines)
    return [title, *("  " + ln for ln in body)] if body else []


def render_inspection(insp: Inspection) -> list[str]:
    out = ["Disks:"]
    out += ["  " + ln for ln in table(
        [[d.device, d.source, d.format, human(d.virtual_size), d.partition_table or "none"]
         for d in insp.disks], ["device", "source", "format", "size", "table"])]
    out += ["", "Filesystems:"]
    out += ["  " + ln for ln in table(
        [[f.device, f.type, f.mountpoint or "-", human(f.size_bytes), human(f.free_bytes)
          if f.free_bytes is not None else "-", f.label or "-"] for f in insp.filesystems],
        ["device", "type", "mounted", "size", "free", "label"])]
    if insp.encrypted:
        out += ["", "Encrypted volumes: " + ", ".join(f"{e.device} ({e.kind})"
                                                       for e in insp.encrypted)]
    for guest in insp.guests:
        out += ["", *render_guest(guest)]
    out += [f"note: {n}" for n in insp.notes]
    return out


def render_guest(g: Guest) -> list[str]:
    title = g.product_name if g.product_name and any(c.isalpha() for c in g.product_name) \
        else f"{g.distro or g.type} {g.version or ''}".strip()
    out = [f"Guest on {g.root}: {title}"]
    facts = [["type", g.type], ["distro", g.distro or "-"], ["version", g.version or "-"],
             ["arch", g.arch or "-"], ["hostname", g.hostname or "-"],
             ["packages", f"{g.package_format or '-'} / {g.package_management or '-'}"],
             ["bootloader", g.bootloader or "-"], ["firmware needed", g.firmware_needed or "-"],
             ["VMware Tools", _yn(g.vmware_tools)]]
    out += ["  " + ln for ln in table(facts)]
    out += _section("  Mountpoints:", (f"  {mp} -> {dev}" for mp, dev in
                                       sorted(g.mountpoints.items())))
    if g.kernels is not None:
        rows = [[k.version, k.initramfs.path if k.initramfs else "(none)",
                 *(_virtio(k, m) for m in VIRTIO_MODULES)] for k in g.kernels]
        out += ["  Kernels:"] + ["    " + ln for ln in table(rows, ["version", "initramfs",
                                                                    *VIRTIO_MODULES])]
    out += _section("  fstab:", (f"  {e.line}: {e.device.spec} {e.mountpoint} {e.fstype} "
                                 f"[{e.device.kind}{_rewrite(e.device.needs_rewrite)}]"
                                 for e in g.fstab or []))
    out += _section("  crypttab:", (f"  {e.line}: {e.name} {e.device.spec} [{e.device.kind}]"
                                    for e in g.crypttab or []))
    out += _section("  Network:", (f"  {n.source}: {n.interface or '?'}"
                                   f"{' mac ' + n.mac if n.mac else ''} {n.method or ''} "
                                   f"({n.file})" for n in g.network or []))
    if g.windows is not None:
        out += _windows(g)
    if g.applications is not None:
        flagged = [a.name for a in g.applications if a.vmware_tools]
        out.append(f"  Applications: {len(g.applications)} installed"
                   + (f"; VMware Tools: {', '.join(flagged)}" if flagged else ""))
    out += [f"  note: {n}" for n in g.notes]
    return out


def _rewrite(needed: bool) -> str:
    return ", NEEDS REWRITE" if needed else ""


def _virtio(k: Kernel, module: str) -> str:
    initrd = k.initramfs
    if module in k.builtin:
        return "builtin"
    if initrd is None:
        return "-"
    if initrd.virtio is None:
        return "?"
    return "yes" if initrd.virtio.get(module) else "NO"


def _windows(g: Guest) -> list[str]:
    w = g.windows
    assert w is not None
    rows = [["system root", w.system_root or "-"], ["version", f"{w.version} build {w.build}"],
            ["edition", w.edition or "-"], ["control set", w.current_control_set or "-"],
            *[[f"service {s.name}", "installed" if s.present else "absent"]
              for s in w.services.values()],
            ["device install blocked", _yn(w.device_install_blocked)],
            ["fast startup", _yn(w.hiberboot_enabled)],
            ["hiberfil.sys", "hibernated" if w.hiberfil_hibernated else _yn(w.hiberfil_present)],
            ["VMware Tools uninstall", w.vmware_tools_uninstall or "-"],
            *[[f"NIC {n.guid}", f"{n.description or '?'}: "
               + ("DHCP" if n.dhcp else " ".join(n.addresses) or "no address")
               + (f" gw {','.join(n.gateways)}" if n.gateways else "")
               + (f" dns {','.join(n.dns + n.dns6)}" if n.dns or n.dns6 else "")]
              for n in w.nics]]
    return ["  Windows:"] + ["    " + ln for ln in table(rows)] + \
        [f"    error: {e}" for e in w.errors]


def render_findings(findings: list[Finding], *, verbose: bool = True) -> list[str]:
    shown = [f for f in findings if verbose or f.outcome != Outcome.PASSED]
    rows = [[MARK[f.outcome], f.category, f.rule_id, "; ".join(f.details) or "-"]
            for f in shown]
    out = ["Pre-flight rules:"] + ["  " + ln for ln in table(rows, ["outcome", "category",
                                                                    "rule", "details"])]
    for f in findings:
        if f.outcome == Outcome.FIRED:
            out.append(f"  {f.rule_id}: {f.message} Remedy: {f.remedy}")
    return out


def render_rules(rules: Iterable[Rule]) -> list[str]:
    return table([[r.id, r.category, r.message] for r in rules], ["rule", "category", "message"])


def echo(lines: Iterable[str]) -> None:
    for line in lines:
        click.echo(line)
