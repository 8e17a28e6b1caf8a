"""`convert vm --vsphere`: a VM read from vCenter/ESXi, its disks downloaded for the run.

The options and their rules are `inspect --vsphere`'s
(vmshift/inspect/vsphere_source.py): the password never comes from argv,
TLS is verified unless --insecure. The VM is read and checked when the
command starts: a powered-on VM is refused (exit 3, with this command's
document) before anything is created, as is a raw device mapping. Its disk
files are downloaded only after the output's preflight, by `vsphere
download`'s resumable copy, into --disk-dir (kept, so a rerun resumes or
skips what is complete) or into the run's work directory (removed with it).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

from vmshift.convert.vm.source import Source, converted_disks, local_files
from vmshift.errors import Refused
from vmshift.model import VirtualMachine

REMEDY = ("power it off first (`vmshift vsphere download --power-off --disk-dir DIR` "
          "does, and this command with --disk-dir DIR then reuses the downloaded files)")


def from_vsphere(args: dict[str, Any], stack: ExitStack, json_mode: bool) -> Source:
    """Read and check the VM; its session stays open (on ``stack``) until the download."""
    from vmshift.convert.vsphere import download as dl
    from vmshift.convert.vsphere.cli import session_from
    from vmshift.convert.vsphere.reader import find_vm, read_vm
    from vmshift.inspect.vsphere_source import CONNECTION_KEYS

    connection = stack.enter_context(ExitStack())  # closed at the end, or once downloaded
    session = connection.enter_context(session_from(
        {k: args.get(k) for k in CONNECTION_KEYS}, json_mode))
    vmo = find_vm(session, args["vm_name"])
    vm = read_vm(session, vmo)
    ref = vm.source_ref or args["vm_name"]
    converted_disks(vm, ref)  # a VM without disks stops here, before any download
    try:
        try:
            dl.decide_action(vmo, power_off=False, snapshot=False, hard_power_off=False)
        except Refused as running:  # its remedy names download's options, not ours
            raise Refused(f"{running.message.split(';')[0]}; {REMEDY}",
                          detail=running.detail) from None
        files = dl.disk_files(session, vmo, vmo.config.hardware)  # refuses an RDM
    except Refused as exc:
        raise _with_document(exc, ref) from None
    dc_path = dl.datacenter_path(session, vmo)
    keep = Path(args["download_dir"]) if args.get("download_dir") else None

    def download(work: Path) -> list[Path]:
        dest = keep or work / "vsphere-disks"
        try:
            dl.copy_files(session, files, dc_path, dest, json_mode, None)
        finally:
            connection.close()  # nothing more to read from vSphere: log out now
        return _localise(vm, dest, ref)

    return Source(vm, [], "vsphere", ref, fetch=download, fetch_stage="download",
                  kept_dir=keep.resolve() if keep else None)


def _localise(vm: VirtualMachine, dest: Path, ref: str) -> list[Path]:
    """Point the model at the downloaded files, each confined to DEST."""
    from vmshift.confine import Policy
    from vmshift.convert.vsphere.datastore import confine_disks
    from vmshift.convert.vsphere.reader import localise_disks

    localise_disks(vm, dest)
    confine_disks(vm, Policy.of(disk_dirs=[dest]), must_exist=True)
    return local_files(vm, ref)


def _with_document(exc: Refused, ref: str) -> Refused:
    """Exit 3 with the command's own document, as `inspect --vsphere` does."""
    from vmshift.inspect.cli import _refusal

    findings = _refusal(exc)
    exc.document = ("convert_vm", {"source": ref, "findings": findings,
                                   "blockers": [f.rule_id for f in findings],
                                   "inspection": None})
    return exc
