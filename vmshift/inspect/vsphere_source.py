"""`vmshift inspect --vsphere`: a vSphere VM as an inspect source.

The VM is read into the model (every rule fact: CBT, snapshots, affinity,
devices...). Its disks live on a datastore, which the appliance cannot open,
so with ``--disk-dir`` they are first copied there by the vSphere
download module (resumable, verified TLS, refusing a running VM with exit 3)
and the model's disks are pointed at the local copies. From there it is the
same pipeline as `inspect FILE.vmx`: model -> local disks -> one inspection
-> rules. Without ``--disk-dir`` only the model-only rules can decide.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vmshift.convert.vsphere.cli import connection_options
from vmshift.errors import BadInput, Refused
from vmshift.inspect.sources import Source, from_model
from vmshift.output import notice

# The keyword arguments vsphere_options adds to the command.
CONNECTION_KEYS = ("url", "user", "password_file", "ca_file", "insecure")
ONLY_WITH_VSPHERE = {"vm_name": "--vm", "download_dir": "--disk-dir", "url": "--url",
                     "user": "--user", "password_file": "--password-file",
                     "ca_file": "--ca-file", "insecure": "--insecure"}


def vsphere_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--vsphere, --vm, --disk-dir and the vSphere connection options."""
    f = click.option("--disk-dir", "download_dir", type=click.Path(file_okay=False), default=None,
                     help="With --vsphere: download the VM's disks here (resumable; "
                          "a powered-on VM is refused) and inspect them. Without it "
                          "only the rules that need no disk contents decide.")(f)
    f = click.option("--vm", "vm_name", default=None,
                     help="With --vsphere: the VM's name.")(f)
    f = connection_options(f)
    # The shared options insist on --url/--user; for inspect they matter only
    # with --vsphere, so a plain `inspect IMAGE` must not ask for them.
    for param in getattr(f, "__click_params__", []):
        if param.name in ("url", "user"):
            param.required = False
    return click.option("--vsphere", is_flag=True,
                        help="Inspect a VM of vCenter/ESXi (--url, --user, --vm) "
                             "instead of IMAGE files.")(f)


def vsphere_source(images: tuple[str, ...], args: dict[str, Any],
                   json_mode: bool) -> Source | None:
    """The Source for --vsphere, or None when the command line names IMAGE files."""
    if not vsphere_args_given(images, args):
        return None
    download = Path(args["download_dir"]) if args.get("download_dir") else None
    return read_source(args, args["vm_name"], download, json_mode)


def vsphere_args_given(images: tuple[str, ...], args: dict[str, Any]) -> bool:
    """Whether --vsphere was given, with all it needs (`inspect`, `convert vm`);
    a vSphere option without --vsphere is a usage error."""
    if not args.get("vsphere"):
        stray = [flag for key, flag in ONLY_WITH_VSPHERE.items()
                 if args.get(key) and not _from_env(key)]
        if stray:
            raise BadInput(f"{', '.join(stray)}: only valid with --vsphere")
        return False
    if images:
        raise BadInput(f"IMAGE: --vsphere reads the VM from vSphere; drop {images[0]!r} "
                       "(or drop --vsphere)")
    for key in ("url", "user", "vm_name"):
        if not args.get(key):
            raise BadInput(f"{ONLY_WITH_VSPHERE[key]}: required with --vsphere")
    return True


def _from_env(key: str) -> bool:
    # --url/--user may come from VMSHIFT_VSPHERE_URL/USER, set for other
    # commands; that is no reason to reject a plain `inspect IMAGE`.
    import os

    return key in ("url", "user") and bool(os.environ.get(f"VMSHIFT_VSPHERE_{key.upper()}"))


def read_source(args: dict[str, Any], vm_name: str, download: Path | None,
                json_mode: bool) -> Source:
    """Read the VM into the model, and with ``download`` fetch its disks there."""
    from vmshift.convert.vsphere import download as dl
    from vmshift.convert.vsphere.cli import session_from
    from vmshift.convert.vsphere.reader import find_vm, localise_disks, read_vm

    with session_from({k: args.get(k) for k in CONNECTION_KEYS}, json_mode) as session:
        vmo = find_vm(session, vm_name)
        vm = read_vm(session, vmo)
        if download is None:
            notice(f"{vm_name}: disks not downloaded (no --disk-dir): rules that need "
                   "the disk contents are not_evaluable", json_mode)
            return Source(vm, [])
        # A running VM's disks would be copied torn: refused (exit 3), as
        # `vsphere download` does without --power-off/--snapshot.
        try:
            dl.decide_action(vmo, power_off=False, snapshot=False, hard_power_off=False)
        except Refused as refused:
            raise Refused(f"{refused.message.split(';')[0]}; power it off, or get its disks "
                          "with `vmshift vsphere download --power-off|--snapshot`, or drop "
                          "--disk-dir for the model-only rules",
                          detail=refused.detail) from None
        files = dl.disk_files(session, vmo, vmo.config.hardware)
        dl.copy_files(session, files, dl.datacenter_path(session, vmo), download,
                      json_mode, None)
    localise_disks(vm, download)
    source = from_model(vm)
    if not source.disks:
        notice(f"{vm_name}: no disk file landed in {download}: rules run on the VM "
               "definition only", json_mode)
    return source
