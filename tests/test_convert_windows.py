"""`convert vm` on Windows guests, end to end on real NTFS images.

No Windows image exists here: tests/windows_images.py builds NTFS disks with
hivex-made SYSTEM and SOFTWARE hives for Server 2008 R2, 2012 R2, 2019 and
Windows 10, and a fake virtio-win tree (and ISO) in the real layout. Each
guest is converted once (two at a time); the outputs are read back in one
appliance launch, and the hives with hivex on the host. Every assertion
names a piece a real conversion needs; none of them reads the source.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree

from tests.hives import node, values
from tests.inspect_images import sha256
from tests.windows_images import (
    SPECS,
    TOOLS_GUID,
    build_virtio_win,
    build_windows_disks,
)

STORAGE_CLASS = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
VIOSTOR_IDS = ("VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00",
               "VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01")
DRIVERS = {"viostor": "viostor", "vioscsi": "vioscsi", "netkvm": "NetKVM",
           "balloon": "Balloon", "vioser": "vioserial", "viorng": "viorng"}
GUESTS = ("win2008r2", "win2012r2", "win2019", "win10")
# Which virtio-win form each guest gets, and whether a service wrapper is on the "host".
SOURCE = {"win2008r2": "dir", "win2012r2": "dir", "win2019": "iso", "win10": "iso"}
SERVICE_GUESTS = {"win2019", "win2008r2"}


def vmshift(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m vmshift ARGS`; the caller's virtio-win and service wrapper never
    leak in: each test says which it gives (ENV)."""
    plain = {k: v for k, v in os.environ.items() if k not in ("VIRTIO_WIN", "VMSHIFT_SRVANY")}
    return subprocess.run([sys.executable, "-m", "vmshift", *args], capture_output=True,
                          text=True, env={**plain, **(env or {})}, timeout=900)


@dataclass
class Converted:
    name: str
    run: subprocess.CompletedProcess
    doc: dict
    xml: etree._Element
    files: dict[str, bytes]  # guest path (lower case) -> content
    hives: dict[str, object]  # SYSTEM, SOFTWARE, SYSTEM.vmshift-orig: hivex handles


def _convert(name: str, disk: Path, out: Path, virtio: dict[str, Path], wrapper: Path
             ) -> subprocess.CompletedProcess:
    env = {"VMSHIFT_SRVANY": str(wrapper)} if name in SERVICE_GUESTS else \
        {"VMSHIFT_SRVANY": str(out.parent / "no-wrapper.exe")}
    return vmshift("convert", "vm", "--disk", str(disk), "--mac", SPECS[name].mac,
                   "--name", name, "--virtio-win", str(virtio[SOURCE[name]]),
                   "--output", "local", "--output-dir", str(out), "--json", env=env)


WANTED = ["/Windows/System32/drivers/{d}.sys", "/Windows/Drivers/VirtIO/{d}/{d}.inf",
          "/Windows/Drivers/VirtIO/{d}/{d}.sys"]


def _read_back(outputs: dict[str, Path], tmp: Path) -> dict[str, tuple[dict, dict]]:
    """Files and hives of every converted disk, in one read-only appliance launch."""
    import hivex

    from vmshift.host import new_guestfs

    g = new_guestfs()
    result: dict[str, tuple[dict, dict]] = {}
    try:
        for disk in outputs.values():
            g.add_drive_opts(str(disk), format="qcow2", readonly=True)
        g.launch()
        for index, name in enumerate(outputs):
            g.mount_ro(f"/dev/sd{chr(ord('a') + index)}2", "/")
            files = {}
            for path in g.find("/"):
                full = "/" + path
                low = full.lower()
                if g.is_file(full) and (low.startswith(("/programdata/vmshift/",
                                                        "/windows/drivers/",
                                                        "/windows/system32/drivers/",
                                                        "/windows/system32/driverstore/"))):
                    files[low] = bytes(g.read_file(full))
            hives = {}
            for hive in ("SYSTEM", "SOFTWARE", "SYSTEM.vmshift-orig"):
                local = tmp / f"{name}-{hive}"
                g.download(f"/Windows/System32/config/{hive}", str(local))
                hives[hive] = hivex.Hivex(str(local))
            result[name] = (files, hives)
            g.umount_all()
    finally:
        g.close()
    return result


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Converted]:
    work = Path(os.environ.get("VMSHIFT_CACHE", "/var/cache/vmshift")) / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("windows", numbered=True)
    disks = build_windows_disks(root, list(GUESTS))
    virtio = {"dir": build_virtio_win(root / "virtio-win"),
              "iso": build_virtio_win(root / "virtio-win-iso", iso=root / "virtio-win.iso")}
    wrapper = root / "rhsrvany.exe"
    wrapper.write_bytes(b"MZ fake service wrapper\n")
    before = {n: sha256(d) for n, d in disks.items()}
    outs = {n: root / f"out-{n}" for n in GUESTS}
    with ThreadPoolExecutor(2) as pool:  # two appliances at once: one per core
        runs = dict(zip(GUESTS, pool.map(
            lambda n: _convert(n, disks[n], outs[n], virtio, wrapper), GUESTS), strict=True))
    for name, run in runs.items():
        assert run.returncode == 0, (name, run.stderr[-3000:])
    assert {n: sha256(d) for n, d in disks.items()} == before  # the sources: only read
    xmls = {n: etree.parse(str(outs[n] / f"{n}.xml")).getroot() for n in GUESTS}
    back = _read_back({n: Path(xmls[n].xpath("devices/disk/source/@file")[0]) for n in GUESTS},
                      root)
    return {n: Converted(n, runs[n], json.loads(runs[n].stdout), xmls[n], *back[n])
            for n in GUESTS}


def _values(h, path: str) -> dict:
    """The key's values, decoded (their types are the hive reader's to check)."""
    return {name: data for name, (_, data) in values(h, path).items()}


@pytest.mark.parametrize("name", GUESTS)
def test_boot_driver_starts_at_boot_from_system32(converted, name):
    c = converted[name]
    ccs = "ControlSet001"
    assert _values(c.hives["SYSTEM"], f"{ccs}\\Services\\viostor") == {
        "Type": 1, "Start": 0, "Group": "SCSI miniport", "ErrorControl": 1,
        "ImagePath": "system32\\drivers\\viostor.sys"}
    assert node(c.hives["SYSTEM.vmshift-orig"], f"{ccs}\\Services\\viostor") is None
    assert c.files["/windows/system32/drivers/viostor.sys"] == \
        f"fake viostor {SPECS[name].virtio_os} amd64 sys\n".encode()


@pytest.mark.parametrize("name", GUESTS)
def test_boot_driver_is_bound_to_the_virtio_controllers(converted, name):
    h = converted[name].hives["SYSTEM"]
    cdd = "ControlSet001\\Control\\CriticalDeviceDatabase"
    if not SPECS[name].driver_database:  # Windows 7 / 2008 R2
        for pci in VIOSTOR_IDS:
            assert _values(h, f"{cdd}\\PCI#{pci}") == {"Service": "viostor",
                                                       "ClassGUID": STORAGE_CLASS}
        assert node(h, "DriverDatabase") is None
        return
    assert node(h, f"{cdd}\\PCI#{VIOSTOR_IDS[0]}") is None
    label = _values(h, "DriverDatabase\\DriverInfFiles\\viostor.inf")["Active"]
    assert label.startswith("viostor.inf_amd64_")
    package = _values(h, f"DriverDatabase\\DriverPackages\\{label}")
    assert uuid.UUID(STORAGE_CLASS).bytes_le in package["Version"]
    assert _values(h, f"DriverDatabase\\DriverPackages\\{label}\\Configurations\\viostor_inst"
                   ) == {"ConfigFlags": 0, "Service": "viostor"}
    for pci in VIOSTOR_IDS:
        assert _values(h, f"DriverDatabase\\DeviceIds\\PCI\\{pci}") == \
            {"viostor.inf": b"\x01\xff\x00\x00"}
        assert _values(h, f"DriverDatabase\\DriverPackages\\{label}\\Descriptors\\PCI\\{pci}"
                       ) == {"Configuration": "viostor_inst"}
    store = f"/windows/system32/driverstore/filerepository/{label.lower()}/viostor.inf"
    assert converted[name].files[store].startswith(b"fake viostor")


@pytest.mark.parametrize("name", GUESTS)
def test_every_driver_is_staged_for_plug_and_play(converted, name):
    c, os_dir = converted[name], SPECS[name].virtio_os
    for driver, folder in DRIVERS.items():
        if (folder, os_dir) == ("viorng", "2k8R2"):  # not in virtio-win for that release
            assert f"/windows/system32/drivers/{driver}.sys" not in c.files
            continue
        for path in WANTED:
            got = c.files[path.format(d=driver).lower()]
            assert got == f"fake {driver} {os_dir} amd64 {path[-3:]}\n".encode(), path
    device_path = _values(c.hives["SOFTWARE"], "Microsoft\\Windows\\CurrentVersion")["DevicePath"]
    assert device_path.startswith("%SystemRoot%\\inf;")
    assert "%SystemRoot%\\Drivers\\VirtIO\\netkvm" in device_path.split(";")


@pytest.mark.parametrize("name", GUESTS)
def test_first_boot_is_registered_once(converted, name):
    c = converted[name]
    command = 'powershell.exe -NoProfile -NonInteractive -ExecutionPolicy Bypass -File ' \
              '"C:\\ProgramData\\vmshift\\firstboot.ps1"'
    run_once = _values(c.hives["SOFTWARE"], "Microsoft\\Windows\\CurrentVersion\\RunOnce")
    service = node(c.hives["SYSTEM"], "ControlSet001\\Services\\vmshift-firstboot")
    if name in SERVICE_GUESTS:
        assert "vmshift-firstboot" not in run_once
        values = _values(c.hives["SYSTEM"], "ControlSet001\\Services\\vmshift-firstboot")
        assert (values["Start"], values["Type"], values["ImagePath"]) == \
            (2, 0x10, "C:\\ProgramData\\vmshift\\rhsrvany.exe")
        params = _values(c.hives["SYSTEM"],
                         "ControlSet001\\Services\\vmshift-firstboot\\Parameters")
        assert params["CommandLine"] == command
        assert c.files["/programdata/vmshift/rhsrvany.exe"] == b"MZ fake service wrapper\n"
        assert "Run 'sc.exe' 'delete vmshift-firstboot'" in _script(c)
    else:
        assert service is None and run_once["vmshift-firstboot"] == command
        assert any("runs from RunOnce at the first administrator's logon" in note
                   for note in c.doc["guest"]["checked"])


def _script(c: Converted) -> str:
    raw = c.files["/programdata/vmshift/firstboot.ps1"]
    assert raw.startswith(b"\xef\xbb\xbf")  # UTF-8 with BOM: PowerShell 2.0 reads it right
    return raw[3:].decode().replace("\r\n", "\n")


@pytest.mark.parametrize("name", GUESTS)
def test_first_boot_script_restores_the_static_network_by_mac(converted, name):
    spec, c = SPECS[name], converted[name]
    script = _script(c)
    restores = [ln for ln in script.splitlines() if ln.startswith("Restore-Nic ")]
    if spec.nic.dhcp:
        assert restores == [] and c.doc["guest"]["network_restore"][0]["dhcp"] is True
        return
    ips = ",".join(f"'{a}'" for a, _ in spec.nic.addresses)
    masks = ",".join(f"'{m}'" for _, m in spec.nic.addresses)
    dns = ",".join(f"'{d}'" for d in spec.nic.dns)
    dns6 = ",".join(f"'{d}'" for d in spec.nic.dns6)
    assert restores == [f"Restore-Nic '{spec.mac.upper()}' @({ips}) @({masks}) "
                        f"@('{spec.nic.gateway}') @({dns}) @({dns6})"]
    (restore,) = c.doc["guest"]["network_restore"]
    assert (restore["guid"], restore["addresses"], restore["matched_by"]) == \
        (spec.nic_guid, spec.nic.cidrs, "only_nic")


@pytest.mark.parametrize("name", GUESTS)
def test_first_boot_script_installs_drivers_agent_and_removes_tools(converted, name):
    script = _script(converted[name])
    for driver in DRIVERS:
        staged = f"C:\\Windows\\Drivers\\VirtIO\\{driver}\\*.inf"
        if not (driver == "viorng" and name == "win2008r2"):
            assert f"Run 'pnputil.exe' '-i -a \"{staged}\"'" in script
    msi = "C:\\ProgramData\\vmshift\\qemu-ga-x86_64.msi"
    assert f"Run 'msiexec.exe' '/i \"{msi}\" /qn /norestart'" in script
    assert converted[name].files["/programdata/vmshift/qemu-ga-x86_64.msi"] == \
        b"fake guest-agent/qemu-ga-x86_64.msi\n"
    assert f"Run 'msiexec.exe' '/x {TOOLS_GUID} /qn /norestart REBOOT=ReallySuppress'" in script
    assert script.index("pnputil") < script.index("Restore-Nic '") if "Restore-Nic '" in script \
        else True
    assert "C:\\ProgramData\\vmshift\\firstboot.log" in script


@pytest.mark.parametrize("name", GUESTS)
def test_domain_xml_puts_disk_and_nic_on_virtio(converted, name):
    c = converted[name]
    assert c.xml.xpath("devices/disk[@device='disk']/target/@bus") == ["virtio"]
    assert c.xml.xpath("devices/interface/model/@type") == ["virtio"]
    assert c.xml.xpath("devices/interface/mac/@address") == [SPECS[name].mac]
    guest = c.doc["guest"]
    assert (guest["disk_bus"], guest["nic_model"], guest["virtio_win_folder"]) == \
        ("virtio", "virtio", SPECS[name].virtio_os)
    assert c.doc["appliance_launches"] == 1


def test_hives_are_backed_up_once_beside_themselves(converted):
    h = converted["win2019"].hives["SYSTEM.vmshift-orig"]
    assert node(h, "ControlSet001\\Services\\pvscsi") is not None
    assert node(h, "ControlSet001\\Services\\vmshift-firstboot") is None


# --- refusals, --dry-run and the emulated fallback: real inspections of real images ---


@pytest.fixture(scope="module")
def fresh_disks(tmp_path_factory) -> dict[str, Path]:
    """Fast startup on (win10), a hibernated image (win2012r2), and a clean win2019."""
    root = tmp_path_factory.mktemp("windows-fresh")
    return build_windows_disks(root, ["win10", "win2012r2", "win2019"],
                               overrides={"win10": {"hiberboot": True},
                                          "win2012r2": {"hibernated": True}})


def _run(disk: Path, name: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return vmshift("convert", "vm", "--disk", str(disk), "--mac", SPECS[name].mac, "--output",
                   "local", "--output-dir", str(out), "--json", *extra)


def test_fast_startup_and_hibernated_image_refuse_before_any_change(fresh_disks, tmp_path):
    """Both guests in one run: the rules run before the one-guest check, so one
    appliance launch shows each blocker, per root."""
    disks = [fresh_disks["win10"], fresh_disks["win2012r2"]]
    before = [sha256(d) for d in disks]
    run = vmshift("convert", "vm", "--disk", str(disks[0]), "--disk", str(disks[1]),
                  "--output", "local", "--output-dir", str(tmp_path / "out"), "--virtio-win",
                  str(build_virtio_win(tmp_path / "vw")), "--json")
    assert run.returncode == 3, run.stderr[-2000:]
    doc = json.loads(run.stdout)
    assert doc["outcome"] == "blocked" and doc["blockers"] == ["guest.windows_hibernation"]
    [finding] = [f for f in doc["findings"] if f["rule_id"] == "guest.windows_hibernation"]
    details = sorted(finding["details"])
    assert details[0].startswith("/dev/sda2:") and "fast startup" in details[0]
    assert details[1].startswith("/dev/sdb2:") and "hibernated" in details[1]
    assert not (tmp_path / "out").exists() and [sha256(d) for d in disks] == before


def test_dry_run_lists_files_registry_and_first_boot_and_creates_nothing(fresh_disks,
                                                                          tmp_path):
    disk = fresh_disks["win2019"]
    before = sha256(disk)
    run = _run(disk, "win2019", tmp_path / "out", "--dry-run", "--virtio-win",
               str(build_virtio_win(tmp_path / "vw")))
    assert run.returncode == 0, run.stderr[-2000:]
    guest = json.loads(run.stdout)["guest"]
    uploads = {c["path"]: c["source"] for c in guest["changes"] if c["action"] == "upload"}
    assert uploads["/Windows/System32/drivers/viostor.sys"].endswith(
        "viostor/2k19/amd64/viostor.sys")
    keys = {c["key"]: c["values"] for c in guest["changes"] if c["action"] == "registry"}
    assert {"name": "Start", "type": "REG_DWORD", "data": 0} in \
        keys["ControlSet001\\Services\\viostor"]
    assert any(step.startswith("restore 192.168.50.10/24, 192.168.50.11/25 via 192.168.50.1")
               for step in guest["firstboot"])
    assert not (tmp_path / "out").exists() and sha256(disk) == before


def test_no_virtio_drivers_refuse_or_fall_back_to_sata_and_e1000e(fresh_disks, tmp_path):
    disk = fresh_disks["win2019"]
    refused = _run(disk, "win2019", tmp_path / "out")
    assert refused.returncode == 3, refused.stderr[-2000:]
    assert json.loads(refused.stdout)["blockers"] == ["guest.virtio_missing_windows"]
    emulated = _run(disk, "win2019", tmp_path / "out", "--allow-emulated", "--dry-run")
    assert emulated.returncode == 0, emulated.stderr[-2000:]
    doc = json.loads(emulated.stdout)
    xml = etree.fromstring(doc["xml"].encode())
    assert xml.xpath("devices/disk[@device='disk']/target/@bus") == ["sata"]
    assert xml.xpath("devices/interface/model/@type") == ["e1000e"]
    assert any("--allow-emulated" in n for n in doc["guest"]["checked"])
    assert doc["guest"]["drivers_installed"] == [] and not (tmp_path / "out").exists()


def test_virtio_win_without_a_driver_for_this_windows_is_bad_input(fresh_disks, tmp_path):
    tree = tmp_path / "vw"
    (tree / "viostor/2k22/amd64").mkdir(parents=True)  # only a newer release's folder
    (tree / "viostor/2k22/amd64/viostor.sys").write_bytes(b"x")
    run = _run(fresh_disks["win2019"], "win2019", tmp_path / "out", "--virtio-win", str(tree))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "no viostor or vioscsi driver for Windows Server 2019 Standard" in run.stderr
    assert not (tmp_path / "out").exists()
