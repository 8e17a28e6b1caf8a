"""Stage 3: the VMware configuration file, as ESXi 7/8 writes it for such a VM.

pvscsi in PCI slot 160 and vmxnet3 in slot 192 (hence the guest's NIC name
ens192), a static VMware MAC, BIOS firmware, a serial port to a file. Keys
and values follow ESXi's spelling; VMX keys are case-insensitive.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

GUEST_OS = "debian12-64"


@dataclass(frozen=True)
class VmxSpec:
    display_name: str
    vmdk_name: str  # file name next to the .vmx, never a path that climbs out
    mac: str
    uuid_bios: str  # VMX spelling: "56 4d .. .. .. .. .. ..-.. .. .. .. .. .. .. .."
    memsize_mib: int
    numvcpus: int
    cores_per_socket: int


def uuid_bios_for(seed: str) -> str:
    """A stable uuid.bios for a seed; starts 56 4d like the ones ESXi generates."""
    raw = bytes.fromhex("564d") + hashlib.sha256(seed.encode()).digest()[:14]
    pairs = [f"{b:02x}" for b in raw]
    return " ".join(pairs[:8]) + "-" + " ".join(pairs[8:])


def uuid_from_bios(uuid_bios: str) -> str:
    """The canonical UUID form (what SMBIOS, libvirt and vSphere show)."""
    h = uuid_bios.replace(" ", "").replace("-", "")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _pcie_root_ports() -> list[tuple[str, str]]:
    # ESXi gives hardware version 13+ VMs four PCIe root ports with 8 functions.
    entries = [("pciBridge0.present", "TRUE")]
    for n, slot in ((4, 21), (5, 22), (6, 23), (7, 24)):
        entries += [(f"pciBridge{n}.present", "TRUE"),
                    (f"pciBridge{n}.virtualDev", "pcieRootPort"),
                    (f"pciBridge{n}.functions", "8"),
                    (f"pciBridge{n}.pciSlotNumber", str(slot))]
    return entries


def vmx_entries(spec: VmxSpec) -> list[tuple[str, str]]:
    if "/" in spec.vmdk_name or spec.vmdk_name.startswith("."):
        raise ValueError(f"VMDK name must be a plain file name: {spec.vmdk_name!r}")
    return [
        (".encoding", "UTF-8"),
        ("config.version", "8"),
        ("virtualHW.version", "19"),
        ("displayName", spec.display_name),
        ("guestOS", GUEST_OS),
        ("firmware", "bios"),
        ("memSize", str(spec.memsize_mib)),
        ("numvcpus", str(spec.numvcpus)),
        ("cpuid.coresPerSocket", str(spec.cores_per_socket)),
        *_pcie_root_ports(),
        ("scsi0.present", "TRUE"),
        ("scsi0.virtualDev", "pvscsi"),
        ("scsi0.pciSlotNumber", "160"),
        ("scsi0:0.present", "TRUE"),
        ("scsi0:0.deviceType", "scsi-hardDisk"),
        ("scsi0:0.fileName", spec.vmdk_name),
        ("scsi0:0.redo", ""),
        ("ethernet0.present", "TRUE"),
        ("ethernet0.virtualDev", "vmxnet3"),
        ("ethernet0.networkName", "VM Network"),
        ("ethernet0.addressType", "static"),
        ("ethernet0.address", spec.mac),
        ("ethernet0.pciSlotNumber", "192"),
        ("serial0.present", "TRUE"),
        ("serial0.fileType", "file"),
        ("serial0.fileName", "serial0.log"),
        ("serial0.yieldOnMsrRead", "TRUE"),
        ("uuid.bios", spec.uuid_bios),
        ("uuid.location", spec.uuid_bios),
        ("tools.syncTime", "FALSE"),
        ("tools.upgrade.policy", "manual"),
    ]


def vmx_text(spec: VmxSpec) -> str:
    lines = [f'{key} = "{value}"' for key, value in vmx_entries(spec)]
    return "\n".join(lines) + "\n"


def write_vmx(path: Path, spec: VmxSpec) -> None:
    path.write_text(vmx_text(spec))
