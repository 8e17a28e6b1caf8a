"""Stage 5: the domain XML, written to a directory or defined on a libvirt host.

The output decides where each disk lives: the chooser gets a model whose disks
already point at the converted files or volumes, and the inspection, so it
sees what the guest really has (virtio drivers, firmware, disk count).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from vmshift.convert.vm.copy import CopiedDisk
from vmshift.convert.vm.source import converted_disks
from vmshift.errors import BadInput
from vmshift.model import VirtualMachine


def target_model(vm: VirtualMachine, copied: list[CopiedDisk], out_format: str,
                 name: str) -> VirtualMachine:
    out = copy.deepcopy(vm)
    out.name = name
    converted = converted_disks(out, name)
    for disk, new in zip(converted, copied, strict=True):
        disk.source, disk.format, disk.datastore = new.path, out_format, None
        disk.snapshot_chain = None
    out.disks = converted
    return out


def check_local(output_dir: Path, name: str, force: bool) -> Path:
    if output_dir.exists() and not output_dir.is_dir():
        raise BadInput(f"--output-dir: {output_dir} is not a directory")
    xml_path = output_dir / f"{name}.xml"
    if xml_path.exists() and not force:
        raise BadInput(f"{xml_path} exists; refusing to overwrite it (use --force)")
    return xml_path


def write_local(xml_path: Path, xml: str) -> None:
    """All or nothing: a temp file renamed into place."""
    tmp = xml_path.with_name(f".{xml_path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(xml)
        os.replace(tmp, xml_path)
    finally:
        tmp.unlink(missing_ok=True)


def check_libvirt(uri: str, name: str, force: bool) -> None:
    """Refuse an existing domain before anything is copied (or, with --force, say so)."""
    from vmshift.libvirtconn import opened

    with opened(uri, f"cannot list the domains on {uri}") as conn:
        names = {d.name() for d in conn.listAllDomains()}
    if name in names and not force:
        raise BadInput(f"--name: a domain {name!r} already exists on {uri} "
                       "(use --force to replace it)")


def define(uri: str, name: str, xml: str, force: bool) -> None:
    from vmshift.libvirtconn import opened

    with opened(uri, f"cannot define {name} on {uri}") as conn:
        if force:
            remove_domain(conn, name)
        conn.defineXML(xml)


def remove_domain(conn: Any, name: str) -> bool:
    import libvirt

    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return False
    if dom.isActive():
        dom.destroy()
    flags = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    dom.undefineFlags(flags)
    return True
