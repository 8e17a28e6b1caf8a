"""Windows guest images and a virtio-win tree for the conversion tests (a helper
module, not tests).

No Windows image exists here, so these are what a conversion really touches:
NTFS disks holding the SYSTEM and SOFTWARE hives (built with hivex) as VMware
guests of four Windows versions have them, and a fake virtio-win tree laid
out as on virtio-win.iso 0.1.2xx, whose files say which folder they came from.
"""

from __future__ import annotations

import ipaddress
import struct
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from tests.hives import HiveValue, pe32plus, write_hive
from tests.inspect_images import _tar

NET_CLASS = "{4D36E972-E325-11CE-BFC1-08002BE10318}"
VMXNET3_ID = "pci\\ven_15ad&dev_07b0"
WAN_GUID = "{5E2A6C1B-9F3D-4A7E-B8C0-2D4F6A8B0C1E}"
TOOLS_GUID = "{4C5B9D5E-7A0E-4E0B-8F0B-1C2D3E4F5A6B}"
TOOLS_UNINSTALL = f"MsiExec.exe /X{TOOLS_GUID}"
TOOLS_DIR = "C:\\Program Files\\VMware\\VMware Tools\\"
ESP_TYPE, BASIC_DATA_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", \
    "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
DISK_BYTES = 300 * 2**20
C_START = 206848  # C: is partition 2 on every disk, from this sector to the end
MBR_SIGNATURE = 0x1B2C3D4E  # the disk signature (BIOS disks)
C_PART_GUID = "6F1C2A3B-4D5E-4F60-8172-93A4B5C6D7E8"  # C:'s unique partition GUID (GPT disks)
KeyMap = dict[str, dict[str, HiveValue]]


@dataclass(frozen=True)
class NicConfig:
    """The TCP/IP settings of the guest's one vmxnet3 NIC."""

    dhcp: bool
    addresses: tuple[tuple[str, str], ...] = ()  # static (address, mask)
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    dns6: tuple[str, ...] = ()  # Tcpip6 NameServer
    dhcp_lease: tuple[str, str] | None = None  # what DHCP last gave: never to be made static

    @property
    def cidrs(self) -> list[str]:
        """The static addresses as "192.168.50.10/24"."""
        return [str(ipaddress.IPv4Interface(f"{a}/{m}")) for a, m in self.addresses]


@dataclass(frozen=True)
class WindowsSpec:
    name: str
    product_name: str
    current_version: str  # the CurrentVersion value: 6.3 on 8.1 and every 10.0 build
    major_minor: tuple[int, int] | None  # CurrentMajor/MinorVersionNumber (10.0 only)
    build: str
    installation_type: str  # Server, Client
    edition_id: str
    product_id: str
    hostname: str
    mac: str  # the NIC's MAC in the VM definition (Windows keeps no burnt-in MAC in the registry)
    nic_guid: str  # NetCfgInstanceId: the Tcpip\Parameters\Interfaces\{GUID} key
    connection: str  # the NIC's name in Network Connections (netsh's interface name)
    nic: NicConfig
    firmware: str  # "bios" (MBR, System Reserved + C:) or "uefi" (GPT, ESP + C:)
    virtio_os: str  # the virtio-win OS folder whose drivers fit this guest
    arch: str = "x86_64"
    system_root: str = "C:\\Windows"

    @property
    def version(self) -> tuple[int, int]:
        """(major, minor) as inspection reports it: 10.0 from the DWORDs, else CurrentVersion."""
        if self.major_minor:
            return self.major_minor
        major, minor = self.current_version.split(".")
        return int(major), int(minor)

    @property
    def driver_database(self) -> bool:
        """Windows 8 / 2012 and later: SYSTEM\\DriverDatabase, else CriticalDeviceDatabase."""
        return self.version >= (6, 2)


SPECS: dict[str, WindowsSpec] = {s.name: s for s in (
    WindowsSpec("win2008r2", "Windows Server 2008 R2 Standard", "6.1", None, "7601", "Server",
                "ServerStandard", "00477-179-0000007-84050", "WIN2008R2-DB", "00:50:56:aa:bb:01",
                "{0A1B2C3D-1001-4E5F-8A9B-0C1D2E3F4A01}", "Local Area Connection",
                NicConfig(dhcp=True, dhcp_lease=("192.168.60.20", "255.255.255.0")),
                "bios", "2k8R2"),
    WindowsSpec("win2012r2", "Windows Server 2012 R2 Standard", "6.3", None, "9600", "Server",
                "ServerStandard", "00252-70000-00000-AA535", "WIN2012R2-FS", "00:50:56:aa:bb:02",
                "{0A1B2C3D-1002-4E5F-8A9B-0C1D2E3F4A02}", "Ethernet0",
                NicConfig(dhcp=False, addresses=(("192.168.40.10", "255.255.255.0"),),
                          gateway="192.168.40.1", dns=("192.168.40.2", "192.168.40.3")),
                "uefi", "2k12R2"),
    WindowsSpec("win2019", "Windows Server 2019 Standard", "6.3", (10, 0), "17763", "Server",
                "ServerStandard", "00429-70000-00000-AA720", "WIN2019-APP", "00:50:56:aa:bb:03",
                "{0A1B2C3D-1003-4E5F-8A9B-0C1D2E3F4A03}", "Ethernet0",
                NicConfig(dhcp=False, addresses=(("192.168.50.10", "255.255.255.0"),
                                                 ("192.168.50.11", "255.255.255.128")),
                          gateway="192.168.50.1", dns=("192.168.50.2", "192.168.50.3"),
                          dns6=("2001:db8::53", "2001:db8::54")),
                "uefi", "2k19"),
    WindowsSpec("win10", "Windows 10 Pro", "6.3", (10, 0), "19045", "Client", "Professional",
                "00330-80000-00000-AA117", "DESKTOP-HR7", "00:50:56:aa:bb:04",
                "{0A1B2C3D-1004-4E5F-8A9B-0C1D2E3F4A04}", "Ethernet0",
                NicConfig(dhcp=False, addresses=(("192.168.70.25", "255.255.255.0"),),
                          gateway="192.168.70.1", dns=("192.168.70.2", "192.168.70.3")),
                "uefi", "w10"),
)}


# --- The hives ---


def software_keys(spec: WindowsSpec) -> KeyMap:
    cv: dict[str, HiveValue] = {
        "ProductName": spec.product_name, "CurrentVersion": spec.current_version,
        "CurrentBuildNumber": spec.build, "CurrentBuild": spec.build,
        "EditionID": spec.edition_id, "InstallationType": spec.installation_type,
        "SystemRoot": spec.system_root, "ProductId": spec.product_id}
    if spec.major_minor:
        cv["CurrentMajorVersionNumber"], cv["CurrentMinorVersionNumber"] = spec.major_minor
    return {
        "Microsoft\\Windows NT\\CurrentVersion": cv,
        "Microsoft\\Windows NT\\CurrentVersion\\NetworkCards\\7": {
            "ServiceName": spec.nic_guid, "Description": "vmxnet3 Ethernet Adapter"},
        "Microsoft\\Windows\\CurrentVersion": {
            "DevicePath": ("expand", "%SystemRoot%\\inf"),
            "ProgramFilesDir": "C:\\Program Files"},
        "Microsoft\\Windows\\CurrentVersion\\RunOnce": {},
        f"Microsoft\\Windows\\CurrentVersion\\Uninstall\\{TOOLS_GUID}": {
            "DisplayName": "VMware Tools", "DisplayVersion": "12.1.5.20735119",
            "Publisher": "VMware, Inc.", "UninstallString": TOOLS_UNINSTALL},
        "VMware, Inc.\\VMware Tools": {"InstallPath": TOOLS_DIR},
    }


def _ipv4_interface(nic: NicConfig) -> dict[str, HiveValue]:
    if nic.dhcp:
        address, mask = nic.dhcp_lease or ("", "")
        return {"EnableDHCP": 1, "DhcpIPAddress": address, "DhcpSubnetMask": mask,
                "DhcpServer": "192.168.60.1", "DhcpDefaultGateway": ["192.168.60.1"],
                "DhcpNameServer": "192.168.60.1", "NameServer": ""}
    return {"EnableDHCP": 0, "IPAddress": [a for a, _ in nic.addresses],
            "SubnetMask": [m for _, m in nic.addresses],
            "DefaultGateway": [nic.gateway] if nic.gateway else [],
            "DefaultGatewayMetric": ["0"] if nic.gateway else [],
            "NameServer": ",".join(nic.dns)}  # Windows stores it comma-separated


def _mounted_device(spec: WindowsSpec) -> bytes:
    """C:'s MountedDevices entry: MBR disk signature and byte offset, or GPT partition GUID."""
    if spec.firmware == "bios":
        return struct.pack("<IQ", MBR_SIGNATURE, C_START * 512)
    return b"DMIO:ID:" + uuid.UUID(C_PART_GUID).bytes_le


def system_keys(spec: WindowsSpec, *, hiberboot: bool = False) -> KeyMap:
    cs, guid = "ControlSet001", spec.nic_guid
    keys: KeyMap = {
        "Select": {"Current": 1, "Default": 1, "LastKnownGood": 2, "Failed": 0},
        f"{cs}\\Services\\pvscsi": {
            "Start": 0, "Type": 1, "ErrorControl": 1, "Group": "SCSI miniport",
            "ImagePath": ("expand", "System32\\drivers\\pvscsi.sys")},
        f"{cs}\\Services\\vmxnet3ndis6": {
            "Start": 3, "Type": 1, "ErrorControl": 1,
            "ImagePath": ("expand", "System32\\drivers\\vmxnet3n61x64.sys")},
        f"{cs}\\Services\\VMTools": {
            "Start": 2, "Type": 16, "ErrorControl": 1, "DisplayName": "VMware Tools",
            "ImagePath": f"\"{TOOLS_DIR}vmtoolsd.exe\""},
        f"{cs}\\Services\\Tcpip\\Parameters": {
            "Hostname": spec.hostname, "NV Hostname": spec.hostname, "Domain": ""},
        f"{cs}\\Services\\Tcpip\\Parameters\\Interfaces\\{guid}": _ipv4_interface(spec.nic),
        f"{cs}\\Services\\Tcpip6\\Parameters\\Interfaces\\{guid}":
            {"NameServer": " ".join(spec.nic.dns6)} if spec.nic.dns6 else {},
        f"{cs}\\Control\\Class\\{NET_CLASS}\\0001": {
            "DriverDesc": "WAN Miniport (IP)", "ComponentId": "ms_ndiswanip",
            "MatchingDeviceId": "ms_ndiswanip", "NetCfgInstanceId": WAN_GUID,
            "Characteristics": 0x29},
        f"{cs}\\Control\\Class\\{NET_CLASS}\\0007": {
            "DriverDesc": "vmxnet3 Ethernet Adapter", "ComponentId": VMXNET3_ID,
            "MatchingDeviceId": VMXNET3_ID, "NetCfgInstanceId": guid, "Characteristics": 0x84},
        f"{cs}\\Control\\Network\\{NET_CLASS}\\{guid}\\Connection": {
            "Name": spec.connection,
            "PnpInstanceID": "PCI\\VEN_15AD&DEV_07B0&SUBSYS_07B015AD&REV_01\\FF565000"
                             + spec.mac.replace(":", "")[6:].upper() + "00"},
        f"{cs}\\Control\\Session Manager\\Power": {"HiberbootEnabled": int(hiberboot)},
        f"{cs}\\Control\\ComputerName\\ComputerName": {"ComputerName": spec.hostname},
        "ControlSet002\\Services": {},
        "MountedDevices": {"\\DosDevices\\C:": _mounted_device(spec)},
    }
    if spec.driver_database:
        for sub in ("DriverInfFiles", "DeviceIds\\PCI", "DriverPackages"):
            keys[f"DriverDatabase\\{sub}"] = {}
    else:
        keys[f"{cs}\\Control\\CriticalDeviceDatabase"] = {}
    return keys


# --- The file tree and the disks ---


def write_windows_tree(root: Path, spec: WindowsSpec, *, hiberboot: bool = False,
                       hibernated: bool = False) -> None:
    system32 = root / "Windows/System32"
    for sub in ("config", "drivers", "DriverStore/FileRepository"):
        (system32 / sub).mkdir(parents=True, exist_ok=True)
    (system32 / "cmd.exe").write_bytes(pe32plus())
    for driver in ("pvscsi.sys", "vmxnet3n61x64.sys"):
        (system32 / "drivers" / driver).write_bytes(b"MZ placeholder " + driver.encode())
    write_hive(system32 / "config/SOFTWARE", software_keys(spec))
    write_hive(system32 / "config/SYSTEM", system_keys(spec, hiberboot=hiberboot))
    (root / "Windows/inf").mkdir()
    tools = root / "Program Files/VMware/VMware Tools"
    tools.mkdir(parents=True)
    (tools / "vmtoolsd.exe").write_bytes(b"MZ placeholder vmtoolsd")
    (root / "ProgramData").mkdir()
    (root / "Users").mkdir()
    if hibernated:
        # A resumable hibernation image begins with "hibr".
        (root / "hiberfil.sys").write_bytes(b"hibr" + b"\0" * (64 * 1024 - 4))


def build_windows_disks(workdir: Path, names: list[str], *, hiberboot: bool = False,
                        hibernated: bool = False,
                        overrides: dict[str, dict[str, bool]] | None = None) -> dict[str, Path]:
    """One 300 MiB qcow2 per name in SPECS (workdir/NAME.qcow2), in one appliance launch.

    ``overrides`` sets hiberboot/hibernated per name, e.g. {"win10": {"hiberboot": True}}.
    C: is partition 2 on every disk.
    """
    from vmshift.host import new_guestfs

    disks = {n: workdir / f"{n}.qcow2" for n in names}
    for name in names:
        flags = {"hiberboot": hiberboot, "hibernated": hibernated,
                 **(overrides or {}).get(name, {})}
        tree = workdir / f"{name}-tree"
        tree.mkdir()
        write_windows_tree(tree, SPECS[name], **flags)
        _tar(tree, workdir / f"{name}.tar")
        _partitioned_qcow2(disks[name], SPECS[name].firmware)
    g = new_guestfs()
    try:
        for name in names:
            g.add_drive_opts(str(disks[name]), format="qcow2")
        g.launch()
        for index, name in enumerate(names):
            _windows_filesystems(g, f"/dev/sd{chr(ord('a') + index)}", SPECS[name],
                                 workdir / f"{name}.tar")
        g.shutdown()
    finally:
        g.close()
    return disks


def _partitioned_qcow2(path: Path, firmware: str) -> None:
    """The partitions Windows setup makes: BIOS gets a System Reserved NTFS partition
    (active) before C:, UEFI an ESP before C:. Written by the host's sfdisk, because
    each parted call in the appliance costs a second under TCG."""
    if firmware == "bios":
        table = (f"label: dos\nlabel-id: {MBR_SIGNATURE:#x}\n"
                 f"start=2048, size=204800, type=7, bootable\nstart={C_START}, type=7\n")
    else:
        table = (f"label: gpt\nstart=2048, size=204800, type={ESP_TYPE}\n"
                 f"start={C_START}, type={BASIC_DATA_TYPE}, uuid={C_PART_GUID}\n")
    raw = path.with_suffix(".raw")
    with raw.open("wb") as f:
        f.truncate(DISK_BYTES)
    subprocess.run(["sfdisk", "--quiet", str(raw)], input=table.encode(), check=True,
                   capture_output=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
                   check=True)
    raw.unlink()


def _windows_filesystems(g: object, dev: str, spec: WindowsSpec, tarball: Path) -> None:
    if spec.firmware == "bios":
        g.mkfs("ntfs", f"{dev}1", label="System Reserved")  # type: ignore[attr-defined]
        boot_files = {"/bootmgr": b"BOOTMGR placeholder", "/Boot/BCD": b"BCD placeholder"}
    else:
        g.mkfs("vfat", f"{dev}1")  # type: ignore[attr-defined]
        boot_files = {"/EFI/Microsoft/Boot/bootmgfw.efi": pe32plus(),
                      "/EFI/Microsoft/Boot/BCD": b"BCD placeholder"}
    g.mount(f"{dev}1", "/")  # type: ignore[attr-defined]
    for path, data in boot_files.items():
        g.mkdir_p(path.rsplit("/", 1)[0] or "/")  # type: ignore[attr-defined]
        g.write(path, data)  # type: ignore[attr-defined]
    g.umount_all()  # type: ignore[attr-defined]
    g.mkfs("ntfs", f"{dev}2")  # type: ignore[attr-defined]
    g.mount(f"{dev}2", "/")  # type: ignore[attr-defined]
    g.tar_in(str(tarball), "/")  # type: ignore[attr-defined]
    g.umount_all()  # type: ignore[attr-defined]


# --- virtio-win ---

# driver folder -> the base name of its .sys/.inf/.cat files
VIRTIO_DRIVERS = {"viostor": "viostor", "vioscsi": "vioscsi", "NetKVM": "netkvm",
                  "Balloon": "balloon", "vioserial": "vioser", "viorng": "viorng",
                  "pvpanic": "pvpanic"}
VIRTIO_OSES = ("2k8R2", "2k12", "2k12R2", "2k16", "2k19", "2k22", "w7", "w8", "w8.1", "w10",
               "w11")
VIRTIO_MISSING = {("viorng", "2k8R2"), ("pvpanic", "w11")}
VIRTIO_EXTRAS = ("guest-agent/qemu-ga-x86_64.msi", "guest-agent/qemu-ga-i386.msi",
                 "virtio-win-gt-x64.msi", "virtio-win_license.txt")


def virtio_win_files() -> dict[str, bytes]:
    """Every file of the fake virtio-win tree, by relative path, with its contents."""
    files: dict[str, bytes] = {}
    for folder, base in VIRTIO_DRIVERS.items():
        for os_dir in VIRTIO_OSES:
            if (folder, os_dir) in VIRTIO_MISSING:
                continue
            # Server 2008 R2 and later exist only as 64-bit: no x86 folder.
            for arch in ("amd64",) if os_dir.startswith("2k") else ("amd64", "x86"):
                for ext in ("sys", "inf", "cat"):
                    files[f"{folder}/{os_dir}/{arch}/{base}.{ext}"] = \
                        f"fake {base} {os_dir} {arch} {ext}\n".encode()
    for extra in VIRTIO_EXTRAS:
        files[extra] = f"fake {extra}\n".encode()
    return files


def build_virtio_win(root: Path, *, iso: Path | None = None) -> Path:
    """Write the tree under ``root``; with ``iso``, also pack it as virtio-win.iso is
    (ISO 9660, Rock Ridge and Joliet, volume id virtio-win) and return the ISO."""
    for rel, data in virtio_win_files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    if iso is None:
        return root
    subprocess.run(["xorriso", "-as", "mkisofs", "-r", "-J", "-V", "virtio-win", "-o", str(iso),
                    str(root)], check=True, capture_output=True)
    return iso
