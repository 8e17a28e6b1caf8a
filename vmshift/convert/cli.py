"""CLI for `vmshift convert`, `vmx2xml`, `vsphere` and `ova`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vmshift.cliutil import json_option, virt_type_option
from vmshift.confine import allow_device_option
from vmshift.convert.disk_cli import convert  # noqa: F401  (group lives beside the disk engine)
from vmshift.convert.maps import NetworkMap, StorageMap, network_map_option, storage_map_option
from vmshift.output import emit_json, notice


def mapping_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--network-map, --storage-map, --default-network (shared by vmx2xml, ova, vsphere)."""
    f = click.option("--default-network", default="default", show_default=True,
                     help="libvirt network for NICs the network map does not name.")(f)
    f = storage_map_option("Where the disks' datastores and directories are on this host.")(f)
    f = network_map_option("Where the NICs' source networks go.")(f)
    return f


def emit_domain(vm: Any, *, json_mode: bool, virt_type: str, network_map: NetworkMap | None,
                storage_map: StorageMap | None, default_network: str, **extra: Any) -> None:
    """Maps -> chooser -> XML; stdout gets the XML only once all of it exists."""
    from vmshift import host
    from vmshift.convert.writer import build_domain_xml

    result = build_domain_xml(vm, virt_type=virt_type, network_map=network_map,
                              storage_map=storage_map, default_network=default_network)
    message = host.virt_type_notice(virt_type, result.virt_type)
    if message:
        notice(message, json_mode)
    if json_mode:
        emit_json("domain_xml", {"name": vm.name, "virt_type": result.virt_type,
                                 "machine": result.machine, "disk_bus": result.disk_bus,
                                 "notes": result.notes, "xml": result.xml, **extra})
        return
    for note in result.notes:
        notice(f"note: {note}", json_mode)
    click.echo(result.xml, nl=False)


@click.command()
@click.argument("vmx_file", type=click.Path())
@mapping_options
@allow_device_option
@virt_type_option
@json_option
def vmx2xml(vmx_file: str, network_map: NetworkMap | None, storage_map: StorageMap | None,
            default_network: str, allow_devices: tuple[str, ...], virt_type: str,
            json_mode: bool) -> None:
    """Translate a VMX file into KVM-ready libvirt domain XML (printed on stdout).

    Only the VMX is read: the disk files it names need not exist, but each must
    be (after --storage-map) inside the VMX's directory or a mapped directory,
    and never a device unless --allow-device names it. Notes about what
    changed (devices, networks, dropped VMware-only features) go to stderr.
    """
    from vmshift.confine import Policy
    from vmshift.convert.vmx.disks import read_vmx_checked

    vm = read_vmx_checked(Path(vmx_file), Policy.of(storage_map=storage_map,
                                                     devices=allow_devices))
    emit_domain(vm, json_mode=json_mode, virt_type=virt_type, network_map=network_map,
                storage_map=storage_map, default_network=default_network)


@click.group()
def ova() -> None:
    """Read OVF/OVA packages."""


@ova.command("xml")
@click.argument("package", type=click.Path())
@mapping_options
@allow_device_option
@virt_type_option
@json_option
def ova_xml(package: str, network_map: NetworkMap | None, storage_map: StorageMap | None,
            default_network: str, allow_devices: tuple[str, ...], virt_type: str,
            json_mode: bool) -> None:
    """Translate an OVA (or a bare OVF) into libvirt domain XML.

    The manifest's SHA1/SHA256 digests are checked first; the disks are read
    in place inside the tar. Nothing is extracted.
    """
    from vmshift.confine import Policy

    package_info = read_ova(Path(package), Policy.of(storage_map=storage_map,
                                                     devices=allow_devices), json_mode)
    emit_domain(package_info.vm, json_mode=json_mode, virt_type=virt_type,
                network_map=network_map, storage_map=storage_map,
                default_network=default_network,
                verified=package_info.verified_files)


def read_ova(path: Path, policy: Any, json_mode: bool) -> Any:
    """The package read and its manifest checked, with a progress bar while hashing
    (`ova xml`, `convert vm --ova`)."""
    from vmshift.convert.ova import read_package
    from vmshift.output import Progress

    size = path.stat().st_size if path.is_file() else None
    bars: list[Progress] = []  # made at the first hashed byte: a refused package shows none

    def hashed(n: int) -> None:
        if not bars:
            bars.append(Progress("verifying manifest", size, json_mode=json_mode))
        bars[0].update_to(bars[0].done + n)

    try:
        return read_package(path, progress=hashed, policy=policy)
    finally:
        for bar in bars:
            bar.close()
