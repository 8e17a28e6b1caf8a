"""The VMX input: a VMware ``.vmx`` file -> ``VirtualMachine``.

``read_vmx(path)`` translates only: it never opens the disk files a VMX
names (vmx2xml must work on a VMX whose disks live on an ESXi datastore),
but every local path it names is confined (``vmshift.confine``): one that
leaves the VMX's directory, by ``..`` or a symlink, or names a device, is
refused. ``vmshift.convert.vmx.disks`` adds the checks of the disks
themselves (their VMDK descriptors; for ``inspect``, that they exist).
"""

from __future__ import annotations

import os
from pathlib import Path

from vmshift.confine import Policy
from vmshift.convert import guestos
from vmshift.convert.vmx.lexer import VmxFile, read_vmx_bytes, read_vmx_file
from vmshift.convert.vmx.network import read_nics
from vmshift.convert.vmx.ports import read_passthrough, read_ports, read_usb, read_video
from vmshift.convert.vmx.storage import read_storage
from vmshift.errors import bad_input
from vmshift.model import (
    CpuTopology,
    Firmware,
    FirmwareType,
    GuestHints,
    VirtualMachine,
)

# VMware's own defaults when a key is absent (what the VM powers on with):
# libvirt's reader applies the same ones.
DEFAULT_MEMORY_MIB = 32
DEFAULT_VCPUS = 1
# vSphere 8 maxima: 24 TiB of memory, 768 vCPUs. Anything above is not a VMX.
MAX_MEMORY_MIB = 24 * 1024 * 1024
MAX_VCPUS = 768


def read_vmx(path: str | Path, policy: Policy | None = None, *,
             must_exist: bool = False) -> VirtualMachine:
    """Parse a VMX into the neutral model (BadInput, exit 2, on any malformed fact).

    ``policy``: the directories and devices the command line allows beyond the
    VMX's own directory; ``must_exist``: every disk file must be here.
    """
    return _model(read_vmx_file(Path(path)), policy, must_exist)


def read_vmx_model_from_bytes(path: str | Path, data: bytes,
                              policy: Policy | None = None) -> VirtualMachine:
    """The same from bytes already in memory (``path`` names it in messages and
    anchors its relative disk paths)."""
    return _model(read_vmx_bytes(Path(path), data), policy, False)


def _model(vmx: VmxFile, policy: Policy | None, must_exist: bool) -> VirtualMachine:
    vm = VirtualMachine(source_kind="vmx", source_ref=os.path.abspath(vmx.path))
    vm.notes.extend(vmx.warnings)
    vm.name = _name(vmx)
    vm.uuid = _uuid(vmx)
    vm.annotation = vmx.get("annotation") or None
    vm.memory_mib = _memory(vmx, vm.notes)
    vm.cpu = _cpu(vmx)
    vm.firmware = _firmware(vmx)
    vm.guest = _guest(vmx)
    vm.cpu_hotadd = vmx.get_bool("vcpu.hotadd", False)
    vm.memory_hotadd = vmx.get_bool("mem.hotadd", False)
    vm.cbt_enabled = vmx.get_bool("ctkEnabled", False)
    vm.cpu_affinity = _affinity(vmx)
    storage = read_storage(vmx, vm.notes, policy, must_exist=must_exist)
    vm.disks, vm.cdroms, vm.floppies = storage.disks, storage.cdroms, storage.floppies
    vm.nics = read_nics(vmx, vm.notes)
    vm.serials = read_ports(vmx, "serial")
    vm.parallels = read_ports(vmx, "parallel")
    vm.video = read_video(vmx)
    vm.usb_controllers = read_usb(vmx)
    vm.passthrough = read_passthrough(vmx)
    _note_unsupported(vmx, vm.notes)
    return vm


def _name(vmx: VmxFile) -> str:
    name = (vmx.get("displayName") or "").strip()
    return name or vmx.path.stem


def _uuid(vmx: VmxFile) -> str | None:
    """uuid.bios is 16 hex bytes: '56 4d 1a ... 2f-5e 7b ...'."""
    value = vmx.get("uuid.bios")
    if value is None:
        return None
    digits = value.replace(" ", "").replace("-", "").lower()
    if len(digits) != 32 or any(c not in "0123456789abcdef" for c in digits):
        raise bad_input(vmx.path, f"uuid.bios = {value!r}: not 16 hex bytes",
                        vmx.line("uuid.bios"))
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _memory(vmx: VmxFile, notes: list[str]) -> int:
    memory = vmx.get_int("memSize", 1, MAX_MEMORY_MIB)
    if memory is None:
        notes.append(f"memSize absent: VMware's default of {DEFAULT_MEMORY_MIB} MiB applies")
        return DEFAULT_MEMORY_MIB
    return memory


def _cpu(vmx: VmxFile) -> CpuTopology:
    vcpus = vmx.get_int("numvcpus", 1, MAX_VCPUS) or DEFAULT_VCPUS
    cores = vmx.get_int("cpuid.coresPerSocket", 1, MAX_VCPUS)
    key = "cpuid.coresPerSocket"
    if cores is None:
        # Newer ESXi writes the cookie form when the topology was set for the guest.
        key = "cpuid.coresPerSocket.cookie"
        cores = vmx.get_int(key, 1, MAX_VCPUS)
    cores = cores or 1
    if vcpus % cores:
        raise bad_input(vmx.path, f"{vmx.spelled(key)} = {cores} does not divide "
                                  f"numvcpus = {vcpus}", vmx.line(key))
    return CpuTopology(vcpus=vcpus, sockets=vcpus // cores, cores_per_socket=cores,
                       threads_per_core=1)


def _firmware(vmx: VmxFile) -> Firmware:
    value = (vmx.get("firmware") or "bios").strip().lower()
    if value not in ("bios", "efi"):
        raise bad_input(vmx.path, f"firmware = {value!r}: expected bios or efi",
                        vmx.line("firmware"))
    efi = value == "efi"
    secure = vmx.get_bool("uefi.secureBoot.enabled", False)
    if secure and not efi:
        raise bad_input(vmx.path, "uefi.secureBoot.enabled = TRUE needs firmware = \"efi\"",
                        vmx.line("uefi.secureBoot.enabled"))
    return Firmware(
        type=FirmwareType.EFI if efi else FirmwareType.BIOS,
        secure_boot=bool(secure),
        nvram_present=vmx.get("nvram") is not None,
        tpm_present=vmx.get_bool("vtpm.present", False),
    )


def _guest(vmx: VmxFile) -> GuestHints:
    guest_id = (vmx.get("guestOS") or "").strip() or None
    return GuestHints(
        vmware_guest_id=guest_id,
        family=guestos.family(guest_id),
        name=vmx.get("guestOS.detailed.data") or vmx.get("guestOSAltName") or None,
        hostname=None,
        arch=guestos.arch(guest_id),
        tools_installed=None,
        tools_running=None,
    )


def _affinity(vmx: VmxFile) -> list[int]:
    value = (vmx.get("sched.cpu.affinity") or "all").strip().lower()
    if value in ("all", ""):
        return []
    try:
        return sorted({int(part) for part in value.split(",")})
    except ValueError:
        raise bad_input(vmx.path, f"sched.cpu.affinity = {value!r}: expected 'all' or a "
                                  "list of CPU numbers", vmx.line("sched.cpu.affinity")) from None


def _note_unsupported(vmx: VmxFile, notes: list[str]) -> None:
    """Facts that exist in the VMX but have no place on KVM: say so, never silently."""
    if vmx.get_bool("sharedFolder0.present", False):
        notes.append("shared folders (sharedFolderN) are a VMware Tools feature; not carried "
                     "over (use virtiofs on KVM)")
    if vmx.get_bool("RemoteDisplay.vnc.enabled", False):
        notes.append("VMware's VNC console settings are not carried over (the KVM domain "
                     "gets its own local VNC; any VNC password stays behind)")
