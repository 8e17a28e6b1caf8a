"""The Windows test images and the fake virtio-win tree are what they claim to be.

The four guests are built in one appliance launch, the hibernation variants in
a second; every image is then inspected by a real `vmshift inspect --json`
(one launch each). The virtio-win ISO is made by xorriso and read back by it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.hives import (
    REG_BINARY,
    REG_DWORD,
    REG_EXPAND_SZ,
    REG_MULTI_SZ,
    REG_SZ,
    node,
    values,
    write_hive,
)
from tests.windows_images import (
    C_PART_GUID,
    C_START,
    MBR_SIGNATURE,
    NET_CLASS,
    SPECS,
    TOOLS_GUID,
    TOOLS_UNINSTALL,
    VMXNET3_ID,
    WindowsSpec,
    build_virtio_win,
    build_windows_disks,
    virtio_win_files,
    write_windows_tree,
)

pytestmark = pytest.mark.slow
NAMES = list(SPECS)
CS = "ControlSet001"


def inspect_json(*images: Path) -> tuple[int, dict]:
    exe = Path(sys.executable).parent / "vmshift"
    proc = subprocess.run([str(exe), "inspect", "--json", *map(str, images)],
                          capture_output=True, text=True, timeout=900)
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict:
    workdir = tmp_path_factory.mktemp("windows-images")
    start = time.monotonic()
    disks = build_windows_disks(workdir, NAMES)
    print(f"\nbuilt {len(disks)} Windows images in {time.monotonic() - start:.1f} s")
    return {"disks": disks, "workdir": workdir}


@pytest.fixture(scope="module")
def inspected(built: dict) -> dict[str, tuple[int, dict]]:
    with ThreadPoolExecutor(2) as pool:  # two appliances at once: one per core
        return dict(zip(NAMES, pool.map(lambda n: inspect_json(built["disks"][n]), NAMES),
                        strict=True))


def hive(built: dict, name: str, which: str):  # type: ignore[no-untyped-def]
    """The hive file that went into the image (its tree is what was tarred in)."""
    import hivex

    return hivex.Hivex(str(built["workdir"] / f"{name}-tree/Windows/System32/config/{which}"))


# --- write_hive's value types ---


def test_write_hive_encodes_each_type(tmp_path: Path) -> None:
    import hivex

    path = tmp_path / "H"
    write_hive(path, {"A\\B": {"d": 7, "s": "x", "m": ["a", "bc"], "b": b"\x01\x02",
                               "e": ("expand", "%X%")}, "A\\Empty": {}})
    h = hivex.Hivex(str(path))
    raw = {h.value_key(v): h.value_value(v) for v in h.node_values(node(h, "A\\B"))}
    assert raw["d"] == (REG_DWORD, b"\x07\0\0\0")
    assert raw["s"] == (REG_SZ, "x\0".encode("utf-16-le"))
    assert raw["m"] == (REG_MULTI_SZ, "a\0bc\0\0".encode("utf-16-le"))
    assert raw["b"] == (REG_BINARY, b"\x01\x02")
    assert raw["e"] == (REG_EXPAND_SZ, "%X%\0".encode("utf-16-le"))
    empty = node(h, "A\\Empty")
    assert empty is not None and h.node_values(empty) == []


@pytest.mark.parametrize("bad", [True, 1.5, ("other", "x"), None])
def test_write_hive_refuses_unknown_values(tmp_path: Path, bad: object) -> None:
    with pytest.raises(TypeError):
        write_hive(tmp_path / "H", {"A": {"v": bad}})  # type: ignore[dict-item]


# --- The hives in the images ---


@pytest.mark.parametrize("name", NAMES)
def test_software_hive(built: dict, name: str) -> None:
    spec, h = SPECS[name], hive(built, name, "SOFTWARE")
    cv = values(h, "Microsoft\\Windows NT\\CurrentVersion")
    assert cv["ProductName"] == (REG_SZ, spec.product_name)
    assert (cv["CurrentVersion"][1], cv["CurrentBuildNumber"][1], cv["CurrentBuild"][1]) == \
        (spec.current_version, spec.build, spec.build)
    assert (cv["EditionID"][1], cv["InstallationType"][1], cv["SystemRoot"][1]) == \
        (spec.edition_id, spec.installation_type, "C:\\Windows")
    if spec.major_minor:
        assert (cv["CurrentMajorVersionNumber"], cv["CurrentMinorVersionNumber"]) == \
            ((REG_DWORD, 10), (REG_DWORD, 0))
    else:
        assert "CurrentMajorVersionNumber" not in cv
    assert values(h, "Microsoft\\Windows\\CurrentVersion")["DevicePath"] == \
        (REG_EXPAND_SZ, "%SystemRoot%\\inf")
    tools = values(h, f"Microsoft\\Windows\\CurrentVersion\\Uninstall\\{TOOLS_GUID}")
    assert (tools["DisplayName"][1], tools["UninstallString"][1]) == \
        ("VMware Tools", TOOLS_UNINSTALL)
    assert values(h, "Microsoft\\Windows NT\\CurrentVersion\\NetworkCards\\7")["ServiceName"] \
        == (REG_SZ, spec.nic_guid)
    assert values(h, "Microsoft\\Windows\\CurrentVersion\\RunOnce") == {}
    assert values(h, "VMware, Inc.\\VMware Tools")["InstallPath"][1].endswith("VMware Tools\\")


@pytest.mark.parametrize("name", NAMES)
def test_system_hive_boot_and_services(built: dict, name: str) -> None:
    spec, h = SPECS[name], hive(built, name, "SYSTEM")
    assert values(h, "Select") == {"Current": (REG_DWORD, 1), "Default": (REG_DWORD, 1),
                                   "LastKnownGood": (REG_DWORD, 2), "Failed": (REG_DWORD, 0)}
    pvscsi = values(h, f"{CS}\\Services\\pvscsi")
    assert (pvscsi["Start"][1], pvscsi["Type"][1], pvscsi["Group"][1]) == (0, 1, "SCSI miniport")
    assert pvscsi["ImagePath"] == (REG_EXPAND_SZ, "System32\\drivers\\pvscsi.sys")
    assert values(h, f"{CS}\\Services\\VMTools")["Type"] == (REG_DWORD, 16)
    for absent in ("viostor", "vioscsi", "netkvm"):
        assert node(h, f"{CS}\\Services\\{absent}") is None
    assert values(h, f"{CS}\\Control\\ComputerName\\ComputerName")["ComputerName"][1] == \
        spec.hostname
    assert values(h, f"{CS}\\Services\\Tcpip\\Parameters")["Hostname"][1] == spec.hostname
    assert values(h, f"{CS}\\Control\\Session Manager\\Power")["HiberbootEnabled"] == \
        (REG_DWORD, 0)
    assert values(h, "ControlSet002\\Services") == {}
    has_db = node(h, "DriverDatabase\\DeviceIds\\PCI") is not None
    has_cdd = node(h, f"{CS}\\Control\\CriticalDeviceDatabase") is not None
    assert (has_db, has_cdd) == (spec.driver_database, not spec.driver_database)
    assert spec.driver_database == (name != "win2008r2")
    mounted = values(h, "MountedDevices")["\\DosDevices\\C:"]
    assert mounted[0] == REG_BINARY
    assert mounted[1] == (
        MBR_SIGNATURE.to_bytes(4, "little") + (C_START * 512).to_bytes(8, "little")
        if spec.firmware == "bios" else b"DMIO:ID:" + uuid.UUID(C_PART_GUID).bytes_le)


@pytest.mark.parametrize("name", NAMES)
def test_system_hive_network(built: dict, name: str) -> None:
    spec, h = SPECS[name], hive(built, name, "SYSTEM")
    nic = values(h, f"{CS}\\Control\\Class\\{NET_CLASS}\\0007")
    assert (nic["NetCfgInstanceId"][1], nic["ComponentId"][1], nic["Characteristics"][1]) == \
        (spec.nic_guid, VMXNET3_ID, 0x84)
    wan = values(h, f"{CS}\\Control\\Class\\{NET_CLASS}\\0001")
    assert (wan["ComponentId"][1], wan["Characteristics"][1]) == ("ms_ndiswanip", 0x29)
    assert wan["NetCfgInstanceId"][1] != spec.nic_guid
    tcpip = values(h, f"{CS}\\Services\\Tcpip\\Parameters\\Interfaces\\{spec.nic_guid}")
    if spec.nic.dhcp:
        assert tcpip["EnableDHCP"] == (REG_DWORD, 1) and "IPAddress" not in tcpip
        assert tcpip["DhcpIPAddress"] == (REG_SZ, spec.nic.dhcp_lease[0])  # type: ignore[index]
    else:
        assert tcpip["EnableDHCP"] == (REG_DWORD, 0)
        assert tcpip["IPAddress"] == (REG_MULTI_SZ, [a for a, _ in spec.nic.addresses])
        assert tcpip["SubnetMask"] == (REG_MULTI_SZ, [m for _, m in spec.nic.addresses])
        assert tcpip["DefaultGateway"] == (REG_MULTI_SZ, [spec.nic.gateway])
        assert tcpip["NameServer"] == (REG_SZ, ",".join(spec.nic.dns))
    tcpip6 = values(h, f"{CS}\\Services\\Tcpip6\\Parameters\\Interfaces\\{spec.nic_guid}")
    assert tcpip6 == ({"NameServer": (REG_SZ, "2001:db8::53 2001:db8::54")}
                      if name == "win2019" else {})


def test_specs_are_distinct_and_as_documented() -> None:
    assert len({s.mac for s in SPECS.values()}) == len({s.nic_guid for s in SPECS.values()}) == 4
    assert all(s.nic_guid == s.nic_guid.upper() and s.nic_guid[0] + s.nic_guid[-1] == "{}"
               for s in SPECS.values())
    assert [n for n, s in SPECS.items() if s.nic.dhcp] == ["win2008r2"]
    assert SPECS["win2019"].nic.cidrs == ["192.168.50.10/24", "192.168.50.11/25"]


# --- The file tree ---


def test_tree_files(built: dict) -> None:
    tree = built["workdir"] / "win2019-tree"
    assert (tree / "Windows/System32/cmd.exe").read_bytes()[:2] == b"MZ"
    for rel in ("Windows/System32/drivers/pvscsi.sys", "Windows/System32/drivers/vmxnet3n61x64.sys",
                "Program Files/VMware/VMware Tools/vmtoolsd.exe"):
        assert (tree / rel).is_file(), rel
    for rel in ("Windows/System32/DriverStore/FileRepository", "Windows/inf", "ProgramData",
                "Users"):
        assert (tree / rel).is_dir(), rel
    assert not (tree / "hiberfil.sys").exists()


def test_hibernated_tree_has_a_resume_image(tmp_path: Path) -> None:
    write_windows_tree(tmp_path, SPECS["win10"], hibernated=True, hiberboot=True)
    data = (tmp_path / "hiberfil.sys").read_bytes()
    assert data[:4] == b"hibr" and len(data) == 64 * 1024


# --- What inspection makes of the images ---


@pytest.mark.parametrize("name", NAMES)
def test_inspect_reports_the_spec(inspected: dict, name: str) -> None:
    spec: WindowsSpec = SPECS[name]
    rc, doc = inspected[name]
    [g] = doc["inspection"]["guests"]
    assert (g["type"], g["product_name"], (g["major"], g["minor"]), g["arch"], g["hostname"]) == \
        ("windows", spec.product_name, spec.version, "x86_64", spec.hostname)
    assert (g["root"], g["firmware_needed"], g["bootloader"]) == \
        ("/dev/sda2", spec.firmware, "windows-bootmgr")
    w = g["windows"]
    assert (w["version"], w["build"], w["edition"], w["installation_type"]) == \
        ("{}.{}".format(*spec.version), spec.build, spec.edition_id, spec.installation_type)
    assert (w["system_root"], w["current_control_set"]) == ("C:\\Windows", CS)
    assert not any(s["present"] for s in w["services"].values())
    assert g["vmware_tools"] is True
    findings = {f["rule_id"]: f["outcome"] for f in doc["findings"]}
    assert findings["guest.windows_hibernation"] == "passed"
    assert findings["guest.free_space"] == "passed"
    # No virtio driver in the guest and no driver source given: that blocker, exit 3.
    assert (rc, doc["blockers"]) == (3, ["guest.virtio_missing_windows"])


# --- virtio-win ---


@pytest.fixture(scope="module")
def virtio_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("virtio-win")
    return build_virtio_win(workdir / "tree", iso=workdir / "virtio-win.iso")


def xorriso(*args: str) -> str:
    return subprocess.run(["xorriso", *args], capture_output=True, text=True,
                          check=True).stdout


def test_virtio_win_layout() -> None:
    files = virtio_win_files()
    for present in ("viostor/2k8R2/amd64/viostor.sys", "vioscsi/2k19/amd64/vioscsi.inf",
                    "NetKVM/w10/x86/netkvm.cat", "vioserial/w11/amd64/vioser.sys",
                    "Balloon/2k22/amd64/balloon.sys", "pvpanic/w10/amd64/pvpanic.sys",
                    "guest-agent/qemu-ga-x86_64.msi", "virtio-win-gt-x64.msi"):
        assert present in files, present
    for absent in ("viorng/2k8R2", "pvpanic/w11", "viostor/2k19/x86", "viostor/2k8R2/x86"):
        assert not any(f.startswith(absent + "/") for f in files), absent
    assert files["viostor/2k19/amd64/viostor.sys"] == b"fake viostor 2k19 amd64 sys\n"
    assert len(set(files.values())) == len(files)  # each file tells where it came from


def test_virtio_win_iso_lists_and_holds_the_tree(virtio_iso: Path, tmp_path: Path) -> None:
    listed = {line.strip("'")[1:] for line in
              xorriso("-indev", str(virtio_iso), "-find", "/", "-type", "f").splitlines()}
    assert listed == set(virtio_win_files())
    assert "Volume Id    : virtio-win" in xorriso("-indev", str(virtio_iso), "-pvd_info")
    out = tmp_path / "out"
    xorriso("-osirrox", "on", "-indev", str(virtio_iso), "-extract", "/", str(out))
    for rel, data in virtio_win_files().items():
        assert (out / rel).read_bytes() == data, rel


def test_virtio_win_without_iso_returns_the_tree(tmp_path: Path) -> None:
    assert build_virtio_win(tmp_path / "t") == tmp_path / "t"
    assert (tmp_path / "t/NetKVM/2k12R2/amd64/netkvm.sys").read_bytes() == \
        b"fake netkvm 2k12R2 amd64 sys\n"
