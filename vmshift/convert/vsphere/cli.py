"""`vmshift vsphere list|show|xml|download`: read VMs from vCenter or ESXi."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from vmshift.cliutil import bandwidth_option, dry_run_option, json_option, virt_type_option
from vmshift.convert.cli import emit_domain, mapping_options
from vmshift.convert.maps import NetworkMap, StorageMap
from vmshift.convert.vsphere.connection import (
    PASSWORD_ENV,
    Session,
    connect,
    parse_url,
    read_password,
)
from vmshift.errors import Refused
from vmshift.output import emit_json, notice
from vmshift.units import human

CONNECTION_HELP = f"""
The password comes from ${PASSWORD_ENV}, --password-file, or a hidden prompt;
never from the command line. TLS is verified (system CAs, or --ca-file).
"""


def connection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--url", envvar="VMSHIFT_VSPHERE_URL", required=True,
                     help="vCenter or ESXi, e.g. https://vcenter.example.com "
                          "(env VMSHIFT_VSPHERE_URL)."),
        click.option("--user", envvar="VMSHIFT_VSPHERE_USER", required=True,
                     help="User name, e.g. administrator@vsphere.local "
                          "(env VMSHIFT_VSPHERE_USER)."),
        click.option("--password-file", type=click.Path(dir_okay=False), default=None,
                     help=f"File whose first line is the password (else ${PASSWORD_ENV}, "
                          "else a prompt)."),
        click.option("--ca-file", type=click.Path(dir_okay=False), default=None,
                     help="PEM CA certificate to trust instead of the system's."),
        click.option("--insecure", is_flag=True,
                     help="Do not verify the TLS certificate (man-in-the-middle risk)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@contextmanager
def session_from(opts: dict[str, Any], json_mode: bool) -> Iterator[Session]:
    endpoint = parse_url(opts["url"], opts["user"], opts["ca_file"], opts["insecure"])
    if endpoint.insecure:
        notice(f"warning: --insecure: the TLS certificate of {endpoint.host} is NOT verified",
               json_mode)
    session = connect(endpoint, read_password(opts["password_file"]))
    try:
        yield session
    finally:
        session.close()


def _conn(kwargs: dict[str, Any]) -> dict[str, Any]:
    keys = ("url", "user", "password_file", "ca_file", "insecure")
    return {k: kwargs.pop(k) for k in keys}


@click.group(help="Read VMs from vCenter/ESXi: list, show, XML, disk download.\n"
             + CONNECTION_HELP)
def vsphere() -> None:
    pass


@vsphere.command("list")
@connection_options
@json_option
def vsphere_list(json_mode: bool, **kwargs: Any) -> None:
    """List the inventory: power state, guest OS, disks, NICs, host, datastores."""
    from vmshift.convert.vsphere.inventory import list_vms

    with session_from(_conn(kwargs), json_mode) as session:
        rows = list_vms(session)
    if json_mode:
        emit_json("vsphere_inventory", {"url": session.endpoint.display, "vms": rows})
        return
    _print_table(rows)


def _print_table(rows: list[dict[str, Any]]) -> None:
    header = ("NAME", "POWER", "GUEST OS", "DISKS", "NICS", "HOST", "DATASTORES")
    table = [header] + [(
        r["name"], r["power_state"], r["guest_os"] or "-",
        f"{len(r['disks'])} ({human(sum(d['capacity_bytes'] or 0 for d in r['disks']))})",
        str(len(r["nics"])), r["host"] or "-", ",".join(r["datastores"]) or "-",
    ) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        click.echo("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@vsphere.command("show")
@click.option("--vm", "vm_name", required=True, help="The VM's name.")
@connection_options
@json_option
def vsphere_show(vm_name: str, json_mode: bool, **kwargs: Any) -> None:
    """Read one VM into vmshift's model and print it (JSON with --json)."""
    from vmshift.convert.vsphere.reader import find_vm, read_vm
    from vmshift.output import to_jsonable

    with session_from(_conn(kwargs), json_mode) as session:
        model = read_vm(session, find_vm(session, vm_name))
    if json_mode:
        emit_json("vsphere_vm", {"vm": model})
        return
    import json

    click.echo(json.dumps(to_jsonable(model), indent=2))


@vsphere.command("xml")
@click.option("--vm", "vm_name", required=True, help="The VM's name.")
@click.option("--disk-dir", type=click.Path(file_okay=False), default=None,
              help="Point the disks at DIR/<file> (where `download --disk-dir DIR` put them) "
                   "instead of their [datastore] paths.")
@mapping_options
@virt_type_option
@connection_options
@json_option
def vsphere_xml(vm_name: str, disk_dir: str | None, network_map: NetworkMap | None,
                storage_map: StorageMap | None, default_network: str, virt_type: str,
                json_mode: bool, **kwargs: Any) -> None:
    """Print the KVM-ready libvirt domain XML for a vSphere VM."""
    from vmshift.convert.vsphere.reader import find_vm, localise_disks, read_vm

    with session_from(_conn(kwargs), json_mode) as session:
        model = read_vm(session, find_vm(session, vm_name))
    if disk_dir:
        localise_disks(model, Path(disk_dir))
    from vmshift.confine import Policy
    from vmshift.convert.vsphere.datastore import confine_disks

    confine_disks(model, Policy.of(storage_map=storage_map, disk_dirs=[disk_dir] if disk_dir
                                   else []), must_exist=False)
    emit_domain(model, json_mode=json_mode, virt_type=virt_type, network_map=network_map,
                storage_map=storage_map, default_network=default_network)


@vsphere.command("download")
@click.option("--vm", "vm_name", required=True, help="The VM's name.")
@click.option("--disk-dir", type=click.Path(file_okay=False), required=True,
              help="Directory for the disk files (descriptors and extents).")
@click.option("--power-off", is_flag=True,
              help="Shut a running guest down through VMware Tools first.")
@click.option("--hard-power-off", is_flag=True,
              help="With --power-off: power off hard if the guest does not shut down.")
@click.option("--shutdown-timeout", type=click.FloatRange(min=1), default=300,
              show_default=True, help="Seconds to wait for the guest shutdown.")
@click.option("--snapshot", is_flag=True,
              help="Copy a running VM from a snapshot (removed afterwards).")
@bandwidth_option("the transfer")
@connection_options
@dry_run_option
@json_option
def vsphere_download(vm_name: str, disk_dir: str, power_off: bool, hard_power_off: bool,
                     shutdown_timeout: float, snapshot: bool, bandwidth: int | None,
                     dry_run: bool, json_mode: bool, **kwargs: Any) -> None:
    """Download a VM's disks over the datastore's HTTPS /folder path, resumably.

    A powered-on VM is refused (exit 3) unless --power-off or --snapshot says
    how to get consistent disks. An interrupted download resumes where it
    stopped when the same command is run again.
    """
    from vmshift.convert.vsphere import download as dl
    from vmshift.convert.vsphere.reader import find_vm

    dest = Path(disk_dir)
    result: dict[str, Any] = {"vm": vm_name, "disk_dir": str(dest.resolve()), "action": None,
                              "dry_run": dry_run}
    with session_from(_conn(kwargs), json_mode) as session:
        vm = find_vm(session, vm_name)
        try:
            result["action"] = action = dl.decide_action(vm, power_off, snapshot,
                                                         hard_power_off)
            files = dl.disk_files(session, vm, vm.config.hardware)
        except Refused as exc:  # exit 3: --json prints this command's document, blocked
            exc.document = ("vsphere_download", {**result, "files": [], "findings": exc.detail})
            raise
        if dry_run:
            _report_download(result, [{"datastore_path": f.ref, "size": f.size}
                                      for f in files], json_mode)
            return
        dc_path = dl.datacenter_path(session, vm)
        if action == "snapshot":
            with dl.export_snapshot(session, vm) as snap:
                files = dl.disk_files(session, vm, snap.config.hardware)
                fetched = dl.copy_files(session, files, dc_path, dest, json_mode, bandwidth)
        else:
            if action == "shutdown":
                result["action"] = dl.shut_down(session, vm, shutdown_timeout,
                                                hard_power_off)
            fetched = dl.copy_files(session, files, dc_path, dest, json_mode, bandwidth)
    _report_download(result, [{"datastore_path": f.file.ref, "path": str(f.local),
                               "size": f.size, "resumed_from": f.resumed_from,
                               "skipped": f.skipped, "restarted": f.restarted}
                              for f in fetched], json_mode)


def _report_download(result: dict[str, Any], files: list[dict[str, Any]],
                     json_mode: bool) -> None:
    if json_mode:
        emit_json("vsphere_download", {**result, "files": files, "findings": [],
                                       "outcome": "ok"})
        return
    verb = "would download" if result["dry_run"] else "downloaded"
    for f in files:
        extra = f", resumed at byte {f['resumed_from']}" if f.get("resumed_from") else ""
        extra += ", already complete" if f.get("skipped") else ""
        extra += ", restarted: changed at the source" if f.get("restarted") else ""
        click.echo(f"{verb} {f['datastore_path']} -> {f.get('path', result['disk_dir'])}"
                   f"{extra}")
    click.echo(f"{result['vm']}: {len(files)} file(s); power action: {result['action']}")
