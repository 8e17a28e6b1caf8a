"""Build real OVA packages for the tests: an OVF envelope written with lxml, a
streamOptimized VMDK made by qemu-img, a SHA256 manifest, all in a ustar tar
in the order OVF requires (envelope first)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

from lxml import etree

OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMW = "http://www.vmware.com/schema/ovf"
NSMAP = {None: OVF, "ovf": OVF, "rasd": RASD, "vssd": VSSD, "vmw": VMW}


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def _item(parent: etree._Element, **fields: str) -> etree._Element:
    item = etree.SubElement(parent, _q(OVF, "Item"))
    for key, value in fields.items():
        etree.SubElement(item, _q(RASD, key)).text = value
    return item


def envelope(name: str, disk_file: str, disk_bytes: int, capacity: int, *, memory_mib: int,
             vcpus: int, mac: str, network: str, guest_id: str = "debian12_64Guest",
             firmware: str = "bios") -> bytes:
    root = etree.Element(_q(OVF, "Envelope"), nsmap=NSMAP)
    refs = etree.SubElement(root, _q(OVF, "References"))
    etree.SubElement(refs, _q(OVF, "File"), {_q(OVF, "id"): "file1",
                                             _q(OVF, "href"): disk_file,
                                             _q(OVF, "size"): str(disk_bytes)})
    disks = etree.SubElement(root, _q(OVF, "DiskSection"))
    etree.SubElement(disks, _q(OVF, "Info")).text = "disks"
    etree.SubElement(disks, _q(OVF, "Disk"), {
        _q(OVF, "diskId"): "vmdisk1", _q(OVF, "fileRef"): "file1",
        _q(OVF, "capacity"): str(capacity // (1024 * 1024)),
        _q(OVF, "capacityAllocationUnits"): "byte * 2^20",
        _q(OVF, "format"): "http://www.vmware.com/interfaces/specifications/vmdk.html"
                           "#streamOptimized"})
    nets = etree.SubElement(root, _q(OVF, "NetworkSection"))
    etree.SubElement(nets, _q(OVF, "Network"), {_q(OVF, "name"): network})
    system = etree.SubElement(root, _q(OVF, "VirtualSystem"), {_q(OVF, "id"): name})
    etree.SubElement(system, _q(OVF, "Name")).text = name
    os_section = etree.SubElement(system, _q(OVF, "OperatingSystemSection"),
                                  {_q(OVF, "id"): "96", _q(VMW, "osType"): guest_id})
    etree.SubElement(os_section, _q(OVF, "Info")).text = "guest"
    hardware = etree.SubElement(system, _q(OVF, "VirtualHardwareSection"))
    _item(hardware, ElementName=f"{vcpus} vCPU", InstanceID="1", ResourceType="3",
          VirtualQuantity=str(vcpus))
    _item(hardware, AllocationUnits="byte * 2^20", ElementName="memory", InstanceID="2",
          ResourceType="4", VirtualQuantity=str(memory_mib))
    _item(hardware, ElementName="SCSI controller 0", InstanceID="3",
          ResourceSubType="VirtualSCSI", ResourceType="6")
    _item(hardware, AddressOnParent="0", ElementName="Hard disk 1",
          HostResource="ovf:/disk/vmdisk1", InstanceID="4", Parent="3", ResourceType="17")
    _item(hardware, Address=mac, AutomaticAllocation="true", Connection=network,
          ElementName="Network adapter 1", InstanceID="5", ResourceSubType="VmxNet3",
          ResourceType="10")
    etree.SubElement(hardware, _q(VMW, "Config"), {_q(OVF, "required"): "false",
                                                  _q(VMW, "key"): "firmware",
                                                  _q(VMW, "value"): firmware})
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def build_ova(dest: Path, source_image: Path, *, name: str = "refguest",
              memory_mib: int = 1024, vcpus: int = 2, mac: str = "00:50:56:aa:bb:01",
              network: str = "VM Network", firmware: str = "bios",
              stream_ready: bool = False) -> Path:
    """dest/NAME.ova from any image qemu-img reads (converted to streamOptimized VMDK)."""
    work = dest / f"{name}-parts"
    work.mkdir(parents=True, exist_ok=True)
    vmdk = work / f"{name}-disk1.vmdk"
    if stream_ready:  # already a streamOptimized VMDK: package it as it is
        shutil.copyfile(source_image, vmdk)
    else:
        subprocess.run(["qemu-img", "convert", "-q", "-O", "vmdk", "-o",
                        "subformat=streamOptimized", str(source_image), str(vmdk)], check=True)
    info = subprocess.run(["qemu-img", "info", "--output=json", str(vmdk)], check=True,
                          capture_output=True, text=True).stdout
    capacity = json.loads(info)["virtual-size"]
    ovf = work / f"{name}.ovf"
    ovf.write_bytes(envelope(name, vmdk.name, vmdk.stat().st_size, capacity,
                             memory_mib=memory_mib, vcpus=vcpus, mac=mac, network=network,
                             firmware=firmware))
    manifest = work / f"{name}.mf"
    manifest.write_text("".join(
        f"SHA256({p.name})= {hashlib.sha256(p.read_bytes()).hexdigest()}\n"
        for p in (ovf, vmdk)))
    ova = dest / f"{name}.ova"
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:
        for part in (ovf, manifest, vmdk):
            tar.add(part, arcname=part.name)
    return ova


def rewrite_manifest(ova: Path, dest: Path, change: Callable[[list[str]], list[str]],
                     prefix: str = "tampered") -> Path:
    """A copy of the OVA whose manifest lines went through ``change``."""
    out = dest / f"{prefix}-{ova.name}"
    with tarfile.open(ova) as src, tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith(".mf"):
                data = ("\n".join(change(data.decode().splitlines())) + "\n").encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
    return out


def tamper_manifest(ova: Path, dest: Path) -> Path:
    """The manifest claims a different digest for the disk (its last line)."""
    def zero_last(lines: list[str]) -> list[str]:
        name = lines[-1].split("(")[1].split(")")[0]
        return [*lines[:-1], f"SHA256({name})= {'0' * 64}"]

    return rewrite_manifest(ova, dest, zero_last)
