"""The vSphere reader against the real vCenter simulator (govmomi), over verified TLS.

Every CLI call runs `python -m vmshift` as a subprocess, so exit codes, stdout
and stderr are what a user sees, and a password leak would show in them.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lxml import etree
from pyVmomi import vim

from vmshift.convert.vsphere import devices as dv
from vmshift.convert.vsphere.connection import connect, parse_url
from vmshift.convert.vsphere.reader import find_vm, properties, read_vm
from vmshift.model import BusType, ConnectionType, DiskMode, DiskSharing, FirmwareType, RdmMode
from vmshift.testbed import vcsim

VMSHIFT = [sys.executable, "-m", "vmshift", "vsphere"]


def run(vc, *args: str, password: str | None = None, ca: Path | str | None = None,
        extra_env: dict | None = None, check_leak: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "VMSHIFT_VSPHERE_PASSWORD": password or vc.password, **(extra_env or {})}
    tls = ["--ca-file", str(ca or vc.ca_path)] if ca != "none" else []
    result = subprocess.run([*VMSHIFT, *args, "--url", vc.url, "--user", vc.user, *tls],
                            env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            timeout=120)
    if check_leak:
        for secret in {vc.password, password} - {None}:
            assert secret not in result.stdout and secret not in result.stderr
    return result


def one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def session(vcenter):
    s = connect(parse_url(vcenter.url, vcenter.user, str(vcenter.ca_path), False),
                vcenter.password)
    yield s
    s.close()


# --- list --------------------------------------------------------------------

def test_list_json_shows_the_inventory(vcenter):
    result = run(vcenter, "list", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema_version"] and doc["kind"] == "vsphere_inventory"
    vms = {vm["name"]: vm for vm in doc["vms"]}
    assert vms["DC0_H0_VM0"]["power_state"] == "poweredOn"
    assert vms["DC0_H0_VM1"]["power_state"] == "poweredOff"
    assert vms["DC0_H0_VM1"]["guest_id"] == "debian10_64Guest"
    assert vms["DC0_H0_VM1"]["host"] == "DC0_H0"
    assert vms["DC0_C0_RP0_VM1"]["host"] in ("DC0_C0_H0", "DC0_C0_H1")
    disk = vms["DC0_H0_VM1"]["disks"][0]
    assert disk["source"] == "[LocalDS_0] DC0_H0_VM1/disk1.vmdk"
    assert disk["datastore"] == "LocalDS_0" and disk["capacity_bytes"] == 1024 * 1024
    assert vms["DC0_H0_VM1"]["datastores"] == ["LocalDS_0"]
    assert vms["DC0_H0_VM1"]["nics"][0]["mac"].startswith("00:0c:29:")
    assert vms["DC0_H0_VM1"]["nics"][0]["network"] == "DC0_DVPG0"  # the VDS portgroup's name


def test_list_human_table(vcenter):
    result = run(vcenter, "list")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "POWER", "GUEST"]
    assert any(r.startswith("DC0_H0_VM1 ") and "poweredOff" in r and "LocalDS_0" in r
               for r in rows)


# --- reading a VM into the model ---------------------------------------------

def test_efi_vm_read_into_the_model(session):
    vm = read_vm(session, find_vm(session, "DC0_C0_RP0_VM1"))
    assert vm.name == "DC0_C0_RP0_VM1" and vm.source_kind == "vsphere"
    assert len(vm.uuid) == 36 and vm.source_ref.endswith("#DC0/vm/DC0_C0_RP0_VM1")
    assert vm.firmware.type is FirmwareType.EFI
    assert vm.firmware.secure_boot is True and vm.firmware.tpm_present is True
    assert (vm.cpu.vcpus, vm.cpu.sockets, vm.cpu.cores_per_socket) == (4, 2, 2)
    assert vm.memory_mib == 2048
    assert vm.cpu_hotadd is True and vm.memory_hotadd is True
    assert vm.cbt_enabled is True
    assert vm.affinity_rules == ["anti-affinity:keep-apart"]
    assert vm.power_state == "poweredOff" and vm.host in ("DC0_C0_H0", "DC0_C0_H1")
    assert [(p.kind, p.address) for p in vm.passthrough] == [("pci", "0000:3b:00.0")]
    assert [u.model for u in vm.usb_controllers] == ["xhci"]
    assert vm.guest.vmware_guest_id == "windows9Server64Guest"
    assert vm.guest.family == "windows" and vm.guest.arch == "x86_64"
    [disk] = vm.disks
    assert disk.source == "[LocalDS_0] DC0_C0_RP0_VM1/disk1.vmdk"
    assert disk.datastore == "LocalDS_0" and disk.capacity_bytes == 1024 * 1024
    assert disk.controller.bus is BusType.SCSI and disk.controller.model == "pvscsi"
    assert disk.controller.index == 0 and disk.unit == 0
    assert disk.mode is DiskMode.PERSISTENT and disk.backing == "flat"
    assert disk.rdm is None and disk.passthrough is False
    assert disk.snapshot_chain == [disk.source]
    [nic] = vm.nics
    assert nic.model == "e1000" and nic.mac_type == "generated"
    assert nic.connection is ConnectionType.DISTRIBUTED
    assert nic.network == "DC0_DVPG0" and nic.portgroup_key and nic.distributed_switch
    assert vm.snapshots == [] and vm.serials == []


def test_running_vm_snapshot_affinity_and_bios(session):
    vm = read_vm(session, find_vm(session, "DC0_C0_RP0_VM0"))
    assert vm.power_state == "poweredOn"
    assert vm.firmware.type is FirmwareType.BIOS and vm.firmware.secure_boot is False
    assert vm.firmware.tpm_present is False
    assert vm.cpu_affinity == [0, 1]
    assert vm.affinity_rules == ["anti-affinity:keep-apart"]
    [snap] = vm.snapshots
    assert snap.name == "before-upgrade" and snap.current and snap.created
    assert any("snapshot" in note for note in vm.notes)


def test_standalone_vm_serial_annotation_and_no_drs(session):
    vm = read_vm(session, find_vm(session, "DC0_H0_VM1"))
    assert vm.affinity_rules == []  # a standalone host has no DRS: known none
    assert vm.cpu_affinity == [] and vm.snapshots == []
    assert vm.annotation == "web frontend"
    [serial] = vm.serials
    assert (serial.index, serial.kind) == (0, "file")
    assert serial.target == "[LocalDS_0] DC0_H0_VM1/serial0.log"
    assert (vm.cpu.vcpus, vm.memory_mib) == (2, 1024)


def test_static_mac_on_a_standard_network(session, vcenter, vcenter_vm):
    name = vcenter_vm()
    vm = read_vm(session, find_vm(session, name))
    [nic] = vm.nics
    assert (nic.model, nic.mac, nic.mac_type) == ("vmxnet3", "00:50:56:3f:00:01", "static")
    assert nic.connection is ConnectionType.NETWORK and nic.network == "VM Network"


def test_unknown_vm_is_bad_input(vcenter):
    result = run(vcenter, "show", "--vm", "no-such-vm")
    assert result.returncode == 2
    assert "--vm" in one_error_line(result) and "no-such-vm" in result.stderr


def test_devices_the_simulator_cannot_hold():
    """RDM, multi-writer sharing, independent mode and per-disk CBT, on
    constructed pyVmomi device objects: the simulator only stores flat disks."""
    scsi = vim.vm.device.VirtualLsiLogicSASController(key=1000, busNumber=1)
    rdm = vim.vm.device.VirtualDisk(
        key=2001, controllerKey=1000, unitNumber=3, capacityInKB=4096,
        backing=vim.vm.device.VirtualDisk.RawDiskMappingVer1BackingInfo(
            fileName="[san] db/db_1.vmdk", compatibilityMode="physicalMode",
            diskMode="independent_persistent", sharing="sharingMultiWriter"))
    ctrls = dv.controllers([scsi])
    disk = dv.to_disk(rdm, ctrls, {2001: 1}, {"scsi1:3": True}, True)
    assert disk.rdm is RdmMode.PHYSICAL and disk.passthrough is True and disk.backing == "rdm"
    assert disk.sharing is DiskSharing.MULTI_WRITER
    assert disk.mode is DiskMode.INDEPENDENT_PERSISTENT
    assert disk.controller.model == "lsisas1068" and disk.controller.index == 1
    assert disk.cbt_enabled is True and disk.boot_order == 1 and disk.datastore == "san"
    assert dv.to_disk(rdm, ctrls, {}, {"scsi1:3": True}, False).cbt_enabled is False
    sriov = vim.vm.device.VirtualSriovEthernetCard(
        key=4001, macAddress="00:50:56:aa:bb:cc", addressType="manual",
        sriovBacking=vim.vm.device.VirtualSriovEthernetCard.SriovBackingInfo(
            physicalFunctionBacking=vim.vm.device.VirtualPCIPassthrough.DeviceBackingInfo(
                id="0000:5e:00.0")))
    assert dv.to_passthrough(sriov).kind == "sriov"
    assert dv.to_passthrough(sriov).address == "0000:5e:00.0"
    assert dv.to_nic(sriov, {}, {}).model == "sriov"


# --- XML ---------------------------------------------------------------------

def test_xml_from_vsphere_validates_and_keeps_identity(vcenter, session, tmp_path):
    from vmshift.convert.writer import validate

    result = run(vcenter, "xml", "--vm", "DC0_H0_VM1", "--virt-type", "qemu",
                 "--disk-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    validate(result.stdout)
    dom = etree.fromstring(result.stdout.encode())
    model = read_vm(session, find_vm(session, "DC0_H0_VM1"))
    assert dom.get("type") == "qemu"
    assert dom.findtext("name") == "DC0_H0_VM1" and dom.findtext("uuid") == model.uuid
    assert int(dom.findtext("memory")) == 1024 * 1024
    assert int(dom.findtext("vcpu")) == 2
    assert [m.get("address") for m in dom.iter("mac")] == [model.nics[0].mac]
    sources = [s.get("file") for s in dom.findall("./devices/disk[@device='disk']/source")]
    assert sources == [str(tmp_path / "disk1.vmdk")]


def test_xml_defines_on_a_test_bed_host(vcenter, two_hosts, tmp_path):
    import libvirt

    netmap = tmp_path / "networks.map"
    netmap.write_text(f"DC0_DVPG0={two_hosts.network}\n")
    conn = two_hosts.hosta.connect()
    try:
        for name in ("DC0_H0_VM1", "DC0_C0_RP0_VM1"):  # BIOS, and EFI + secure boot + vTPM
            result = run(vcenter, "xml", "--vm", name, "--virt-type", "qemu",
                         "--network-map", str(netmap), "--disk-dir", str(tmp_path))
            assert result.returncode == 0, result.stderr
            xml = etree.fromstring(result.stdout.encode())
            assert xml.find("./devices/interface/source").get("network") == two_hosts.network
            dom = conn.defineXML(result.stdout)
            try:
                assert dom.name() == name and dom.UUIDString() == xml.findtext("uuid")
            finally:
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
    finally:
        conn.close()


# --- TLS and passwords -------------------------------------------------------

def test_wrong_ca_is_a_clear_certificate_error(vcenter, tmp_path):
    other_ca, _ = vcsim.generate_ca(tmp_path / "other")
    result = run(vcenter, "list", ca=other_ca)
    assert result.returncode == 1 and result.stdout == ""
    line = one_error_line(result)
    assert "certificate" in line and "not trusted" in line and "--ca-file" in line


def test_system_trust_store_does_not_trust_the_simulator(vcenter):
    result = run(vcenter, "list", ca="none")
    assert result.returncode == 1 and "certificate" in one_error_line(result)


def test_insecure_connects_and_says_so(vcenter):
    result = run(vcenter, "list", "--insecure", ca="none")
    assert result.returncode == 0, result.stderr
    assert "NOT verified" in result.stderr and "DC0_H0_VM0" in result.stdout


def test_wrong_password_is_one_clean_line_and_never_echoed(vcenter):
    wrong = "Wr0ng-" + vcenter.password[::-1]
    result = run(vcenter, "list", "--json", password=wrong)
    assert result.returncode == 1
    line = one_error_line(result)
    assert "incorrect user name or password" in line and vcenter.user in line
    assert json.loads(result.stdout)["error"]["exit_code"] == 1


def test_verbose_mode_does_not_leak_the_password_either(vcenter):
    env = {**os.environ, "VMSHIFT_VSPHERE_PASSWORD": vcenter.password + "-wrong"}
    result = subprocess.run([sys.executable, "-m", "vmshift", "-v", "vsphere", "list",
                             "--url", vcenter.url, "--user", vcenter.user,
                             "--ca-file", str(vcenter.ca_path)],
                            env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert vcenter.password not in result.stdout + result.stderr


def test_password_file_and_no_password(vcenter, tmp_path):
    secret = tmp_path / "pw"
    secret.write_text(vcenter.password + "\n")
    result = run(vcenter, "list", "--password-file", str(secret),
                 extra_env={"VMSHIFT_VSPHERE_PASSWORD": ""})
    assert result.returncode == 0, result.stderr
    result = run(vcenter, "list", extra_env={"VMSHIFT_VSPHERE_PASSWORD": ""})
    assert result.returncode == 2  # stdin is not a terminal: no prompt, a clear error
    assert "VMSHIFT_VSPHERE_PASSWORD" in one_error_line(result)
    result = run(vcenter, "list", "--password-file", str(tmp_path / "missing"))
    assert result.returncode == 2 and "missing" in one_error_line(result)


def test_prompted_password_is_not_echoed(vcenter):
    """On a real terminal (a pty that is the child's controlling tty) the
    password is prompted for with echo off."""
    import pty

    env = {k: v for k, v in os.environ.items() if k != "VMSHIFT_VSPHERE_PASSWORD"}
    argv = [*VMSHIFT, "list", "--url", vcenter.url, "--user", vcenter.user,
            "--ca-file", str(vcenter.ca_path)]
    pid, master = pty.fork()
    if pid == 0:  # the child: its stdin/stdout/stderr are the pty
        os.execve(argv[0], argv, env)
    output = b""
    try:
        deadline = time.monotonic() + 60
        while b"password:" not in output and time.monotonic() < deadline:
            output += os.read(master, 4096)
        os.write(master, vcenter.password.encode() + b"\n")
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(master)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "vSphere password:" in text and "DC0_H0_VM1" in text
    assert vcenter.password not in text


def test_password_in_url_is_refused_without_echo(vcenter):
    leaky = vcenter.url.replace("https://", f"https://{vcenter.user}:{vcenter.password}@")
    result = subprocess.run([*VMSHIFT, "list", "--url", leaky, "--user", vcenter.user,
                             "--ca-file", str(vcenter.ca_path)],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "password in the URL" in one_error_line(result)
    assert vcenter.password not in result.stdout + result.stderr


# --- download ----------------------------------------------------------------

def _state(session, name):
    """(power state, snapshot info) read in bulk: the simulator drops the
    connection when pyVmomi fetches an unset property one by one."""
    props = properties(session, find_vm(session, name), ["runtime.powerState", "snapshot"])
    return str(props["runtime.powerState"]), props["snapshot"]


def test_powered_on_vm_is_refused_for_a_cold_download(vcenter, vcenter_vm, session, tmp_path):
    name = vcenter_vm(power_on=True)
    dest = tmp_path / "dest"
    result = run(vcenter, "download", "--vm", name, "--disk-dir", str(dest))
    assert result.returncode == 3
    line = one_error_line(result)
    assert "poweredOn" in line and "--power-off" in line and "--snapshot" in line
    assert not dest.exists()
    # Exit 3 with --json: the command's own document, blocked, carrying the finding.
    result = run(vcenter, "download", "--vm", name, "--disk-dir", str(dest), "--json")
    doc = json.loads(result.stdout)
    assert result.returncode == 3 and doc["kind"] == "vsphere_download"
    assert doc["outcome"] == "blocked" and doc["files"] == [] and not dest.exists()
    assert [f["id"] for f in doc["findings"]] == ["vsphere.vm_running"]
    # --dry-run with --snapshot plans, and changes nothing.
    result = run(vcenter, "download", "--vm", name, "--disk-dir", str(dest), "--snapshot",
                 "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["action"] == "snapshot" and not dest.exists()
    assert _state(session, name) == ("poweredOn", None)


def test_snapshot_download_copies_and_removes_the_snapshot(vcenter, vcenter_vm, session,
                                                           tmp_path):
    name = vcenter_vm(power_on=True)
    image = tmp_path / "img.raw"
    image.write_bytes(os.urandom(1024 * 1024))
    vcsim.attach_disk(vcenter, name, image)
    result = run(vcenter, "download", "--vm", name, "--disk-dir", str(tmp_path / "d"),
                 "--snapshot", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["action"] == "snapshot"
    assert (tmp_path / "d" / "uploaded-flat.vmdk").read_bytes() == image.read_bytes()
    power, snapshot = _state(session, name)
    assert power == "poweredOn"
    assert snapshot is None or not snapshot.rootSnapshotList


def test_power_off_needs_tools_or_hard_power_off(vcenter, vcenter_vm, session, tmp_path):
    name = vcenter_vm(power_on=True)
    result = run(vcenter, "download", "--vm", name, "--disk-dir", str(tmp_path), "--power-off")
    # The simulator's fresh VM reports no running VMware Tools: no clean shutdown possible.
    assert result.returncode == 1 and "--hard-power-off" in one_error_line(result)
    result = run(vcenter, "download", "--vm", name, "--disk-dir", str(tmp_path), "--power-off",
                 "--hard-power-off", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["action"] == "power-off"
    assert _state(session, name)[0] == "poweredOff"


def _interrupt_download(vc, name: str, dest: Path, part: Path, size: int) -> int:
    """Start a throttled download and SIGKILL it once a third is on disk."""
    env = {**os.environ, "VMSHIFT_VSPHERE_PASSWORD": vc.password}
    # 2 MiB/s: the copy takes ~4 s, long enough to kill it for real halfway.
    proc = subprocess.Popen([*VMSHIFT, "download", "--vm", name, "--disk-dir", str(dest),
                             "--bandwidth", "2", "--url", vc.url, "--user", vc.user,
                             "--ca-file", str(vc.ca_path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if part.exists() and part.stat().st_size >= size // 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the download ended before it could be interrupted"
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up: a real crash
    finally:
        proc.wait()
    interrupted_at = part.stat().st_size
    assert size // 3 <= interrupted_at < size
    return interrupted_at


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_power_off_shuts_the_guest_down_through_tools(vcenter, vcenter_vm, session, tmp_path):
    name = vcenter_vm(power_on=True, tools=True)
    model = read_vm(session, find_vm(session, name))
    assert model.guest.tools_running is True and model.guest.tools_installed is True
    assert model.guest.hostname == f"{name}.example.test"
    result = run(vcenter, "download", "--vm", name, "--disk-dir", str(tmp_path), "--power-off",
                 "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["action"] == "shutdown"  # clean, not a hard power-off
    assert _state(session, name)[0] == "poweredOff"


def test_interrupted_download_resumes_to_identical_content(vcenter, vcenter_vm, tmp_path):
    size = 8 * 1024 * 1024
    image = tmp_path / "payload.raw"
    image.write_bytes(os.urandom(size))
    name = vcenter_vm()
    vcsim.attach_disk(vcenter, name, image)
    dest = tmp_path / "dest"
    part = dest / "uploaded-flat.vmdk.part"
    interrupted_at = _interrupt_download(vcenter, name, dest, part, size)
    assert not (dest / "uploaded-flat.vmdk").exists()  # never a partial file under the final name

    result = run(vcenter, "download", "--vm", name, "--disk-dir", str(dest), "--json")
    assert result.returncode == 0, result.stderr
    files = {Path(f["path"]).name: f for f in json.loads(result.stdout)["files"]}
    assert files["uploaded-flat.vmdk"]["resumed_from"] == interrupted_at
    assert files["uploaded-flat.vmdk"]["size"] == size
    assert _sha(dest / "uploaded-flat.vmdk") == _sha(image)
    assert not part.exists()
    remote_descriptor = vcenter.datastores["LocalDS_0"] / name / "uploaded.vmdk"
    assert (dest / "uploaded.vmdk").read_bytes() == remote_descriptor.read_bytes()
    # The copy is a usable disk: qemu-img opens the descriptor and finds the data.
    out = subprocess.run(["qemu-img", "compare", "-f", "vmdk", "-F", "raw",
                          str(dest / "uploaded.vmdk"), str(image)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # Run again: everything is complete, nothing is fetched twice.
    again = run(vcenter, "download", "--vm", name, "--disk-dir", str(dest), "--json")
    assert all(f["skipped"] for f in json.loads(again.stdout)["files"])


def _rewrite_on_datastore(vc, name: str, content: bytes) -> None:
    """Change the VM's disk data in place (same size), with a newer mtime."""
    extent = vc.datastores["LocalDS_0"] / name / "uploaded-flat.vmdk"
    before = extent.stat().st_mtime
    extent.write_bytes(content)
    # Last-Modified has a one-second grain: step well past the previous version,
    # even when two rewrites land within the same second.
    later = max(before, extent.stat().st_mtime) + 5
    os.utime(extent, (later, later))


def test_a_source_that_changed_is_fetched_again_not_spliced(vcenter, vcenter_vm, tmp_path):
    size = 8 * 1024 * 1024
    image = tmp_path / "v1.raw"
    image.write_bytes(os.urandom(size))
    name = vcenter_vm()
    vcsim.attach_disk(vcenter, name, image)
    dest = tmp_path / "dest"
    part = dest / "uploaded-flat.vmdk.part"
    _interrupt_download(vcenter, name, dest, part, size)
    second = os.urandom(size)
    _rewrite_on_datastore(vcenter, name, second)
    result = run(vcenter, "download", "--vm", name, "--disk-dir", str(dest), "--json")
    assert result.returncode == 0, result.stderr
    flat = {Path(f["path"]).name: f for f in json.loads(result.stdout)["files"]}
    assert flat["uploaded-flat.vmdk"]["restarted"] is True
    assert flat["uploaded-flat.vmdk"]["resumed_from"] == 0
    assert (dest / "uploaded-flat.vmdk").read_bytes() == second
    # A finished copy is not "complete" any more once the source changes again.
    third = os.urandom(size)
    _rewrite_on_datastore(vcenter, name, third)
    result = run(vcenter, "download", "--vm", name, "--disk-dir", str(dest), "--json")
    flat = {Path(f["path"]).name: f for f in json.loads(result.stdout)["files"]}
    assert flat["uploaded-flat.vmdk"]["skipped"] is False
    assert (dest / "uploaded-flat.vmdk").read_bytes() == third
