"""The human-readable end of `convert vm`: what changed, where it went, how long each
stage took, and what the booted guest said."""

from __future__ import annotations

from typing import Any

from vmshift.units import human as _size


def render(doc: dict[str, Any]) -> str:
    out = [f"{doc['name']}: {doc['source_kind']} {doc['source']} -> {doc['output']}"
           + (" (dry run: nothing was created)" if doc["dry_run"] else "")]
    guest = doc.get("guest", {})
    out.append(f"guest: {guest.get('distro')} {guest.get('version')} "
               f"({guest.get('firmware')}), hostname {guest.get('hostname')}")
    for f in doc.get("findings", []):
        f = f if isinstance(f, dict) else vars(f)
        out.append(f"finding: [{f['category']}] {f['rule_id']}: {f['message']}")
    verb = "would" if doc["dry_run"] else "did"
    out.append(f"guest changes ({verb}):")
    for c in guest.get("changes", []):
        out.append(f"  {c['area']:<12} {c['action']:<8} {_target(c)}  ({c['why']})")
    for note in guest.get("checked", []):
        out.append(f"  checked: {note}")
    for step in guest.get("firstboot", []):
        out.append(f"  first boot: {step}")
    for d in doc.get("disks", []):
        state = "verified" if d["verified"] else "planned" if doc["dry_run"] else "NOT verified"
        out.append(f"disk: {d['output']} [{doc['format']}, {_size(d['virtual_size'])} "
                   f"virtual, {_size(d['bytes_written'])} written] {state}")
    if doc["dry_run"]:
        out.append(f"space needed: about {_size(doc.get('space_needed'))}")
        out.append(doc.get("xml", ""))
    boot = doc.get("boot")
    if boot:
        out.append(f"boot: login prompt after {boot['seconds_to_login']} s; failed units: "
                   + (", ".join(boot["failed_units"]) or "none"))
        for name, nic in boot["interfaces"].items():
            if name != "lo":
                out.append(f"  {name} {nic.get('mac')} {nic.get('state')} "
                           + " ".join(nic["addresses"]))
    out.append("stage              seconds")
    for s in doc["stages"]:
        out.append(f"{s['stage']:<18} {s['seconds']:>7.1f}")
    out.append(f"{'total':<18} {doc['total_seconds']:>7.1f}   "
               f"(appliance launches: {doc.get('appliance_launches')})")
    return "\n".join(out)


def _target(change: dict[str, Any]) -> str:
    if change.get("argv"):
        return " ".join(change["argv"])
    if change["action"] == "registry":  # HIVE:KEY name=data, ...
        values = ", ".join(f"{v['name']}={v['data']}" for v in change.get("values", []))
        return f"{change['path']}:{change['key']} {values}"
    if change["action"] == "upload":
        return f"{change['path']} (from {change['source']})"
    return str(change["path"])
