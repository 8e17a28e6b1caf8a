"""CLI for `vmshift convert`, `vmx2xml`, `vsphere` and `ova`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vmshift.cliutil import json_option, virt_type_option
from vmshift.convert.disk_cli import convert  # noqa: F401  (group lives beside the disk engine)
from vmshift.output import emit_json, notice


def mapping_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--network-map, --storage-map, --default-network (shared by vmx2xml, ova, vsphere)."""
    f = click.option("--default-network", default="default", show_default=True,
                     help="libvirt network for NICs the network map does not name.")(f)
    f = click.option("--storage-map", type=click.Path(), default=None,
                     help="CSV: datastore-or-path-prefix,target[,dir|pool] per line.")(f)
    f = click.option("--network-map", type=click.Path(), default=None,
                     help="CSV: source-network,target[,network|bridge] per line.")(f)
    return f


def emit_domain(vm: Any, *, json_mode: bool, virt_type: str, network_map: str | None,
                storage_map: str | None, default_network: str, **extra: Any) -> None:
    """Map files -> chooser -> XML; stdout gets the XML only once all of it exists."""
    from vmshift import host
    from vmshift.convert.maps import load_network_map, load_storage_map
    from vmshift.convert.writer import build_domain_xml

    result = build_domain_xml(
        vm, virt_type=virt_type,
        network_map=load_network_map(network_map) if network_map else None,
        storage_map=load_storage_map(storage_map) if storage_map else None,
        default_network=default_network)
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
@virt_type_option
@json_option
def vmx2xml(vmx_file: str, network_map: str | None, storage_map: str | None,
            default_network: str, virt_type: str, json_mode: bool) -> None:
    """Translate a VMX file into KVM-ready libvirt domain XML (printed on stdout).

    Only the VMX is read: the disk files it names need not exist. Notes about
    what changed (devices, networks, dropped VMware-only features) go to stderr.
    """
    from vmshift.convert.vmx import read_vmx

    vm = read_vmx(Path(vmx_file))
    emit_domain(vm, json_mode=json_mode, virt_type=virt_type, network_map=network_map,
                storage_map=storage_map, default_network=default_network)


@click.group()
def ova() -> None:
    """Read OVF/OVA packages."""


@ova.command("xml")
@click.argument("package", type=click.Path())
@mapping_options
@virt_type_option
@json_option
def ova_xml(package: str, network_map: str | None, storage_map: str | None,
            default_network: str, virt_type: str, json_mode: bool) -> None:
    """Translate an OVA (or a bare OVF) into libvirt domain XML.

    The manifest's SHA1/SHA256 digests are checked first; the disks are read
    in place inside the tar. Nothing is extracted.
    """
    from vmshift.convert.ova import read_package
    from vmshift.output import Progress

    path = Path(package)
    size = path.stat().st_size if path.is_file() else None
    with Progress("verifying manifest", size, json_mode=json_mode) as bar:
        package_info = read_package(path, progress=lambda n: bar.update_to(bar.done + n))
    emit_domain(package_info.vm, json_mode=json_mode, virt_type=virt_type,
                network_map=network_map, storage_map=storage_map,
                default_network=default_network,
                verified=package_info.verified_files)
