"""The vSphere reader: a VM's configuration -> ``vmshift.model.VirtualMachine``.

Reads through pyVmomi exactly what vCenter reports; a fact vCenter does not
give (or that this account may not read) stays ``None``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vmshift.convert.vsphere import devices as dv
from vmshift.convert.vsphere.connection import Session
from vmshift.errors import BadInput
from vmshift.model import (
    CpuTopology,
    Firmware,
    FirmwareType,
    GuestHints,
    Snapshot,
    VirtualMachine,
)

# What `list` needs, in one PropertyCollector round trip for the whole fleet.
LIST_PROPERTIES = ["name", "runtime.powerState", "config.guestFullName", "config.guestId",
                   "config.hardware.device", "runtime.host", "config.template"]


def retrieve(session: Session, obj_type: Any, props: list[str]) -> list[tuple[Any, dict]]:
    """(object, {property: value}) for every object of a type, paged."""
    from pyVmomi import vmodl

    pc = vmodl.query.PropertyCollector
    content = session.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [obj_type], True)
    try:
        spec = pc.FilterSpec(
            objectSet=[pc.ObjectSpec(obj=view, skip=True, selectSet=[pc.TraversalSpec(
                name="view", path="view", skip=False, type=type(view))])],
            propSet=[pc.PropertySpec(type=obj_type, pathSet=props)])
        result = content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
        rows = []
        while result is not None:
            rows += [(o.obj, {p.name: p.val for p in o.propSet}) for o in result.objects]
            token = result.token
            result = (content.propertyCollector.ContinueRetrievePropertiesEx(token)
                      if token else None)
        return rows
    finally:
        view.Destroy()


def properties(session: Session, obj: Any, paths: list[str]) -> dict[str, Any]:
    """Several properties of one object in one round trip; unset ones are None.

    (pyVmomi's attribute access costs a round trip per attribute, and the
    govmomi simulator drops the connection when such a fetch hits an unset
    property; a PropertyCollector retrieval is correct on both.)
    """
    from pyVmomi import vmodl

    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(objectSet=[pc.ObjectSpec(obj=obj, skip=False)],
                         propSet=[pc.PropertySpec(type=type(obj), pathSet=paths)])
    result = session.content.propertyCollector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
    found = {p.name: p.val for o in (result.objects if result else []) for p in o.propSet}
    return {path: found.get(path) for path in paths}


def find_vm(session: Session, name: str) -> Any:
    """The one VM with this name; absent or ambiguous is the caller's bad input."""
    from pyVmomi import vim

    matches = [obj for obj, props in retrieve(session, vim.VirtualMachine, ["name"])
               if props.get("name") == name]
    if not matches:
        raise BadInput(f"--vm: no VM named {name!r} on {session.endpoint.display}")
    if len(matches) > 1:
        paths = ", ".join(inventory_path(session, vm) for vm in matches)
        raise BadInput(f"--vm: {len(matches)} VMs are named {name!r} ({paths})")
    return matches[0]


def inventory_path(session: Session, entity: Any) -> str:
    """DC0/vm/folder/name, the path vCenter's own tools use."""
    root = session.content.rootFolder._moId
    names = []
    while entity is not None and entity._moId != root:
        names.append(entity.name)
        entity = entity.parent
    return "/".join(reversed(names))


def datacenter_of(entity: Any) -> Any:
    from pyVmomi import vim

    while entity is not None and not isinstance(entity, vim.Datacenter):
        entity = entity.parent
    return entity


VM_PROPERTIES = ["config", "runtime", "guest", "snapshot", "layoutEx", "network"]


def read_vm(session: Session, vm: Any) -> VirtualMachine:
    """Every fact the rules and the writer need, from one VM object."""
    props = properties(session, vm, VM_PROPERTIES)
    config, runtime = props["config"], props["runtime"]
    if config is None:
        raise BadInput(f"--vm: {vm!r} has no readable configuration (orphaned "
                       "or inaccessible VM)")
    devices = list(config.hardware.device)
    host = runtime.host
    model = VirtualMachine(
        name=config.name, uuid=config.uuid, source_kind="vsphere",
        source_ref=f"{session.endpoint.display}#{inventory_path(session, vm)}",
        firmware=_firmware(config, devices, props["layoutEx"]),
        cpu=_cpu(config.hardware), memory_mib=config.hardware.memoryMB,
        cpu_hotadd=config.cpuHotAddEnabled, memory_hotadd=config.memoryHotAddEnabled,
        cpu_affinity=list(config.cpuAffinity.affinitySet or []) if config.cpuAffinity else [],
        affinity_rules=_drs_rules(session, vm, host),
        cbt_enabled=config.changeTrackingEnabled,
        consolidation_needed=runtime.consolidationNeeded,
        snapshots=_snapshots(props["snapshot"]),
        guest=_guest(config, props["guest"]),
        power_state=str(runtime.powerState),
        host=properties(session, host, ["name"])["name"] if host is not None else None,
        annotation=config.annotation or None,
    )
    _read_devices(model, devices, config, _portgroup_names(session, props["network"]))
    if model.snapshots:
        model.notes.append(f"{len(model.snapshots)} snapshot(s): disks are delta chains; "
                           "a download copies each chain whole")
    return model


def localise_disks(model: VirtualMachine, directory: Path) -> None:
    """Point the disks at DIR/<file>, where `vsphere download --disk-dir DIR` put them
    (the active descriptor; its parents and extents sit beside it)."""
    for disk in model.disks or []:
        if disk.source and disk.source.startswith("["):
            disk.source = str(directory.resolve() / disk.source.rsplit("/", 1)[-1])


def _firmware(config: Any, devices: list[Any], layout: Any) -> Firmware:
    ftype = FirmwareType.EFI if config.firmware == "efi" else FirmwareType.BIOS
    secure = getattr(config.bootOptions, "efiSecureBootEnabled", None)
    if ftype is FirmwareType.BIOS:
        secure = False
    nvram = None
    if layout is not None and layout.file is not None:
        nvram = any(f.type == "nvram" for f in layout.file)
    return Firmware(type=ftype, secure_boot=secure, nvram_present=nvram,
                    tpm_present=any(dv.kind(d) == "VirtualTPM" for d in devices))


def _cpu(hardware: Any) -> CpuTopology:
    vcpus = hardware.numCPU
    cores = hardware.numCoresPerSocket or 1
    # vSphere shows each vCPU core as one thread unless the VM says otherwise.
    threads = getattr(hardware, "simultaneousThreads", None) or 1
    sockets = vcpus // (cores * threads) if vcpus and vcpus % (cores * threads) == 0 else None
    return CpuTopology(vcpus=vcpus, sockets=sockets, cores_per_socket=cores,
                       threads_per_core=threads)


def _guest(config: Any, guest: Any) -> GuestHints:
    guest_id = config.guestId or None
    family = None
    if guest is not None and guest.guestFamily:
        family = guest.guestFamily.removesuffix("Guest")
    elif guest_id:
        family = ("windows" if guest_id.startswith("win") else
                  "other" if guest_id.startswith("other") else "linux")
    arch = None
    if guest_id:
        arch = "aarch64" if "arm" in guest_id else "x86_64" if "64" in guest_id else "i686"
    tools = getattr(guest, "toolsStatus", None)
    return GuestHints(
        vmware_guest_id=guest_id, family=family,
        name=(guest.guestFullName if guest is not None and guest.guestFullName
              else config.guestFullName) or None,
        hostname=(guest.hostName or None) if guest is not None else None, arch=arch,
        tools_installed=None if tools is None else tools != "toolsNotInstalled",
        tools_running=None if guest is None or guest.toolsRunningStatus is None
        else guest.toolsRunningStatus == "guestToolsRunning")


def _snapshots(info: Any) -> list[Snapshot]:
    if info is None:
        return []
    current = info.currentSnapshot._moId if info.currentSnapshot else None
    found: list[Snapshot] = []

    def walk(trees: list[Any]) -> None:
        for tree in trees or []:
            found.append(Snapshot(
                name=tree.name, id=str(tree.id), description=tree.description or None,
                created=tree.createTime.isoformat() if tree.createTime else None,
                current=tree.snapshot._moId == current))
            walk(tree.childSnapshotList)

    walk(info.rootSnapshotList)
    return found


def _drs_rules(session: Session, vm: Any, host: Any) -> list[str] | None:
    """DRS rules of the VM's cluster that name this VM, as "kind:name"."""
    from pyVmomi import vim

    cluster = properties(session, host, ["parent"])["parent"] if host is not None else None
    if not isinstance(cluster, vim.ClusterComputeResource):
        return []  # a standalone host has no DRS
    try:
        cfg = properties(session, cluster, ["configurationEx"])["configurationEx"]
    except vim.fault.NoPermission:
        return None
    if cfg is None:
        return None
    me = vm._moId
    groups = {g.name: {v._moId for v in (getattr(g, "vm", None) or [])}
              for g in (cfg.group or [])}
    rules = []
    for rule in cfg.rule or []:
        if isinstance(rule, vim.cluster.VmHostRuleInfo):
            if me in groups.get(rule.vmGroupName, set()):
                must = "must" if rule.mandatory else "should"
                rules.append(f"vm-host({must}):{rule.name}")
        elif isinstance(rule, vim.cluster.DependencyRuleInfo):
            if me in groups.get(rule.vmGroup, set()) | groups.get(rule.dependsOnVmGroup, set()):
                rules.append(f"dependency:{rule.name}")
        elif me in {v._moId for v in (getattr(rule, "vm", None) or [])}:
            kind = ("anti-affinity" if isinstance(rule, vim.cluster.AntiAffinityRuleSpec)
                    else "affinity")
            rules.append(f"{kind}:{rule.name}")
    return rules


def _portgroup_names(session: Session, networks: Any) -> dict[str, str]:
    """VDS portgroup key -> name, for the portgroups this VM is on."""
    from pyVmomi import vim

    names = {}
    for net in networks or []:
        if isinstance(net, vim.dvs.DistributedVirtualPortgroup):
            props = properties(session, net, ["key", "name"])
            names[props["key"]] = props["name"]
    return names


def _read_devices(model: VirtualMachine, devices: list[Any], config: Any,
                  portgroups: dict[str, str]) -> None:
    ctrls = dv.controllers(devices)
    boot = dv.boot_orders(config.bootOptions)
    ctk = _ctk_flags(config.extraConfig)
    model.disks, model.cdroms, model.floppies, model.nics = [], [], [], []
    model.serials, model.parallels, model.usb_controllers, model.passthrough = [], [], [], []
    for dev in devices:
        dkind = dv.kind(dev)
        if dkind == "VirtualDisk":
            model.disks.append(dv.to_disk(dev, ctrls, boot, ctk, config.changeTrackingEnabled))
        elif dkind == "VirtualCdrom":
            model.cdroms.append(dv.to_cdrom(dev, ctrls, boot))
        elif dkind == "VirtualFloppy":
            model.floppies.append(dv.to_floppy(dev))
        elif dkind in dv.NIC_MODELS:
            model.nics.append(dv.to_nic(dev, portgroups, boot))
        elif dkind == "VirtualSerialPort":
            model.serials.append(dv.to_char_device(dev, len(model.serials)))
        elif dkind == "VirtualParallelPort":
            model.parallels.append(dv.to_char_device(dev, len(model.parallels)))
        elif dkind == "VirtualMachineVideoCard":
            model.video = dv.to_video(dev)
        elif (usb := dv.to_usb_controller(dev)) is not None:
            model.usb_controllers.append(usb)
        if (pt := dv.to_passthrough(dev)) is not None:
            model.passthrough.append(pt)
    # Disks in the order the guest sees them: by bus, controller, unit.
    model.disks.sort(key=_disk_position)


def _disk_position(disk: Any) -> tuple:
    bus_rank = {"ide": 0, "sata": 1, "scsi": 2, "nvme": 3}
    ctrl = disk.controller
    return (bus_rank.get(ctrl.bus.value, 9) if ctrl else 9,
            ctrl.index if ctrl and ctrl.index is not None else 99,
            disk.unit if disk.unit is not None else 99)


def _ctk_flags(extra: Any) -> dict[str, bool]:
    """scsi0:1.ctkEnabled = TRUE -> {"scsi0:1": True}."""
    flags = {}
    for opt in extra or []:
        key = str(opt.key)
        if key.lower().endswith(".ctkenabled") and ":" in key:
            flags[key.rsplit(".", 1)[0].lower()] = str(opt.value).strip().upper() == "TRUE"
    return flags
