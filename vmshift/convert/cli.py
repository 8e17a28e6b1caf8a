"""CLI for `vmshift convert`, `vmx2xml`, `vsphere` and `ova`."""

import click

from vmshift.cliutil import json_option, not_built


@click.group()
def convert() -> None:
    """Convert disks and VM definitions for KVM."""


@convert.command("disk")
@json_option
def convert_disk(json_mode: bool) -> None:
    """Convert one disk image (VMDK, raw, qcow2, VDI, VHD, VHDX) with qemu-img."""
    not_built("convert disk", 5)


@click.command()
@json_option
def vmx2xml(json_mode: bool) -> None:
    """Translate a VMX file into KVM-ready libvirt domain XML."""
    not_built("vmx2xml", 6)


@click.group()
def vsphere() -> None:
    """Read VMs from vCenter/ESXi: list, XML, disk download."""


@vsphere.command("list")
@json_option
def vsphere_list(json_mode: bool) -> None:
    """List the inventory."""
    not_built("vsphere list", 6)


@click.group()
def ova() -> None:
    """Read OVF/OVA packages."""


@ova.command("xml")
@json_option
def ova_xml(json_mode: bool) -> None:
    """Translate an OVA/OVF into libvirt domain XML."""
    not_built("ova xml", 6)
