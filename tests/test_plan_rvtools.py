"""`vmshift plan import-rvtools`: an RVTools-shaped workbook (built here with openpyxl,
with RVTools 4.x's sheet and column names) becomes a plan that validates, with the
right flags in notes and waves as asked."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import openpyxl
import pytest

from tests.cli_support import vmshift

TARGET = "qemu+ssh://kvm-a.example.com/system"
VC = "vcenter.example.com"

# A subset of RVTools 4.x's columns, in their order; the importer finds columns by name.
VINFO = ["VM", "Powerstate", "Template", "SRM Placeholder", "CPUs", "Memory", "NICs", "Disks",
         "Provisioned MiB", "In Use MiB", "Folder", "Consolidation Needed", "Path",
         "Datacenter", "Cluster", "Host", "OS according to the configuration file",
         "OS according to the VMware Tools", "VM ID", "VM UUID", "VI SDK Server type",
         "VI SDK Server", "VI SDK UUID"]
VDISK = ["VM", "Powerstate", "Template", "Disk", "Disk Key", "Disk Path", "Capacity MiB", "Raw",
         "Disk Mode", "Sharing mode", "Thin", "Controller", "Shared Bus", "Raw LUN ID",
         "Raw Comp. Mode", "Cluster", "Host", "VI SDK Server"]
VNETWORK = ["VM", "Powerstate", "Template", "NIC label", "Adapter", "Network", "Switch",
            "Connected", "Mac Address", "Type", "IPv4 Address", "Cluster", "Host",
            "VI SDK Server"]
VSNAPSHOT = ["VM", "Powerstate", "Name", "Description", "Date / time", "Size MiB (total)",
             "Quiesced", "State", "Cluster", "Host", "VI SDK Server"]

LINUX = "Debian GNU/Linux 12 (64-bit)"
# name: (power, template, cluster, host, folder, OS by the config file, OS by the tools)
VMS = {
    "web01": ("poweredOn", False, "Prod", "esx1", "web", LINUX, LINUX),
    "web02": ("poweredOn", False, "Prod", "esx1", "web", LINUX, LINUX),
    "web03": ("poweredOn", False, "Prod", "esx2", "web", LINUX, ""),
    "old-off": ("poweredOff", False, "Prod", "esx2", "misc", LINUX, ""),
    "gold-tpl": ("poweredOff", True, "Dev", "esx3", "templates", LINUX, ""),
    "sql-rdm": ("poweredOn", False, "Prod", "esx1", "db",
                "Microsoft Windows Server 2019 (64-bit)", "Microsoft Windows Server 2019 (64-bit)"),
    "cluster-node": ("poweredOn", False, "Dev", "esx3", "db", LINUX, LINUX),
    "snappy": ("poweredOn", False, "Dev", "esx3", "misc", LINUX, LINUX),
    "bsd01": ("poweredOn", False, "Dev", "esx4", "misc", "FreeBSD 12 or later versions (64-bit)",
              ""),
    "nt-legacy": ("poweredOn", False, "Dev", "esx4", "misc",
                  "Microsoft Windows Server 2003 Standard (32-bit)", ""),
}
FLAGS = {  # what notes must flag (rule ids, powered off, template), and nothing else
    "web01": set(), "web02": set(), "web03": set(),
    "old-off": {"powered off"}, "gold-tpl": {"template", "powered off"},
    "sql-rdm": {"blocker vsphere.rdm_disk"}, "cluster-node": {"warning vsphere.shared_disk"},
    "snappy": {"warning vsphere.snapshots_present"}, "bsd01": {"blocker vsphere.unsupported_os"},
    "nt-legacy": {"blocker vsphere.unsupported_os"},
}


def _sheet(book: openpyxl.Workbook, title: str, header: list[str], rows: list[dict]) -> None:
    sheet = book.create_sheet(title)
    sheet.append(header)
    for row in rows:
        sheet.append([row.get(c) for c in header])


def _disk(vm: str, n: int, *, raw: bool = False, sharing: str = "sharingNone") -> dict:
    info = VMS[vm]
    return {"VM": vm, "Powerstate": info[0], "Template": info[1], "Disk": f"Hard disk {n}",
            "Disk Key": 2000 + n, "Disk Path": f"[ds1] {vm}/{vm}_{n}.vmdk",
            "Capacity MiB": 20480, "Raw": raw, "Disk Mode": "persistent", "Sharing mode": sharing,
            "Thin": True, "Controller": "SCSI controller 0", "Shared Bus": "noSharing",
            "Raw Comp. Mode": "physicalMode" if raw else None, "Cluster": info[2],
            "Host": info[3], "VI SDK Server": VC}


def build_workbook(path: Path) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    info = [{"VM": name, "Powerstate": p, "Template": t, "SRM Placeholder": False, "CPUs": 2,
             "Memory": 4096, "NICs": 1, "Disks": 1, "Provisioned MiB": 22000,
             "In Use MiB": 9000, "Folder": f, "Consolidation Needed": False,
             "Path": f"[ds1] {name}/{name}.vmx", "Datacenter": "DC1", "Cluster": c, "Host": h,
             "OS according to the configuration file": os_cfg,
             "OS according to the VMware Tools": os_tools, "VI SDK Server type": "VMware vCenter",
             "VI SDK Server": VC} for name, (p, t, c, h, f, os_cfg, os_tools) in VMS.items()]
    _sheet(book, "vInfo", VINFO, info)
    disks = [_disk(vm, 1) for vm in VMS]
    disks += [_disk("sql-rdm", 2, raw=True), _disk("cluster-node", 2, sharing="sharingMultiWriter")]
    _sheet(book, "vDisk", VDISK, disks)
    nets = [{"VM": vm, "Network": "VM Network", "Mac Address": f"00:50:56:00:00:{i:02x}",
             "NIC label": "Network adapter 1", "Adapter": "vmxnet3", "Connected": True}
            for i, vm in enumerate(VMS)]
    nets.append({"VM": "web01", "Network": "DMZ", "Mac Address": "00:50:56:00:01:01"})
    _sheet(book, "vNetwork", VNETWORK, nets)
    _sheet(book, "vSnapshot", VSNAPSHOT, [{"VM": "snappy", "Name": "before-upgrade",
                                          "Powerstate": "poweredOn"}])
    book.save(path)
    return path


@pytest.fixture(scope="module")
def workbook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workbook(tmp_path_factory.mktemp("rvtools") / "RVTools_export_all.xlsx")


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def _flags(notes: str) -> set[str]:
    """The flags in a row's notes, without the group and the networks, and without
    the reasons in parentheses."""
    parts = [p.split(" (")[0] for p in notes.split("; ")[1:]]
    return {p for p in parts if not p.startswith(("networks:", "unmapped networks:"))}


def test_import_writes_a_plan_that_validates_with_the_right_flags(
        workbook: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.csv"
    res = vmshift("plan", "import-rvtools", str(workbook), "--target", TARGET, "--pool", "vms",
                  "--output", str(out))
    assert res.rc == 0, res.err
    assert res.out == f"{out}: 10 VMs in 2 waves, 7 flagged in notes\n"
    rows = _rows(out)
    assert {r["vm"]: _flags(r["notes"]) for r in rows} == FLAGS
    by_vm = {r["vm"]: r for r in rows}
    assert by_vm["web01"]["source"] == f"vsphere://{VC}/web01"
    assert by_vm["web01"]["notes"] == "cluster Prod; networks: DMZ, VM Network"
    assert "(Hard disk 2)" in by_vm["sql-rdm"]["notes"]
    assert "(FreeBSD 12 or later versions (64-bit))" in by_vm["bsd01"]["notes"]
    assert {(r["type"], r["target"], r["target_pool"]) for r in rows} == {("v2v", TARGET, "vms")}
    check = vmshift("plan", "validate", "--offline", str(out))
    assert check.rc == 0 and check.err == "", check.err


@pytest.mark.parametrize("group_by,size,waves", [
    ("cluster", 3, {"1": ["bsd01", "cluster-node", "gold-tpl"], "2": ["nt-legacy", "snappy"],
                    "3": ["old-off", "sql-rdm", "web01"], "4": ["web02", "web03"]}),
    ("host", 2, {"1": ["sql-rdm", "web01"], "2": ["web02"], "3": ["old-off", "web03"],
                 "4": ["cluster-node", "gold-tpl"], "5": ["snappy"], "6": ["bsd01", "nt-legacy"]}),
    ("folder", 10, {"1": ["cluster-node", "sql-rdm"],
                    "2": ["bsd01", "nt-legacy", "old-off", "snappy"],
                    "3": ["gold-tpl"], "4": ["web01", "web02", "web03"]}),
])
def test_waves_respect_size_and_grouping(workbook: Path, tmp_path: Path, group_by: str,
                                         size: int, waves: dict[str, list[str]]) -> None:
    res = vmshift("plan", "import-rvtools", str(workbook), "--target", TARGET, "--pool", "vms",
                  "--group-by", group_by, "--wave-size", str(size))
    assert res.rc == 0, res.err
    out = tmp_path / "p.csv"
    out.write_text(res.out)
    found: dict[str, list[str]] = {}
    for row in _rows(out):
        found.setdefault(row["wave"], []).append(row["vm"])
    assert found == waves


def test_network_map_names_the_unmapped_networks(workbook: Path) -> None:
    res = vmshift("plan", "import-rvtools", str(workbook), "--target", TARGET, "--pool", "vms",
                  "--network-map", "VM Network=default")
    assert res.rc == 0, res.err
    rows = {r["vm"]: r for r in csv.DictReader(io.StringIO(res.out))}
    assert rows["web01"]["network_map"] == "VM Network=default"
    assert rows["web01"]["notes"] == "cluster Prod; unmapped networks: DMZ"
    assert rows["web02"]["notes"] == "cluster Prod"


def test_output_is_never_overwritten_or_half_written(workbook: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.csv"
    out.write_text("keep me\n")
    args = ["plan", "import-rvtools", str(workbook), "--target", TARGET, "--pool", "vms",
            "--output", str(out)]
    res = vmshift(*args)
    assert res.rc == 2 and res.out == ""
    assert res.err == f"vmshift: error: --output {out}: the file exists (--force replaces it)\n"
    assert out.read_text() == "keep me\n"
    bad = vmshift("plan", "import-rvtools", str(tmp_path / "nope.xlsx"), "--target", TARGET,
                  "--pool", "vms", "--output", str(tmp_path / "new.csv"))
    assert bad.rc == 2 and bad.err == f"vmshift: error: {tmp_path / 'nope.xlsx'}: no such file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.csv"]  # no temporary left
    assert vmshift(*args, "--force").rc == 0
    assert out.read_text().startswith("wave,vm,source,type,")


def test_a_workbook_without_rvtools_sheets_is_bad_input(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    book.active.title = "Sheet1"
    path = tmp_path / "other.xlsx"
    book.save(path)
    res = vmshift("plan", "import-rvtools", str(path), "--target", TARGET, "--pool", "vms")
    assert res.rc == 2 and res.out == ""
    assert res.err == f"vmshift: error: {path}: no sheet vInfo (not an RVTools export?)\n"
    text = tmp_path / "plain.xlsx"
    text.write_text("VM,Powerstate\n")
    res = vmshift("plan", "import-rvtools", str(text), "--target", TARGET, "--pool", "vms")
    assert res.rc == 2
    assert res.err.startswith(f"vmshift: error: {text}: not an .xlsx workbook (")


def test_bad_target_and_pool_are_refused_before_reading(workbook: Path) -> None:
    res = vmshift("plan", "import-rvtools", str(workbook), "--target", "kvm-a", "--pool", "vms")
    assert res.rc == 2
    assert res.err == ("vmshift: error: --target: 'kvm-a' is not a libvirt URI "
                       "(e.g. qemu+ssh://HOST/system)\n")
    res = vmshift("plan", "import-rvtools", str(workbook), "--target", TARGET, "--pool", "a/b")
    assert res.rc == 2 and res.err == "vmshift: error: --pool: 'a/b' is not a pool name\n"
