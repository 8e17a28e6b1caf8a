"""`vmshift plan import-rvtools`: a plan CSV from an RVTools export (.xlsx).

The sheet and column names are those of RVTools 4.x (4.6 and 4.7 exports):
vInfo "VM", "Powerstate", "Template", "Host", "Cluster", "Folder", "VI SDK
Server", "OS according to the configuration file", "OS according to the VMware
Tools", "Consolidation Needed"; vDisk "VM", "Disk", "Capacity MiB", "Raw", "Raw
Comp. Mode", "Disk Mode", "Sharing mode", "Disk Path"; vNetwork "VM", "Network",
"Mac Address"; vSnapshot "VM", "Name". Checked against the header list of a
real RVTools export compared column by column in Yoobuu/Kylow,
vmware_rvtools_exporter/out/compare/report.md (27 sheets, vInfo 93 columns),
and Dell's RVTools 4.7.1 documentation of the tabs.

Each VM becomes one v2v row whose source is vsphere://SERVER/VM, SERVER being
``--source-host`` if given, else the vCenter or ESXi host RVTools read it from
("VI SDK Server"), else the ESXi host it runs on ("Host"). What the inspection
rules (vmshift.inspect.rules) say from this inventory alone, RDM and shared
disks, snapshots, an unsupported guest OS, goes into ``notes`` with the rule's
id, as do powered-off VMs and templates.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vmshift.convert.maps import NetworkMap
from vmshift.convert.vmx.paths import DATASTORE_REF
from vmshift.errors import BadInput, bad_input
from vmshift.model import Disk, DiskMode, DiskSharing, GuestHints, RdmMode, Snapshot, VirtualMachine
from vmshift.plan.csvio import format_csv
from vmshift.plan.schema import COLUMNS

GROUP_COLUMNS = {"cluster": "Cluster", "host": "Host", "folder": "Folder"}
REQUIRED = {"vInfo": ("VM", "Powerstate", "Template"), "vDisk": ("VM", "Disk"),
            "vNetwork": ("VM", "Network")}
# Warnings worth a planner's eye besides every blocker: they change how the VM moves.
NOTED_WARNINGS = {"vsphere.shared_disk", "vsphere.snapshots_present",
                  "vsphere.independent_disk", "vsphere.consolidation_needed"}

# RVTools gives the guest OS by its full name ("Microsoft Windows Server 2003
# (32-bit)"), not by guest id: the first pattern found names the id family the
# rule vsphere.unsupported_os judges (its prefixes live in rules.json).
OS_NAME_IDS: list[tuple[str, str]] = [
    (r"windows 3\.1", "win31"), (r"windows 95", "win95"), (r"windows 98", "win98"),
    (r"windows me\b", "winme"), (r"windows nt", "winnt"), (r"windows 2000", "win2000"),
    (r"windows xp", "winxp"), (r"windows server 2003", "winnet"),
    (r"windows vista", "winvista"), (r"windows server 2008 r2", "windows7srv"),
    (r"windows server 2008", "longhorn"), (r"windows", "windows"),
    (r"linux|debian|ubuntu|red hat|centos|suse|fedora|photon|rocky|alma|coreos",
     "genericlinux"),
    (r"freebsd", "freebsd"), (r"solaris", "solaris"), (r"mac ?os", "darwin"),
    (r"netware", "netware"), (r"os/2", "os2"), (r"\bdos\b", "dos"), (r"\bsco\b", "sco"),
    (r"unixware", "unixware"), (r"other", "other"),
]


@dataclass
class InventoryVM:
    line: int  # its row in vInfo, for messages
    name: str
    info: dict[str, Any]
    disks: list[Disk] = field(default_factory=list)
    nics: list[tuple[str, str]] = field(default_factory=list)  # (network, mac)
    snapshots: list[str] | None = None  # None: the export has no vSnapshot sheet

    def get(self, column: str) -> str:
        value = self.info.get(column)
        return "" if value is None else str(value).strip()


@dataclass
class Imported:
    csv: str
    vms: int
    waves: int
    flagged: int
    skipped: list[str]  # notices: VMs left out, and why


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "yes", "1")


def _sheet(book: Any, name: str, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, {column: value}) for each row of sheet NAME with a VM."""
    sheet = book[name]
    rows = sheet.iter_rows(values_only=True)
    header = [str(c).strip() if c is not None else "" for c in next(rows, ())]
    for column in REQUIRED.get(name, ("VM",)):
        if column not in header:
            raise bad_input(path, f"sheet {name}: no column {column!r} (not an RVTools export?)")
    for number, values in enumerate(rows, start=2):
        row = dict(zip(header, values, strict=False))
        if row.get("VM") not in (None, ""):
            yield number, row


def _disk(row: dict[str, Any]) -> Disk:
    path = str(row.get("Disk Path") or "")
    match = DATASTORE_REF.match(path)
    raw = _truthy(row.get("Raw"))
    mode = str(row.get("Raw Comp. Mode") or "").lower()
    disk_mode = str(row.get("Disk Mode") or "").strip()
    sharing = re.sub(r"[^a-z]", "", str(row.get("Sharing mode") or "").lower())
    capacity = row.get("Capacity MiB")
    return Disk(
        source=path or None, label=str(row.get("Disk") or "") or None,
        datastore=match.group("ds") if match else None,
        capacity_bytes=int(float(capacity) * 1024 * 1024) if capacity not in (None, "") else None,
        rdm=(RdmMode.PHYSICAL if "physical" in mode else RdmMode.VIRTUAL) if raw else None,
        passthrough=False,
        mode=DiskMode(disk_mode) if disk_mode in DiskMode._value2member_map_ else None,
        sharing=DiskSharing.MULTI_WRITER if "multiwriter" in sharing else DiskSharing.NONE)


def read_inventory(path: Path) -> tuple[list[InventoryVM], list[str]]:
    """The VMs of an RVTools workbook, with their disks, NICs and snapshots; and
    notices for the VMs left out (a name seen twice cannot be told apart by a
    vsphere://SERVER/VM source, so only its first row is planned)."""
    import openpyxl  # only this command needs it

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except FileNotFoundError:
        raise bad_input(path, "no such file") from None
    except Exception as exc:  # openpyxl raises many kinds for a file that is no xlsx
        raise bad_input(path, f"not an .xlsx workbook ({type(exc).__name__})") from None
    try:
        for name in REQUIRED:
            if name not in book.sheetnames:
                raise bad_input(path, f"no sheet {name} (not an RVTools export?)")
        vms: dict[str, InventoryVM] = {}
        skipped = []
        for number, row in _sheet(book, "vInfo", path):
            name = str(row["VM"]).strip()
            if name in vms:
                skipped.append(f"{path}: vInfo row {number}: VM {name!r} is also on row "
                               f"{vms[name].line}; only that one is planned")
            vms.setdefault(name, InventoryVM(number, name, row))
        for _, row in _sheet(book, "vDisk", path):
            if (vm := vms.get(str(row["VM"]).strip())) is not None:
                vm.disks.append(_disk(row))
        for _, row in _sheet(book, "vNetwork", path):
            if (vm := vms.get(str(row["VM"]).strip())) is not None:
                vm.nics.append((str(row.get("Network") or ""), str(row.get("Mac Address") or "")))
        if "vSnapshot" in book.sheetnames:
            for vm in vms.values():
                vm.snapshots = []
            for _, row in _sheet(book, "vSnapshot", path):
                if (vm := vms.get(str(row["VM"]).strip())) is not None:
                    vm.snapshots = [*(vm.snapshots or []), str(row.get("Name") or "")]
    finally:
        book.close()
    return list(vms.values()), skipped


def guest_id_for(os_name: str) -> str | None:
    lowered = os_name.lower()
    for pattern, guest_id in OS_NAME_IDS:
        if re.search(pattern, lowered):
            return guest_id
    return None


def findings_notes(vm: InventoryVM) -> list[str]:
    """What the inspection rules say from the inventory alone, with the rule ids."""
    from vmshift.inspect.rules import Outcome, evaluate

    os_name = vm.get("OS according to the VMware Tools") or \
        vm.get("OS according to the configuration file")
    consolidation = vm.get("Consolidation Needed")
    model = VirtualMachine(
        name=vm.name, source_kind="vsphere", disks=vm.disks,
        snapshots=None if vm.snapshots is None else [Snapshot(n) for n in vm.snapshots],
        consolidation_needed=_truthy(consolidation) if consolidation else None,
        guest=GuestHints(vmware_guest_id=guest_id_for(os_name), name=os_name or None))
    notes = []
    for finding in evaluate(model, None):
        if finding.outcome != Outcome.FIRED or not (
                finding.category == "blocker" or finding.rule_id in NOTED_WARNINGS):
            continue
        reasons = [os_name] if finding.rule_id == "vsphere.unsupported_os" else finding.details
        notes.append(f"{finding.category} {finding.rule_id} ({', '.join(reasons)})")
    return notes


def _notes(vm: InventoryVM, group: str, netmap: NetworkMap | None) -> tuple[str, bool]:
    """The row's notes, and whether anything in them needs a planner's decision."""
    state = vm.get("Powerstate")
    flags = ["template"] if _truthy(vm.info.get("Template")) else []
    flags += {"poweredOff": ["powered off"], "suspended": ["suspended"]}.get(state, [])
    flags += findings_notes(vm)
    if "/" in vm.name:
        flags.append(f"vm name changed from {vm.name!r} ('/' is not allowed)")
    networks = sorted({n for n, _ in vm.nics if n})
    if netmap is None:
        extra = [f"networks: {', '.join(networks)}"] if networks else []
    else:
        unmapped = sorted({n for n, mac in vm.nics if n and not netmap.lookup(mac, n)})
        extra = [f"unmapped networks: {', '.join(unmapped)}"] if unmapped else []
    return "; ".join([group, *flags, *extra]), bool(flags)


def _server(vm: InventoryVM, source_host: str | None, path: Path) -> str:
    server = source_host or vm.get("VI SDK Server") or vm.get("Host")
    if not server:
        raise bad_input(path, f"vInfo: VM {vm.name!r} has no 'VI SDK Server' and no 'Host' "
                        "(give --source-host)", vm.line)
    return server


def build_plan(path: Path, *, target: str, pool: str, wave_size: int, group_by: str,
               network_map: str | None = None, netmap: NetworkMap | None = None,
               source_host: str | None = None) -> Imported:
    """The plan CSV for the workbook at PATH: VMs grouped by GROUP_BY, sorted by
    group then name, in waves of at most WAVE_SIZE that never mix groups."""
    if wave_size < 1:
        raise BadInput("--wave-size: must be at least 1")
    vms, skipped = read_inventory(path)
    groups: dict[str, list[InventoryVM]] = {}
    for vm in vms:
        groups.setdefault(vm.get(GROUP_COLUMNS[group_by]) or "(none)", []).append(vm)
    rows, wave, flagged = [], 0, 0
    for key in sorted(groups, key=str.lower):
        members = sorted(groups[key], key=lambda v: v.name.lower())
        for start in range(0, len(members), wave_size):
            wave += 1
            for vm in members[start:start + wave_size]:
                notes, needs_eye = _notes(vm, f"{group_by} {key}", netmap)
                flagged += needs_eye
                server = _server(vm, source_host, path)
                cells = {"wave": str(wave), "vm": vm.name.replace("/", "_"),
                         "source": f"vsphere://{server}/{quote(vm.name, safe=' ()[],+=!$*')}",
                         "type": "v2v", "target": target, "target_pool": pool,
                         "network_map": network_map or "", "notes": notes}
                rows.append([cells.get(c, "") for c in COLUMNS])
    return Imported(format_csv(list(COLUMNS), rows), len(rows), wave, flagged, skipped)
