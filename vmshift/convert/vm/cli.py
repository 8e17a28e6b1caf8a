"""`vmshift convert vm`: the command line of the conversion pipeline."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from vmshift.cliutil import (
    allow_emulated_option,
    dry_run_option,
    json_option,
    virt_type_option,
    virtio_win_option,
)
from vmshift.confine import allow_device_option
from vmshift.convert.maps import network_map_option, storage_map_option
from vmshift.errors import BadInput
from vmshift.inspect.vsphere_source import vsphere_args_given, vsphere_options
from vmshift.output import emit_json, notice

SOURCES = "--vmx FILE, --disk IMAGE..., --ova FILE or --vsphere"


def _source_options(f: Any) -> Any:
    """`inspect --vsphere`'s options, with what --vsphere and --disk-dir mean here."""
    f = vsphere_options(f)
    for param in f.__click_params__:
        if param.name == "vsphere":
            param.help = ("Convert a VM of vCenter/ESXi (--url, --user, --vm); it must be "
                          "powered off. Its disks are downloaded first.")
        elif param.name == "download_dir":
            param.help = ("With --vsphere: download the disks here and keep them (a rerun "
                          "resumes, or skips what is complete); else they go to the run's "
                          "work directory and are removed with it.")
    return f


@click.command("vm")
@click.option("--vmx", "vmx", type=click.Path(path_type=Path),
              help="The VM's VMX file (its disks beside it, or through --storage-map).")
@click.option("--disk", "disks", multiple=True, metavar="IMAGE",
              help="A bare disk image (repeat for several); the VM's shape comes from "
                   "inspection and --memory, --vcpus, --mac.")
@click.option("--memory", type=click.IntRange(min=64), metavar="MiB",
              help="With --disk: memory in MiB (default 2048).")
@click.option("--vcpus", type=click.IntRange(min=1), help="With --disk: vCPUs (default 2).")
@click.option("--mac", "macs", multiple=True, help="With --disk: a NIC with this MAC "
                                                   "(repeat for several).")
@click.option("--ova", "ova", type=click.Path(path_type=Path), metavar="FILE",
              help="An OVA (its manifest checked first) or a bare OVF beside its disks.")
@_source_options
@click.option("--output", "output_kind", type=click.Choice(["local", "libvirt"]),
              required=True, help="local: NAME.xml and the disks in --output-dir; "
                                  "libvirt: volumes in --pool, domain defined on --connect.")
@click.option("--output-dir", type=click.Path(path_type=Path), help="With --output local.")
@click.option("--connect", "uri", metavar="URI", help="With --output libvirt: the host.")
@click.option("--pool", help="With --output libvirt: the storage pool for the disks.")
@click.option("--name", help="The new domain's name (default: the source's).")
@click.option("--format", "out_format", type=click.Choice(["qcow2", "raw"]), default="qcow2",
              show_default=True, help="The converted disks' format.")
@network_map_option("Where the NICs' source networks go.")
@storage_map_option("Where the disks' datastores and directories are on this host.")
@click.option("--default-network", default="default", show_default=True,
              help="libvirt network for NICs the network map does not name.")
@virt_type_option
@click.option("--start", is_flag=True, help="Start the domain (--output libvirt).")
@click.option("--verify-boot", is_flag=True, help="Start it and wait for the guest to report "
              "its interfaces, addresses and failed units on the serial console.")
@click.option("--boot-timeout", type=click.FloatRange(min=10), default=900, show_default=True,
              metavar="S", help="With --verify-boot: seconds to wait for the report.")
@click.option("--keep-vmware-tools", is_flag=True, help="Leave VMware Tools installed.")
@virtio_win_option
@allow_emulated_option
@allow_device_option
@click.option("--force", is_flag=True, help="Replace an existing output (files, volumes, "
                                            "domain of the same name).")
@dry_run_option
@json_option
def convert_vm(**kw: Any) -> None:
    """Convert a VMware VM into a KVM VM that boots with its network.

    One appliance launch inspects the guest, runs the pre-flight rules (exit 3
    on a blocker) and changes the guest for KVM in a copy-on-write overlay;
    the disk engine copies the overlays out, verified; the domain XML is
    written or defined. The source is only ever read. A failed or interrupted
    run leaves no domain, no volume and no partial file.
    """
    from vmshift.convert.vm import pipeline

    with ExitStack() as stack:  # a vSphere session stays open until its disks are down
        req = _request(kw, stack)
        result = _run(pipeline, req)
    _report(req, result)


def _request(kw: dict[str, Any], stack: ExitStack) -> Any:
    from vmshift.convert.vm import pipeline

    given = [flag for flag, key in (("--vmx", "vmx"), ("--disk", "disks"), ("--ova", "ova"),
                                    ("--vsphere", "vsphere")) if kw[key]]
    if len(given) != 1:
        also = f" (got {', '.join(given)})" if given else ""
        raise BadInput(f"convert vm: give exactly one source: {SOURCES}{also}")
    vsphere_args_given((), kw)  # --url, --vm... without --vsphere: usage error
    shape = [f for f, key in (("--memory", "memory"), ("--vcpus", "vcpus"), ("--mac", "macs"))
             if kw[key]]
    if shape and not kw["disks"]:
        # the other sources define the VM's shape themselves; silently ignoring would lie
        raise BadInput(f"{', '.join(shape)}: only with --disk (the source defines it)")
    local = kw["output_kind"] == "local"
    if local and (kw["output_dir"] is None or kw["uri"] or kw["pool"]):
        raise BadInput("--output local: give --output-dir DIR (and no --connect/--pool)")
    if not local and (not kw["uri"] or not kw["pool"] or kw["output_dir"]):
        raise BadInput("--output libvirt: give --connect URI and --pool POOL")
    if local and (kw["start"] or kw["verify_boot"]):
        raise BadInput("--start/--verify-boot: only with --output libvirt")
    src = _read_source(kw, stack)
    return pipeline.Request(
        source=src, name=kw["name"] or src.vm.name or "converted", output=kw["output_kind"],
        output_dir=kw["output_dir"], uri=kw["uri"], pool=kw["pool"],
        out_format=kw["out_format"], network_map=kw["network_map"],
        default_network=kw["default_network"], virt_type=kw["virt_type"],
        start=kw["start"], verify_boot=kw["verify_boot"], boot_timeout=kw["boot_timeout"],
        keep_vmware_tools=kw["keep_vmware_tools"], virtio_win=kw["virtio_win"],
        allow_emulated=kw["allow_emulated"], allow_devices=kw["allow_devices"],
        dry_run=kw["dry_run"],
        force=kw["force"], json_mode=kw["json_mode"])


def _read_source(kw: dict[str, Any], stack: ExitStack) -> Any:
    from vmshift.convert.vm import source

    if kw["vmx"]:
        return source.from_vmx(kw["vmx"], kw["storage_map"], kw["allow_devices"])
    if kw["ova"]:
        return source.from_ova(kw["ova"], kw["storage_map"], kw["allow_devices"],
                               kw["json_mode"])
    if kw["vsphere"]:
        from vmshift.convert.vm.vsphere import from_vsphere

        return from_vsphere(kw, stack, kw["json_mode"])
    return source.from_disks(list(kw["disks"]), name=kw["name"], memory_mib=kw["memory"],
                             vcpus=kw["vcpus"], macs=kw["macs"],
                             allow_devices=kw["allow_devices"])


def _run(pipeline: Any, req: Any) -> Any:
    from vmshift.output import Progress

    with Progress("convert vm", None, json_mode=req.json_mode, unit="step") as bar:
        count = {"n": 0}

        def step(what: str) -> None:
            count["n"] += 1
            bar.update_to(count["n"], step=what)

        return pipeline.run(req, step)


def _report(req: Any, result: Any) -> None:
    doc = {"name": req.name, "source": req.source.ref, "source_kind": req.source.kind,
           "source_disk_dir": str(req.source.kept_dir) if req.source.kept_dir else None,
           "output": req.output, "output_dir": str(req.output_dir) if req.output_dir else None,
           "connect": req.uri, "pool": req.pool, "format": req.out_format,
           "dry_run": req.dry_run, **result.doc, "stages": result.stages,
           "total_seconds": round(sum(s["seconds"] for s in result.stages), 2),
           "outcome": "ok"}
    if req.json_mode:
        emit_json("convert_vm", doc)
        return
    from vmshift.convert.vm import report

    for note in doc.get("notes", []):
        notice(f"note: {note}", False)
    click.echo(report.render(doc))
