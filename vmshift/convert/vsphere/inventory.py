"""`vmshift vsphere list`: the whole inventory in a few PropertyCollector calls.

Walking VMs one attribute at a time costs a round trip per attribute per VM;
a fleet of thousands must be read in bulk, so this asks for just the
properties the listing shows.
"""

from __future__ import annotations

from typing import Any

from vmshift.convert.vsphere import devices as dv
from vmshift.convert.vsphere.connection import Session
from vmshift.convert.vsphere.reader import LIST_PROPERTIES, retrieve


def list_vms(session: Session) -> list[dict[str, Any]]:
    from pyVmomi import vim

    hosts = {obj._moId: props.get("name")
             for obj, props in retrieve(session, vim.HostSystem, ["name"])}
    portgroups = {props.get("key"): props.get("name") for _obj, props in
                  retrieve(session, vim.dvs.DistributedVirtualPortgroup, ["key", "name"])}
    rows = []
    for _obj, props in retrieve(session, vim.VirtualMachine, LIST_PROPERTIES):
        devices = list(props.get("config.hardware.device") or [])
        disks = [_disk_row(d) for d in devices if dv.kind(d) == "VirtualDisk"]
        host = props.get("runtime.host")
        rows.append({
            "name": props.get("name"),
            "power_state": str(props.get("runtime.powerState") or "") or None,
            "guest_os": props.get("config.guestFullName") or None,
            "guest_id": props.get("config.guestId") or None,
            "template": bool(props.get("config.template")),
            "host": hosts.get(host._moId) if host is not None else None,
            "datastores": sorted({d["datastore"] for d in disks if d["datastore"]}),
            "disks": disks,
            "nics": [_nic_row(d, portgroups) for d in devices if dv.kind(d) in dv.NIC_MODELS],
        })
    return sorted(rows, key=lambda r: r["name"] or "")


def _disk_row(dev: Any) -> dict[str, Any]:
    source = getattr(dev.backing, "fileName", None)
    capacity = getattr(dev, "capacityInBytes", None) or (dev.capacityInKB or 0) * 1024
    return {"source": source, "datastore": dv.datastore_of(source),
            "capacity_bytes": capacity or None, "label": dv.label(dev)}


def _nic_row(dev: Any, portgroups: dict[str, str]) -> dict[str, Any]:
    backing = dev.backing
    network = getattr(backing, "deviceName", None)
    port = getattr(backing, "port", None)
    if not network and port is not None:  # a VDS port: show its portgroup's name
        network = portgroups.get(port.portgroupKey, port.portgroupKey)
    return {"mac": dev.macAddress, "model": dv.NIC_MODELS.get(dv.kind(dev)),
            "network": network, "label": dv.label(dev)}
