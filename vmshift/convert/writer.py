"""The libvirt output: VirtualMachine -> KVM-ready domain XML.

Pipeline: a reader (vmx, ovf, vsphere) builds the model; ``chooser`` decides
the devices; ``libvirt_xml`` writes them. This module is the one entry point
that other areas call.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vmshift.convert.chooser import Choice, Options, choose
from vmshift.convert.maps import NetworkMap, StorageMap, coerce_network_map
from vmshift.errors import OperationFailed
from vmshift.model import VirtualMachine


@dataclass
class DomainXml:
    xml: str
    virt_type: str
    notes: list[str] = field(default_factory=list)  # the reader's and the chooser's
    machine: str = "q35"
    disk_bus: str = "virtio"


def resolve_virt_type(choice: str) -> str:
    if choice in ("kvm", "qemu"):
        return choice
    from vmshift import host  # late: probing KVM is only needed for 'auto'

    return host.virt_type(choice)


def build_domain_xml(vm: VirtualMachine, *, virt_type: str = "auto",
                     network_map: NetworkMap | Mapping[str, str] | None = None,
                     default_network: str = "default", inspection: Any | None = None,
                     storage_map: StorageMap | None = None) -> DomainXml:
    """The XML plus every note worth telling the user (reader warnings first)."""
    options = Options(virt_type=resolve_virt_type(virt_type),
                      network_map=coerce_network_map(network_map),
                      default_network=default_network, storage_map=storage_map)
    choice: Choice = choose(vm, options, inspection)
    return DomainXml(xml=choice.domain.to_xml(), virt_type=options.virt_type,
                     notes=[*vm.notes, *choice.notes], machine=choice.machine,
                     disk_bus=choice.disk_bus)


def vm_to_domain_xml(vm: VirtualMachine, *, virt_type: str = "auto",
                     network_map: NetworkMap | Mapping[str, str] | None = None,
                     default_network: str = "default", inspection: Any | None = None,
                     storage_map: StorageMap | None = None) -> str:
    """The domain XML for ``vm`` (BadInput when the model lacks an essential fact)."""
    return build_domain_xml(vm, virt_type=virt_type, network_map=network_map,
                            default_network=default_network, inspection=inspection,
                            storage_map=storage_map).xml


def validate(xml: str) -> None:
    """Check against libvirt's schema with virt-xml-validate (OperationFailed if invalid)."""
    tool = shutil.which("virt-xml-validate")
    if tool is None:
        raise OperationFailed("virt-xml-validate not found (Debian package libvirt-clients)")
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as handle:
        handle.write(xml)
        handle.flush()
        result = subprocess.run([tool, handle.name, "domain"], capture_output=True,
                                text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise OperationFailed("domain XML fails libvirt's schema: "
                              + (detail[0] if detail else "virt-xml-validate failed"))
